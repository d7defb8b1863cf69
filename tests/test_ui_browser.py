"""The viewer in a real browser: `ponder ui` started on a free loopback port over a real
SQLite file, driven by Playwright with Debian's Chromium (headless, no browser download).
Screenshots go to a tmp dir (and to $PONDER_UI_SCREENSHOTS when set, for the docs)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from ponder.store import TraceStore
from ponder.usage import spend
from ui_traces import XSS, Writer, bulk_store, refine_trace, vote_trace

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
ARGS += ["--no-first-run"]
STRATEGIES = ["self-consistency:n=4", "best-of-n:n=4", "refine", "auto"]
# (i, strategy, status) of the 60 older traces under the three the tests look at
FILLERS = [(i, STRATEGIES[i % 4], "error" if i % 10 == 7 else "done") for i in range(60)]
PAYLOAD = '<script>window.__pwned = 1</script> then <img src=x onerror="window.__pwned = 2"> end'


@dataclass
class Viewer:
    url: str
    path: Path
    store: TraceStore  # the test's writer into the viewer's store
    shots: Path
    ids: dict[str, str] = field(default_factory=dict)

    def shot(self, page: Page, name: str, *, full_page: bool = True) -> Path:
        target = self.shots / f"{name}.png"
        page.screenshot(path=str(target), full_page=full_page)
        assert target.stat().st_size > 10_000  # a blank page compresses to much less
        docs = os.environ.get("PONDER_UI_SCREENSHOTS")
        if docs:
            Path(docs).mkdir(parents=True, exist_ok=True)
            shutil.copy(target, Path(docs) / target.name)
        return target


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    root = tmp_path_factory.mktemp("viewer")
    path = root / "traces.sqlite"
    store = TraceStore(path)
    old = time.time() - 3600
    for i, strategy, status in FILLERS:  # every 3rd answers wrong
        answers = [str(i + 4)] if i % 3 == 0 else [str(i + 3), str(i + 3), str(i + 4)]
        question = f"What is {i} + 3?"
        vote_trace(
            store, question, answers, gold=str(i + 3), created_at=old + i, strategy=strategy, status=status
        )
    ids = {
        "vote": vote_trace(store, "What is 6 * 7?", ["42", "41", "42"], gold="42", greedy=1).id,
        "refine": refine_trace(store).id,
        "xss": vote_trace(store, PAYLOAD, [XSS[:20], "2"], texts=[PAYLOAD, XSS]).id,
    }
    try:
        with _ponder_ui(path, root / "home") as url:
            yield Viewer(url, path, store, tmp_path_factory.mktemp("screens"), ids)
    finally:
        store.close()


@contextlib.contextmanager
def _ponder_ui(path: Path, home: Path) -> Iterator[str]:
    """`ponder ui` over `path` on a free port, as a user starts it; yields its URL."""
    env = {**os.environ, "PONDER_HOME": str(home)}
    command = [sys.executable, "-m", "ponder", "ui", "--store", str(path), "--port", "0"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield _wait_until_up(server)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_until_up(server: subprocess.Popen[str]) -> str:
    """The URL `ponder ui` prints once it holds its port (0: a free one), when it answers."""
    assert server.stdout is not None
    said = server.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+", said)
    assert found, f"ponder ui said {said!r}{server.stdout.read() if server.poll() is not None else ''}"
    url = found.group(0)
    for _ in range(300):
        if server.poll() is not None:
            raise AssertionError(f"ponder ui exited: {server.stdout.read() if server.stdout else ''}")
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("ponder ui did not answer within 30 s")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page that fails the test on a script error or any dialog."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_dialog(dialog: Dialog) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    opened.on("dialog", on_dialog)
    yield opened
    context.close()
    assert problems == []


def test_list_filter_open_expand_tally_chart(viewer: Viewer, page: Page) -> None:
    page.goto(viewer.url + "/")
    expect(page.locator("#count")).to_contain_text("1–50 of 63 traces · page 1 of 2")
    expect(page.locator("tr.trace-row")).to_have_count(50)
    viewer.shot(page, "list", full_page=False)

    page.fill("#f-text", "6 * 7")
    page.click("#f-go")
    expect(page.locator("tr.trace-row")).to_have_count(1)
    row = page.locator("tr.trace-row")
    expect(row).to_contain_text("✓ correct")
    expect(row).to_contain_text("20 / 23 / 10")  # prompt / reasoning / answer tokens
    row.locator("a.question").click()

    expect(page.locator("#question")).to_have_text("What is 6 * 7?")
    tally = page.locator("tr.tally-row")
    expect(tally).to_have_count(2)
    expect(tally.first).to_contain_text("42")
    expect(tally.first.locator("td.num")).to_have_text("2")
    expect(page.locator("svg.burn path.tokens")).to_have_count(1)
    steps = page.locator("svg.burn path.tokens").get_attribute("d") or ""
    assert steps.count("V") == 3  # one step down per sample
    expect(page.locator("#chart .legend")).to_contain_text("33 of 2,000 generated")

    sample = page.locator("details.node[data-kind=sample]").nth(1)
    expect(sample.locator(".tag")).to_have_text("greedy")
    text = sample.locator("pre.text")
    expect(text).to_be_hidden()
    sample.locator("summary").first.click()
    expect(text).to_be_visible()
    expect(text).to_have_text("Let me think step 1. The answer is 41.")
    sample.locator("details.prompt summary").click()
    expect(sample.locator("details.prompt pre")).to_contain_text("[user]\nWhat is 6 * 7?")

    page.select_option("#cmp-b", index=2)
    sides = page.locator(".sides pre")
    expect(sides.nth(0)).to_have_text("Let me think step 0. The answer is 42.")
    expect(sides.nth(1)).to_have_text("Let me think step 2. The answer is 42.")
    viewer.shot(page, "trace")


def test_filter_by_strategy_and_status_and_page(viewer: Viewer, page: Page) -> None:
    page.goto(viewer.url + "/")
    page.select_option("#f-strategy", "refine")
    refine = 1 + sum(s == "refine" for _, s, _ in FILLERS)
    expect(page.locator("#count")).to_contain_text(f"1–{refine} of {refine} traces")
    for strategy in page.locator("tr.trace-row td:nth-child(3)").all_inner_texts():
        assert strategy == "refine"
    page.select_option("#f-strategy", "auto")
    page.select_option("#f-status", "error")
    expect(page.locator("tr.trace-row")).to_have_count(sum(f[1:] == ("auto", "error") for f in FILLERS))
    page.select_option("#f-strategy", "")
    expect(page.locator("tr.trace-row")).to_have_count(sum(f[2] == "error" for f in FILLERS))
    page.fill("#f-text", "no such question")
    page.click("#f-go")
    expect(page.locator("#empty")).to_have_text("No traces match.")
    page.fill("#f-text", "")
    page.select_option("#f-status", "")
    page.click("#next")
    expect(page.locator("#count")).to_contain_text("51–63 of 63 traces · page 2 of 2")
    expect(page.locator("tr.trace-row").last).to_contain_text("What is 0 + 3?")
    assert "page=2" in page.url


def test_paging_to_the_end_of_100k_traces(page: Page, tmp_path: Path) -> None:
    bulk_store(tmp_path / "big.sqlite", 100_000)
    with _ponder_ui(tmp_path / "big.sqlite", tmp_path / "home") as url:
        page.goto(url + "/")
        expect(page.locator("#count")).to_have_text("1–50 of 100,000 traces · page 1 of 2,000")
        page.click("#last")
        expect(page.locator("#count")).to_have_text("99,951–100,000 of 100,000 traces · page 2,000 of 2,000")
        expect(page.locator("a.question").last).to_have_text("question 0")
        page.click("#prev")
        expect(page.locator("a.question").first).to_have_text("question 99")
        page.fill("#f-text", "question 9999")
        page.click("#f-go")  # 9999 and 99990..99999
        expect(page.locator("#count")).to_have_text("1–11 of 11 traces · page 1 of 1")


def test_refine_shows_verdict_feedback_and_decision(viewer: Viewer, page: Page) -> None:
    page.goto(f"{viewer.url}/#/trace/{viewer.ids['refine']}")
    page.click("#expand-all")
    failed = page.locator("details.node[data-kind=verdict]").first
    expect(failed.locator("summary .bad")).to_have_text("failed")
    expect(failed.locator("pre.text")).to_have_text("the sum is wrong: 2 + 2 = 4")
    expect(page.locator("details.node[data-kind=decision] summary")).to_contain_text("→ refine")
    expect(page.locator("details.node[data-kind=decision] table.signals")).to_contain_text("mean_logprob")
    expect(page.locator("#tally")).to_contain_text("No vote in this trace.")
    expect(page.locator("#chart .legend")).to_contain_text("of 60.0 s")
    page.click("#collapse-all")
    expect(failed.locator("pre.text")).to_be_hidden()


def test_script_in_a_thought_renders_as_text(viewer: Viewer, page: Page) -> None:
    page.goto(viewer.url + "/#/?text=" + "%3Cscript%3E")
    expect(page.locator("a.question")).to_have_text(PAYLOAD)  # shorter than the list's cut
    page.locator("a.question").click()
    expect(page.locator("#question")).to_have_text(PAYLOAD)
    page.click("#expand-all")
    expect(page.locator("details.node[data-kind=sample] pre.text").first).to_have_text(PAYLOAD)
    expect(page.locator(".sides pre").nth(1)).to_have_text(XSS)
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 1  # the viewer's own app.js
    assert page.evaluate("window.__pwned") is None


def test_live_think_updates_the_page_without_reload(viewer: Viewer, page: Page) -> None:
    w = Writer(viewer.store, "live question", budget={"tokens": 100, "seconds": 120.0})
    viewer.store.add_prompt(w.id, "p", {"prompt": "Q: live question\nA:", "n": 2})
    first = w.add("sample", "Thinking", prompt_tokens=8, prompt="p", open=True)
    page.goto(f"{viewer.url}/#/trace/{w.id}")
    expect(page.locator("#summary .status")).to_have_text("running")
    expect(page.locator("details.node[data-kind=sample]")).to_have_count(1)
    expect(page.locator("details.node[data-kind=sample] .tag.live")).to_have_text("writing…")
    page.evaluate("window.__same_page = true")
    page.locator("details.node[data-kind=sample] > summary").click()  # open: must stay open
    page.locator("details.node[data-kind=sample] details.prompt > summary").click()
    expect(page.locator("details.prompt pre")).to_contain_text("Q: live question")

    w.grow(first, text="Thinking about it: 7", completion_tokens=20, seconds=1.0, meta={"prompt": "p"})
    expect(page.locator("details.node[data-kind=sample] pre.text")).to_have_text("Thinking about it: 7")
    expect(page.locator("details.node[data-kind=sample] .tag.live")).to_have_count(0)
    w.add("sample", "Second thought: 7", answer="7", completion_tokens=30, seconds=1.5)
    expect(page.locator("details.node[data-kind=sample]")).to_have_count(2)
    expect(page.locator("#chart .legend")).to_contain_text("50 of 100 generated")
    expect(page.locator("#summary .facts")).to_contain_text("8 / 50 / – so far")
    w.add("vote", "7: 2", answer="7", totals={"7": 2.0})
    expect(page.locator("tr.tally-row")).to_have_count(1)
    w.finish("7", shown=30)
    expect(page.locator("#summary .status")).to_have_text("done")
    expect(page.locator("details.node[data-kind=answer]")).to_have_count(1)
    assert page.evaluate("window.__same_page") is True
    assert page.locator("details.node[data-kind=sample]").first.evaluate("d => d.open") is True
    expect(page.locator("details.prompt pre")).to_be_visible()  # still open after the node grew


def test_usage_page_shows_the_store_spend(viewer: Viewer, page: Page) -> None:
    page.goto(viewer.url + "/#/usage?since=&by=strategy")
    total = spend(viewer.path).total
    row = page.locator("table.usage tr.total")
    expect(row).to_contain_text(f"{total.traces:,}")
    expect(row).to_contain_text(f"{total.prompt_tokens:,}")
    expect(row).to_contain_text(f"{total.reasoning_tokens:,}")
    expect(page.locator("table.usage tbody tr")).to_have_count(5)  # four strategies and the total
    viewer.shot(page, "usage")
    page.select_option("#u-by", "model")
    expect(page.locator("table.usage tbody tr").first).to_contain_text("smollm2")


@pytest.mark.model
def test_live_think_with_the_bundled_model(viewer: Viewer, page: Page, tmp_path: Path) -> None:
    """A real `ponder think` in another process writes to the viewer's store while the page
    watches: its samples appear on the open page as the model finishes them."""
    env = {**os.environ, "PONDER_HOME": str(tmp_path), "PONDER_THREADS": "1"}
    question = "What is 17 + 25?"
    command = [sys.executable, "-m", "ponder", "think", question, "-s", "self-consistency", "-n", "6"]
    think = subprocess.Popen(
        [*command, "--store", str(viewer.path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        reader = TraceStore(viewer.path, readonly=True)
        trace_id = None
        for _ in range(1200):
            found = reader.list_traces(1, text=question)
            if found:
                trace_id = found[0].id
                break
            time.sleep(0.1)
        reader.close()
        assert trace_id is not None, "the think never started a trace"
        page.goto(f"{viewer.url}/#/trace/{trace_id}")
        expect(page.locator("#question")).to_have_text(question)
        at_load = page.locator("details.node").count()
        page.evaluate("window.__same_page = true")
        expect(page.locator("details.node[data-kind=answer]")).to_have_count(1, timeout=300_000)
        expect(page.locator("#summary .status")).to_have_text("done")
        assert page.locator("details.node").count() > at_load
        assert page.evaluate("window.__same_page") is True
        page.click("#expand-all")
        viewer.shot(page, "trace-model")
    finally:
        think.wait(timeout=300)
    assert think.returncode == 0
