"""The viewer's JSON over a real SQLite file: paging a store of 100,000 traces, filters,
a trace with its prompts and nodes, live updates after a version, correctness against gold,
errors as 4xx with one message, only the package's own assets served."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ponder.store import TraceStore
from ponder.ui import create_ui_app, router
from ponder.ui.views import correct
from ui_traces import XSS, Writer, bulk_store, refine_trace, vote_trace


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("big") / "traces.sqlite"
    bulk_store(path, 100_000)
    store = TraceStore(path, readonly=True)
    with TestClient(create_ui_app(store)) as client:
        yield client
    store.close()


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[TestClient, TraceStore]]:
    writer = TraceStore(tmp_path / "traces.sqlite")
    reader = TraceStore(tmp_path / "traces.sqlite", readonly=True)
    with TestClient(create_ui_app(reader)) as client:
        yield client, writer
    reader.close()
    writer.close()


def test_paging_a_store_of_100k_traces(big: TestClient) -> None:
    first = big.get("/ui/api/traces", params={"limit": 50}).json()
    assert first["total"] == 100_000
    assert [r["question"] for r in first["rows"][:2]] == ["question 99999", "question 99998"]
    last = big.get("/ui/api/traces", params={"limit": 50, "offset": 99_950}).json()
    assert [r["question"] for r in last["rows"]] == [f"question {i}" for i in range(49, -1, -1)]
    beyond = big.get("/ui/api/traces", params={"offset": 100_000}).json()
    assert beyond["rows"] == [] and beyond["total"] == 100_000


def test_filters_count_what_they_list(big: TestClient) -> None:
    errors = big.get("/ui/api/traces", params={"status": "error", "limit": 3}).json()
    assert errors["total"] == 25_000 and all(r["status"] == "error" for r in errors["rows"])
    refine = big.get("/ui/api/traces", params={"strategy": "refine", "text": "question 1234"}).json()
    expected = [f"question {i}" for i in range(100_000) if "question 1234" in f"question {i}" and i % 4 == 2]
    assert sorted(r["question"] for r in refine["rows"]) == sorted(expected)
    assert refine["total"] == len(expected) == 3
    sc = big.get("/ui/api/traces", params={"strategy": "self-consistency", "limit": 1}).json()
    assert sc["total"] == 25_000 and sc["rows"][0]["strategy"] == "self-consistency:n=8"


def test_list_row_has_tokens_cost_and_correctness(small: tuple[TestClient, TraceStore]) -> None:
    client, store = small
    vote_trace(store, "What is 6 * 7?", ["42", "42", "41"], gold="42.0", usd=0.002)
    vote_trace(store, "What is 2 + 2?", ["5", "5"], gold="4")
    vote_trace(store, "No gold here", ["1"])
    Writer(store, "Still thinking", problem={"gold": "3"})
    rows = {r["question"]: r for r in client.get("/ui/api/traces").json()["rows"]}
    assert rows["Still thinking"]["correct"] is None and rows["Still thinking"]["tokens"] is None
    right = rows["What is 6 * 7?"]
    assert right["correct"] is True and right["answer"] == "42"
    assert right["tokens"] == {"prompt": 20, "reasoning": 10 + 11 + 12 - 10, "answer": 10}
    assert right["usd"] == 0.002 and right["status"] == "done"
    assert rows["What is 2 + 2?"]["correct"] is False
    assert rows["No gold here"]["correct"] is None


def test_correct_compares_canonical_and_mathematical_forms() -> None:
    assert correct({"gold": "1,000"}, "1000")
    assert correct({"gold": "\\frac{1}{2}", "format": "math"}, "0.5")
    assert correct({"gold": "Paris", "format": "text"}, "paris")
    assert not correct({"gold": "12", "format": "number"}, "13")
    assert correct({"gold": "12"}, None) is False
    assert correct({"gold": "x", "format": "code"}, "x") is None


def test_trace_detail_and_live_updates(small: tuple[TestClient, TraceStore]) -> None:
    client, store = small
    w = Writer(store, "live one", budget={"seconds": 30.0})
    store.add_prompt(w.id, "p1", {"prompt": "Q: live one\nA:", "n": 2})
    sample = w.add("sample", "The ans", prompt_tokens=5, prompt="p1", open=True)
    detail = client.get(f"/ui/api/traces/{w.id[:10]}").json()  # a unique prefix is enough
    assert detail["status"] == "running" and detail["prompts"]["p1"]["prompt"] == "Q: live one\nA:"
    assert [n["kind"] for n in detail["nodes"]] == ["root", "sample"]
    seen = detail["version"]

    w.grow(sample, text="The answer is 7", completion_tokens=5, meta={"prompt": "p1"})
    w.add("sample", "Second", completion_tokens=2)
    update = client.get(f"/ui/api/traces/{w.id}/updates", params={"after": seen}).json()
    assert [(n["kind"], n["text"]) for n in update["nodes"]] == [
        ("sample", "The answer is 7"),
        ("sample", "Second"),
    ]
    assert update["version"] > seen and update["status"] == "running"
    again = client.get(f"/ui/api/traces/{w.id}/updates", params={"after": update["version"]}).json()
    assert again["nodes"] == [] and again["version"] == update["version"]

    w.finish("7", shown=5)
    done = client.get(f"/ui/api/traces/{w.id}/updates", params={"after": update["version"]}).json()
    assert (
        done["status"] == "done"
        and done["answer"] == "7"
        and [n["kind"] for n in done["nodes"]] == ["answer"]
    )


def test_text_is_returned_verbatim(small: tuple[TestClient, TraceStore]) -> None:
    """The JSON carries model text as it is; escaping is the page's job (textContent)."""
    client, store = small
    w = vote_trace(store, XSS, ["<b>1</b>"], texts=[XSS])
    detail = client.get(f"/ui/api/traces/{w.id}").json()
    assert detail["question"] == XSS and detail["nodes"][1]["text"] == XSS
    assert detail["answer"] == "<b>1</b>"


def test_usage_endpoint(small: tuple[TestClient, TraceStore]) -> None:
    client, store = small
    vote_trace(store, "a", ["1", "2", "2"], greedy=0)
    refine_trace(store)
    data = client.get("/ui/api/usage", params={"since": "1d", "by": "strategy"}).json()
    assert data["total"]["traces"] == 2 and data["total"]["changed_traces"] == 2
    assert {g["key"] for g in data["groups"]} == {"self-consistency", "refine"}


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/ui/api/traces?limit=0", 400, "limit"),
        ("/ui/api/traces?limit=100000", 400, "limit"),
        ("/ui/api/traces?offset=-1", 400, "offset"),
        ("/ui/api/traces?status=sleeping", 400, "status must be one of"),
        ("/ui/api/traces/nope", 404, "no single trace matches 'nope'"),
        ("/ui/api/traces/a%20b/updates", 404, "no single trace"),
        ("/ui/api/usage?since=soon", 400, "since 'soon'"),
        ("/ui/api/usage?by=week", 400, "by must be one of"),
        ("/ui/static/views.py", 404, "no such file"),
        ("/ui/static/..%2F__init__.py", 404, ""),
    ],
)
def test_bad_requests_get_one_message(
    small: tuple[TestClient, TraceStore], path: str, status: int, message: str
) -> None:
    client, _ = small
    response = client.get(path)
    assert response.status_code == status
    assert message in str(response.json())


def test_page_and_assets_are_local_and_locked_down(small: tuple[TestClient, TraceStore]) -> None:
    client, _ = small
    page = client.get("/")
    assert page.status_code == 200 and "ui/static/app.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name, kind in [("app.js", "javascript"), ("style.css", "css")]:
        asset = client.get(f"/ui/static/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    everything = page.text + client.get("/ui/static/app.js").text + client.get("/ui/static/style.css").text
    assert "http://" not in everything.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in everything
    assert "innerHTML" not in everything and "insertAdjacentHTML" not in everything


def test_router_mounts_in_another_app_with_a_late_store(tmp_path: Path) -> None:
    """What `ponder serve` does: its store opens at startup, so it passes a function."""
    store = TraceStore(tmp_path / "traces.sqlite")
    vote_trace(store, "mounted", ["3"])
    app = FastAPI()
    app.state.store = None
    app.include_router(router(lambda: app.state.store))
    app.state.store = store
    with TestClient(app) as client:
        assert client.get("/ui/api/traces").json()["rows"][0]["question"] == "mounted"
        assert client.get("/").status_code == 200
    store.close()


def test_ponder_ui_bad_input_is_one_line(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.sqlite")
    store.close()
    env = {**os.environ, "PONDER_HOME": str(tmp_path / "home")}
    path = str(tmp_path / "traces.sqlite")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args, message in [
            (["--store", str(tmp_path / "missing.sqlite")], "no trace store at"),
            (["--store", path, "--port", port], f"cannot listen on 127.0.0.1:{port}"),
            (["--store", path, "--port", "70000"], "--port must be between"),
        ]:
            command = [sys.executable, "-m", "ponder", "ui", *args]
            run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
            assert run.returncode == 2, run
            assert message in run.stderr and "Traceback" not in run.stderr


def test_mounted_in_ponder_serve_shows_its_thinks(tmp_path: Path) -> None:
    """The one line the server adds, on the real server app: a chat completion it answers
    is a trace the viewer lists and shows, read through the server's own store."""
    from fakes import ScriptedEngine
    from ponder.server.app import create_app
    from ponder.server.service import ServerConfig

    engine = ScriptedEngine(["The answer is 7.", "I think 7.", "Maybe 8."])
    app = create_app(ServerConfig(store=tmp_path / "traces.sqlite"), engine=engine)
    app.include_router(router(lambda: app.state.service.store))  # the line `ponder serve` adds
    body = {
        "model": "self-consistency:n=3/ponder",
        "messages": [{"role": "user", "content": "What is 3 + 4?"}],
    }
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        listed = client.get("/ui/api/traces").json()
        assert listed["total"] == 1 and listed["rows"][0]["question"] == "What is 3 + 4?"
        detail = client.get(f"/ui/api/traces/{listed['rows'][0]['id']}").json()
        assert [n["answer"] for n in detail["nodes"] if n["kind"] == "sample"] == ["7", "7", "8"]
        assert detail["answer"] == "7" and detail["status"] == "done"
        assert "ui/static/app.js" in client.get("/").text
        assert client.get("/ui/api/traces/nope").status_code == 404
