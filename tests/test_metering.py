"""One meter for every token: a request's usage is the sum of its trace's node tokens, for
every strategy and every model-based verifier; samples are nodes from their first text and
keep it through a cancel or a kill; each prompt as sent is on the trace; budgets stop
within their documented overshoot and never leave nodes for samples never generated.

Scripted engines check the bookkeeping exactly; the real bundled model (marked `model`)
checks that a real engine's counts add up the same way, and a `kill -9` of the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fakes import ScriptedEngine, prompt_words
from ponder import athink
from ponder.budget import Budget, Meter
from ponder.engines.base import (
    Completion,
    Engine,
    EngineError,
    GenerationRequest,
    OnCompletion,
    OnDelta,
    TokenLogprob,
)
from ponder.generation import WAVE
from ponder.problem import Problem
from ponder.store import TraceStore
from ponder.strategies import REGISTRY
from ponder.think import Answer
from ponder.trace import NodeRecord, TraceRecord
from ponder.verifiers.base import Verifier
from ponder.verifiers.model import Judge, Reward

SOLUTION = "Step 1: 2 + 2 is 4.\n\nAnswer: 4"


def reply(req: GenerationRequest, i: int) -> str:
    """What a cooperative model says to each kind of request ponder sends."""
    asked = " ".join(m["content"] for m in req.messages or []) + (req.prompt or "")
    if "Is this answer correct?" in asked:
        return "Yes"
    if "Score: N" in asked:
        return f"The steps are right and the sum is checked. Score: {7 + i % 3}"
    if "reply with the single word CORRECT" in asked:
        return "CORRECT"
    if req.prefill:  # the next step of a partial solution, or a continuation
        return "Answer: 4" if i % 2 else "so 2 + 2 = 4 here"
    return SOLUTION


class StreamingEngine(ScriptedEngine):
    """A scripted engine that writes each sample word by word (one delta and one charged
    token per word, yielding to the loop in between), like a real one decoding."""

    def __init__(self, script: object = reply, *, pause: asyncio.Event | None = None, after: int = 10**9):
        super().__init__(script)  # type: ignore[arg-type]
        self.pause = pause
        self.after = after  # words written before waiting on `pause`
        self.max_n = 0

    async def generate(
        self,
        requests: Sequence[GenerationRequest],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
        on_delta: OnDelta | None = None,
    ) -> list[list[Completion]]:
        out: list[list[Completion]] = []
        for r, req in enumerate(requests):
            self.calls.append(req)
            self.max_n = max(self.max_n, req.n)
            prompt_tokens = prompt_words(req)
            if meter is not None:
                meter.charge(prompt_tokens=prompt_tokens)
            group: list[Completion] = []
            for s in range(req.n):
                text = self.script(req, self._count)  # type: ignore[operator]
                self._count += 1
                written: list[str] = []
                finish = "stop"
                for word in text.split():
                    if meter is not None and meter.note_limit():
                        finish = "budget"
                        break
                    if len(written) >= req.max_tokens:
                        finish = "length"
                        break
                    if len(written) == self.after and self.pause is not None:
                        await self.pause.wait()
                    written.append(word)
                    if meter is not None:
                        meter.charge(completion_tokens=1)
                    if on_delta is not None:
                        on_delta(r, s, (" " if len(written) > 1 else "") + word)
                    await asyncio.sleep(0)
                lps = (
                    [TokenLogprob(w, -0.1, {w: -0.1, "No": -3.0}) for w in written] if req.logprobs else None
                )
                c = Completion(" ".join(written), finish, prompt_tokens, len(written), logprobs=lps)
                if on_completion is not None:
                    on_completion(r, s, c)
                group.append(c)
            out.append(group)
        return out


async def traced(tmp_path: Path, strategy: str, engine: Engine, **options: Any) -> tuple[Answer, TraceRecord]:
    """Think with a SQLite store in `tmp_path`; the answer and its trace as stored."""
    store = TraceStore(tmp_path / "traces.sqlite")
    answer = await athink(
        options.pop("question", "What is 2 + 2?"), strategy=strategy, engine=engine, store=store, **options
    )
    trace = store.get_trace(answer.trace_id)
    assert trace is not None
    return answer, trace


def assert_adds_up(answer: Answer, trace: TraceRecord, *, exact_reports: bool = True) -> None:
    """Usage is the sum of the nodes' tokens; with `exact_reports`, every token is where
    the engine reported it (nothing had to be put on a node as unattributed)."""
    assert answer.usage.completion_tokens == sum(n.completion_tokens for n in trace.nodes)
    assert answer.usage.prompt_tokens == sum(n.prompt_tokens for n in trace.nodes)
    assert all(not n.meta.get("open") for n in trace.nodes), "a node was left open"
    if exact_reports:
        assert not [n.meta["unattributed"] for n in trace.nodes if "unattributed" in n.meta]


# --- every strategy, every model-based verifier ------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("engine_type", [ScriptedEngine, StreamingEngine])
async def test_usage_equals_the_node_tokens_for_every_strategy(
    name: str, engine_type: type, tmp_path: Path
) -> None:
    answer, trace = await traced(tmp_path, name, engine_type(reply), max_tokens=24)
    assert answer.usage.completion_tokens > 0
    assert_adds_up(answer, trace)
    generated = [n for n in trace.nodes if "prompt" in n.meta]
    assert generated and all(n.meta["prompt"] in trace.prompts for n in generated)


@pytest.mark.parametrize(
    "spec", ["best-of-n:n=3", "refine:max_rounds=2", "beam-search:width=2,expand=2,max_steps=2"]
)
@pytest.mark.parametrize("verifier_type", [Judge, Reward])
async def test_model_verifiers_generate_on_the_requests_meter(
    spec: str, verifier_type: type, tmp_path: Path
) -> None:
    engine = StreamingEngine()
    verifier: Verifier = verifier_type(engine)
    answer, trace = await traced(tmp_path, spec, engine, verifier=verifier, max_tokens=24)
    assert_adds_up(answer, trace)
    by_id = {n.id: n for n in trace.nodes}
    spoken = [n for n in trace.nodes if n.kind == "critique" and n.meta.get("verifier") == verifier.name]
    # the verifier's own words are nodes under its verdicts, with the tokens they cost
    assert spoken and all(by_id[n.parent_id or ""].kind == "verdict" for n in spoken)
    assert all(n.completion_tokens > 0 and n.prompt_tokens > 0 for n in spoken)
    judged = sum(n.completion_tokens for n in spoken)
    assert answer.usage.completion_tokens >= judged + sum(
        n.completion_tokens for n in trace.nodes if n.kind == "sample"
    )


async def test_a_judge_outside_any_request_still_answers() -> None:
    verdict = await Judge(ScriptedEngine(["Fine. Score: 9"])).verify(Problem("q?"), "4")
    assert verdict.passed and verdict.score == pytest.approx(8 / 9)


# --- partial text: nodes grow, survive a cancel, and are written throttled -----------------------


async def test_a_sample_is_a_node_from_its_first_word_and_a_cancel_keeps_its_text(tmp_path: Path) -> None:
    pause = asyncio.Event()
    engine = StreamingEngine(lambda req, i: "one two three four five six seven eight", pause=pause, after=3)
    store = TraceStore(tmp_path / "traces.sqlite")
    heard: list[tuple[str, str, bool]] = []
    task = asyncio.create_task(
        athink(
            "q?",
            strategy="self-consistency:n=2",
            engine=engine,
            store=store,
            trace_id="c0ffee",
            on_node=lambda n: heard.append((n.id, n.text, bool(n.meta.get("open")))),
        )
    )
    while engine._count == 0 or not any(text == "one two three" for _, text, _ in heard):
        await asyncio.sleep(0.01)
    live = [n for n in store.get_trace("c0ffee").nodes if n.kind == "sample"]
    assert len(live) == 1 and live[0].meta["open"] is True and live[0].text.startswith("one")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    trace = store.get_trace("c0ffee")
    assert trace is not None and trace.status == "cancelled"
    (sample,) = [n for n in trace.nodes if n.kind == "sample"]
    assert sample.text == "one two three" and sample.meta["finish_reason"] == "cancelled"
    assert sample.completion_tokens == 3 == trace.usage["completion_tokens"]
    assert sample.prompt_tokens == trace.usage["prompt_tokens"]
    # listeners heard it added, grow word by word, then close
    texts = [text for node_id, text, _ in heard if node_id == sample.id]
    assert texts[:3] == ["one", "one two", "one two three"] and not heard[-1][2]


class FailingEngine(StreamingEngine):
    """Writes three words of a sample, then the connection drops."""

    async def generate(self, requests, meter=None, on_completion=None, on_delta=None):  # type: ignore[no-untyped-def]
        def drop(r: int, s: int, text: str) -> None:
            if on_delta is not None:
                on_delta(r, s, text)
            if meter is not None and meter.completion_tokens >= 3:
                raise EngineError("connection dropped", transient=True)

        return await super().generate(requests, meter, on_completion, drop)


async def test_an_engine_error_keeps_the_partial_text_and_the_tokens(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.sqlite")
    with pytest.raises(EngineError):
        await athink("q?", strategy="direct", engine=FailingEngine(), store=store, trace_id="beef")
    trace = store.get_trace("beef")
    assert trace is not None and trace.status == "error" and "connection dropped" in (trace.error or "")
    (sample,) = [n for n in trace.nodes if n.kind == "sample"]
    assert sample.text == "Step 1: 2" and sample.meta["finish_reason"] == "error"
    assert sample.completion_tokens == 3 == trace.usage["completion_tokens"] and not sample.meta["open"]  # type: ignore[index]


class CountingStore(TraceStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.updates = 0

    def update_node(self, node: NodeRecord) -> None:
        self.updates += 1
        super().update_node(node)


async def test_growing_text_is_written_throttled_and_once_more_when_it_closes(tmp_path: Path) -> None:
    from ponder.context import Context
    from ponder.trace import Trace

    store = CountingStore(tmp_path / "t.sqlite")
    store.begin_trace("ab", question="q", strategy="x", model="m", budget={}, created_at=0.0)
    trace = Trace("ab", store=store, write_every=3600)  # no periodic write falls due in this test
    ctx = Context(StreamingEngine(lambda req, i: " ".join(["word"] * 200)), Meter(), trace)
    await ctx.complete([GenerationRequest(prompt="q", max_tokens=500)])
    assert store.updates == 1  # 200 deltas, one write: the close
    (node,) = store.get_trace("ab").nodes
    assert node.text == " ".join(["word"] * 200) and node.completion_tokens == 200 and not node.meta["open"]
    eager = Trace("ab", store=store, write_every=0)  # every change falls due at once
    store.updates = 0
    engine = StreamingEngine(lambda req, i: "a b c")
    await Context(engine, Meter(), eager).complete([GenerationRequest(prompt="q")])
    assert store.updates == 2 + 1  # the first word comes with the add, then two words and the close


# --- prompts on the trace -----------------------------------------------------------------------


class RenderingEngine(StreamingEngine):
    def render(self, request: GenerationRequest) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in request.messages or []) + request.prefill


async def test_each_distinct_request_is_stored_once_and_named_by_its_nodes(tmp_path: Path) -> None:
    _, trace = await traced(tmp_path, "self-consistency:n=3", RenderingEngine(), seed=5)
    samples = [n for n in trace.nodes if n.kind == "sample"]
    assert len(samples) == 3 and len({n.meta["prompt"] for n in samples}) == 1
    (payload,) = trace.prompts.values()
    assert payload["messages"][-1]["content"].endswith("What is 2 + 2?")
    assert payload["rendered"].startswith("<system>") and "What is 2 + 2?" in payload["rendered"]
    assert {k: payload[k] for k in ("n", "temperature", "top_p", "seed", "max_tokens")} == {
        "n": 3,
        "temperature": 0.8,
        "top_p": 0.95,
        "seed": 5,
        "max_tokens": 512,
    }


# --- budgets: no nodes for samples never generated, bounded overshoot --------------------------


class SlowEngine(StreamingEngine):
    """Each word takes a millisecond: a deadline falls mid-call."""

    async def generate(self, requests, meter=None, on_completion=None, on_delta=None):
        def slow(r: int, s: int, text: str) -> None:
            time.sleep(0.001)
            if on_delta is not None:
                on_delta(r, s, text)

        return await super().generate(requests, meter, on_completion, slow)


async def test_a_huge_n_under_a_deadline_writes_only_what_was_generated(tmp_path: Path) -> None:
    engine = SlowEngine()
    answer, trace = await traced(tmp_path, "self-consistency:n=100000", engine, budget="0.3s")
    assert answer.stopped_by == "seconds"
    samples = [n for n in trace.nodes if n.kind == "sample"]
    assert samples and all(n.text and n.completion_tokens for n in samples)
    assert engine.max_n <= WAVE and len(samples) < 100000
    assert_adds_up(answer, trace)


async def test_a_token_budget_overshoots_by_at_most_one_sample_and_a_sample_by_nothing(
    tmp_path: Path,
) -> None:
    words = " ".join(["w"] * 44) + " Answer: 4"  # 46 tokens a sample
    answer, trace = await traced(
        tmp_path, "self-consistency:n=1000", ScriptedEngine([words]), budget="300 tokens"
    )
    assert answer.stopped_by == "tokens"
    # the scripted engine charges a sample at once: at most one sample past the limit
    assert 300 <= answer.usage.completion_tokens < 300 + 46
    assert len([n for n in trace.nodes if n.kind == "sample"]) == 7
    assert_adds_up(answer, trace)
    # one sample longer than the whole budget is cut at the budget, and says so
    long, trace = await traced(
        tmp_path, "direct", ScriptedEngine([" ".join(["w"] * 500)]), budget="300 tokens"
    )
    assert long.usage.completion_tokens == 300
    (sample,) = [n for n in trace.nodes if n.kind == "sample"]
    assert sample.meta["finish_reason"] == "budget"


async def test_a_samples_budget_is_exact_and_continuations_are_not_samples(tmp_path: Path) -> None:
    answer, trace = await traced(
        tmp_path, "self-consistency:n=50", ScriptedEngine([SOLUTION]), budget="5 samples"
    )
    assert answer.stopped_by == "samples"
    assert len([n for n in trace.nodes if n.kind == "sample"]) == 5
    # budget forcing's "Wait" continuations extend its one sample: a 1-sample budget allows them
    forced, trace = await traced(
        tmp_path,
        "budget-forcing:min_tokens=20,max_waits=2",
        ScriptedEngine(["Answer: 4"]),
        budget="1 samples",
    )
    assert [n.kind for n in trace.nodes].count("step") == 3 and forced.answer == "4"


def test_the_meter_query_has_no_side_effect_and_the_note_is_explicit() -> None:
    meter = Meter(Budget(tokens=10))
    tab = meter.tab()
    tab.charge(completion_tokens=12, prompt_tokens=3)
    assert (meter.completion_tokens, meter.prompt_tokens, tab.completion_tokens) == (12, 3, 12)
    other = meter.tab()
    assert other.completion_tokens == 0 and other.tokens_left() == -2  # limits are the meter's
    assert meter.limit_reached() == "tokens" and meter.stopped_by is None
    assert other.note_limit() == "tokens" and meter.stopped_by == "tokens"


# --- the real bundled model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Iterator[Engine]:
    from ponder.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(max_batch=8, n_ctx=4096, n_threads=1)
    yield engine
    engine.close()


@pytest.mark.model
@pytest.mark.parametrize(
    "spec, verifier, budget",
    [
        ("direct", None, "2000 tokens"),
        ("self-consistency:n=4", None, "2000 tokens"),
        ("refine:max_rounds=1", None, "2000 tokens"),
        ("best-of-n:n=2", "judge", "2000 tokens"),
        ("best-of-n:n=2", "reward", "2000 tokens"),
        ("beam-search:width=2,expand=2,max_steps=2,max_step_tokens=16", None, "2000 tokens"),
        ("budget-forcing:min_tokens=24,max_tokens=48", None, "2000 tokens"),
        ("deepconf:n=4,warmup=2,chunk=12", None, "2000 tokens"),
        ("self-consistency:n=8", None, "1.5s"),  # a deadline cuts samples mid-way
    ],
)
async def test_usage_equals_the_node_tokens_on_the_real_model(
    model: Engine, spec: str, verifier: str | None, budget: str, tmp_path: Path
) -> None:
    check: Verifier | None = {"judge": Judge(model, max_tokens=32), "reward": Reward(model), None: None}[
        verifier
    ]
    max_tokens = 32 if budget.endswith("tokens") else 512
    options = {"verifier": check, "max_tokens": max_tokens, "budget": budget, "question": "What is 12 * 3?"}
    answer, trace = await traced(tmp_path, spec, model, **options)
    assert answer.usage.completion_tokens > 0
    assert_adds_up(answer, trace)
    if verifier:
        assert any(n.kind == "critique" and n.completion_tokens for n in trace.nodes)


@pytest.mark.model
async def test_a_300_token_budget_overshoots_by_at_most_one_decode_step_on_the_real_model(
    model: Engine, tmp_path: Path
) -> None:
    story = "Write a long story about a cat."
    answer, trace = await traced(tmp_path, "self-consistency:n=8", model, question=story, budget="300 tokens")
    assert answer.stopped_by == "tokens"
    # one decode step decodes one token for each of the 8 samples at most
    assert 300 <= answer.usage.completion_tokens <= 300 + 8 - 1
    assert_adds_up(answer, trace)


@pytest.mark.model
def test_kill_9_keeps_the_partial_samples_and_the_trace_reads_interrupted(tmp_path: Path) -> None:
    env = {**os.environ, "PONDER_HOME": str(tmp_path), "PONDER_THREADS": "1"}
    env["PYTHONPATH"] = str(Path(__file__).parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ponder", "think", "Write a long story about a cat and a dog.",
         "-s", "self-consistency", "--samples", "16"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    path = tmp_path / "traces.sqlite"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:  # until some samples have text
            time.sleep(0.5)
            if path.exists() and _partial_samples(path) >= 2:
                time.sleep(1.0)
                break
        assert proc.poll() is None, "ponder finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = TraceStore(path)
    (trace,) = store.list_traces()
    full = store.get_trace(trace.id)
    assert full is not None and full.status == "interrupted"
    samples = [n for n in full.nodes if n.kind == "sample"]
    assert len([n for n in samples if n.text.strip()]) >= 2
    assert all(n.meta.get("prompt") in full.prompts for n in samples)


def _partial_samples(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            rows = db.execute("SELECT text, meta FROM nodes WHERE kind='sample'").fetchall()
        except sqlite3.Error:
            return 0
    return sum(1 for text, meta in rows if text.strip() and json.loads(meta).get("open"))


@pytest.mark.model
@pytest.mark.parametrize("spec, judged", [("self-consistency:n=3", False), ("best-of-n:n=2", True)])
async def test_usage_equals_the_node_tokens_behind_an_openai_compatible_server(
    spec: str, judged: bool, tmp_path: Path
) -> None:
    """Whether the HTTP engine charges a prompt once per request or once per sample (n
    fanned out as single requests), every token is on the node it was spent for."""
    from ponder.engines.openai import OpenAIEngine
    from servers import LlamaCppServer

    with LlamaCppServer(n_threads=1) as server:
        engine = OpenAIEngine(server.base_url)
        try:
            verifier = Judge(engine, max_tokens=24) if judged else None
            answer, trace = await traced(tmp_path, spec, engine, verifier=verifier, max_tokens=24)
        finally:
            await engine.aclose()
    assert_adds_up(answer, trace)
    samples = [n for n in trace.nodes if n.kind == "sample"]
    assert len(samples) >= 2 and samples[0].prompt_tokens > 0
