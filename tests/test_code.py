"""The honest code protocol: visible checks from docstrings, hidden tests only for grading,
CodeT's selection by dual execution agreement, and best-of-n / refine on visible checks."""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ponder.verifiers.code as code_verifier
from fakes import ScriptedEngine
from ponder.bench import BenchRun, run_bench, summary, write_outputs
from ponder.code.selftest import TESTS_SYSTEM, parse_asserts
from ponder.code.visible import docstring_examples, visible_checks, visible_tests
from ponder.datasets import load_dataset
from ponder.engines.base import GenerationRequest
from ponder.problem import Problem
from ponder.strategies import parse_strategy
from ponder.think import athink

PROMPT = '''from typing import List


def double(x: int) -> int:
    """Twice x.
    >>> double(2)
    4
    double(5) ==> 10
    double(y) => 2 * y
    Example:
        Input: x = 7
        Output: 14
    """
'''
HIDDEN = "def test_check():"  # the line humaneval_tests adds to the hidden tests only
RIGHT = "```python\ndef double(x):\n    return x * 2\n```"
WRONG = "```python\ndef double(x):\n    return x + 2\n```"


# ---------------------------------------------------------------- visible checks


def test_docstring_examples_in_every_form_humaneval_uses() -> None:
    found = [(e.call, e.expected) for e in docstring_examples(PROMPT, "double")]
    # the `double(y)` line is skipped: its argument is no literal
    assert found == [("double(2)", "4"), ("double(5)", "10"), ("double(7)", "14")]


def test_a_prompt_without_examples_has_no_visible_tests() -> None:
    assert visible_tests('def f(x):\n    """Return x."""\n', "f") is None
    assert visible_tests("not python (", "f") is None


def test_humaneval_problems_show_examples_not_the_hidden_tests() -> None:
    problems = load_dataset("humaneval")
    with_examples = [p for p in problems if p.tests]
    assert len(with_examples) >= 120  # 134 of 164 docstrings have literal examples
    for p in problems:
        grader = p.meta["grader"]
        hidden = grader.hidden_tests(p)
        assert HIDDEN in hidden
        assert p.tests is None or (HIDDEN not in p.tests and "test_example_1" in p.tests)
        shown = json.dumps({k: v for k, v in p.meta.items() if k != "grader"})
        assert HIDDEN not in shown and "canonical_solution" not in shown


async def test_visible_checks_score_examples_above_ruff() -> None:
    problem = Problem(PROMPT, format="code", tests=visible_tests(PROMPT, "double"), entry_point="double")
    checks = visible_checks(problem)
    right, wrong = await checks.verify(problem, RIGHT), await checks.verify(problem, WRONG)
    assert right.passed and right.score == 1.0
    assert not wrong.passed and 0.0 < wrong.score < 1.0
    assert "double(5)" in wrong.feedback  # the failing example, for a revision
    undefined = await checks.verify(problem, "```python\ndef double(x):\n    return y\n```")
    assert not undefined.passed and "F821" in undefined.feedback


# ---------------------------------------------------------------- hidden tests never reach a strategy

_in_strategy: contextvars.ContextVar[bool] = contextvars.ContextVar("in_strategy", default=False)


@pytest.fixture
def sandbox_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[bool, str]]]:
    """Every sandboxed test module, marked by whether a strategy (inside athink) ran it."""
    calls: list[tuple[bool, str]] = []
    real_run = code_verifier.run_in_sandbox
    real_athink = athink

    async def spy(code: str, tests: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((_in_strategy.get(), tests))
        return await real_run(code, tests, *args, **kwargs)

    async def marked(*args: Any, **kwargs: Any) -> Any:
        token = _in_strategy.set(True)
        try:
            return await real_athink(*args, **kwargs)
        finally:
            _in_strategy.reset(token)

    monkeypatch.setattr(code_verifier, "run_in_sandbox", spy)
    monkeypatch.setattr("ponder.batch.athink", marked)
    yield calls


def _code_or_tests(request: GenerationRequest, index: int) -> str:
    system = (request.messages or [{}])[0].get("content", "")
    if system == TESTS_SYSTEM:
        return "```python\nassert has_close_elements([1.0, 2.0], 0.5) == False\n```"
    return "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"


async def test_hidden_tests_never_reach_a_strategys_verifier(
    tmp_path: Path, sandbox_calls: list[tuple[bool, str]]
) -> None:
    from ponder.datasets import get_dataset

    dataset = get_dataset("humaneval")
    problems = dataset.load(2)
    specs = ["direct", "best-of-n:n=2", "refine:max_rounds=1", "codet:n=2,tests=1"]
    run = BenchRun(
        dataset=dataset,
        problems=problems,
        strategies=[(s, parse_strategy(s)) for s in specs],
        out=tmp_path,
        max_tokens=64,
    )
    run.prepare()
    rows, errors = await run_bench(run, ScriptedEngine(_code_or_tests), store=False)
    assert not errors
    inside = [tests for strategy, tests in sandbox_calls if strategy]
    outside = [tests for strategy, tests in sandbox_calls if not strategy]
    assert inside and outside
    assert all(HIDDEN not in t for t in inside)  # strategies ran only visible checks
    assert any("test_generated_0" in t for t in inside)  # codet's own tests ran too
    assert any(HIDDEN in t for t in outside)  # grading used the hidden tests
    data = summary(run, rows)
    for s in data["strategies"]:
        assert s["problems"] == 2 and "visible_pass_rate" in s
        assert s["checks_seen"] == "docstring examples + ruff (2 problems)"
    write_outputs(run, data)
    assert "Strategies saw only the visible checks" in (tmp_path / "summary.md").read_text()


# ---------------------------------------------------------------- CodeT


def _codet_engine(codes: list[str], asserts: str) -> ScriptedEngine:
    counter = iter(range(1_000_000))

    def script(request: GenerationRequest, index: int) -> str:
        if (request.messages or [{}])[0].get("content") == TESTS_SYSTEM:
            return asserts
        return codes[next(counter) % len(codes)]

    return ScriptedEngine(script)


GUESSES = "```python\nassert double(1) == 2\nassert double(3) == 6\nassert double(2) == 4\nprint(1)\n```"


async def test_codet_picks_the_program_most_generated_tests_agree_on() -> None:
    """No visible tests: agreement alone decides. The wrong program comes first and passes
    one generated test (double(2) == 4) alone; the right one, drawn twice, passes all three:
    agreement 1 * 1 against 2 * 3."""
    problem = Problem(PROMPT, format="code", entry_point="double")
    engine = _codet_engine([WRONG, RIGHT, RIGHT], GUESSES)
    answer = await athink(problem, strategy="codet:n=3,tests=1", engine=engine, store=False)
    assert "x * 2" in answer.response


async def test_codet_ranks_visible_checks_above_agreement() -> None:
    """Generated tests that are all wrong agree on the wrong program; the visible example wins."""
    problem = Problem(PROMPT, format="code", tests=visible_tests(PROMPT, "double"), entry_point="double")
    engine = _codet_engine(
        [WRONG, WRONG, RIGHT], "```python\nassert double(1) == 3\nassert double(5) == 7\n```"
    )
    answer = await athink(problem, strategy="codet:n=3,tests=1", engine=engine, store=False)
    assert "x * 2" in answer.response and answer.score == 1.0


def test_generated_asserts_are_parsed_per_line_and_only_about_the_entry_point() -> None:
    text = "```python\nassert double(1) == 2\nassert other(1) == 2\n"
    text += "assert double(  1 ) == 2\nassert double(\n```"
    assert parse_asserts(text, "double") == ["assert double(1) == 2", "assert double(1) == 2"]


async def test_codet_stays_inside_the_budget() -> None:
    problem = Problem(PROMPT, format="code", entry_point="double")
    engine = _codet_engine([RIGHT], GUESSES)
    answer = await athink(
        problem, strategy="codet:n=4,tests=2", engine=engine, store=False, budget="4 samples"
    )
    assert answer.stopped_by == "samples"
    assert all((c.messages or [{}])[0].get("content") != TESTS_SYSTEM for c in engine.calls)
    assert "x * 2" in answer.response  # anytime: the programs drawn are still ranked


# ---------------------------------------------------------------- best-of-n and refine use the visible checks


@pytest.mark.parametrize("spec", ["best-of-n:n=2", "refine:max_rounds=1"])
async def test_best_of_n_and_refine_use_a_code_problems_tests_without_extra_arguments(spec: str) -> None:
    problem = Problem(PROMPT, format="code", tests=visible_tests(PROMPT, "double"), entry_point="double")
    answer = await athink(problem, strategy=spec, engine=ScriptedEngine([WRONG, RIGHT]), store=False)
    assert "x * 2" in answer.response and answer.score == 1.0


@pytest.mark.model
async def test_codet_on_a_humaneval_problem_with_the_bundled_model(tmp_path: Path) -> None:
    """The real model writes programs and tests; every program is run against the tests and
    the choice is recorded with its agreement scores."""
    from ponder.store import TraceStore

    (problem,) = load_dataset("humaneval", size=1)
    store = TraceStore(tmp_path / "traces.sqlite")
    answer = await athink(
        problem, strategy="codet:n=2,tests=2", verifier=visible_checks(problem), store=store, max_tokens=160
    )
    trace = store.get_trace(answer.trace_id)
    assert trace is not None
    (vote,) = [n for n in trace.nodes if n.kind == "vote"]
    assert vote.meta["method"] == "codet" and len(vote.meta["visible"]) == 2
    verdicts = [n for n in trace.nodes if n.kind == "verdict"]
    assert len(verdicts) >= 2  # visible checks on each program (and generated tests if any parsed)
    assert answer.response in {n.text for n in trace.nodes if n.kind == "sample"}
