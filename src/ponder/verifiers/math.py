"""Mathematical answer equivalence with math-verify (LaTeX, fractions, sets, intervals,
matrices), with a plain numeric tolerance as a fallback.

math-verify guards parsing and comparison with `signal.alarm`, which only works in the main
thread; off the main thread its timeouts are switched off (None) instead of raising.
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction
from typing import Any

from ponder.extract import canonical_number, extract_answer
from ponder.problem import Problem
from ponder.verifiers.base import Verdict


def _timeout(seconds: int) -> int | None:
    return seconds if threading.current_thread() is threading.main_thread() else None


def _as_number(text: str) -> float | None:
    s = canonical_number(text.strip().strip("$").replace("\\!", "").replace("{,}", ""))
    try:
        return float(Fraction(s))
    except (ValueError, ZeroDivisionError):
        pass
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse(text: str, seconds: int) -> list[Any]:
    from math_verify import parse

    try:
        return list(parse(text, parsing_timeout=_timeout(seconds)))
    except Exception:
        return []


def equivalent(gold: str, answer: str, *, rel_tol: float = 1e-6, timeout: int = 5) -> tuple[bool, str]:
    """Whether `answer` equals `gold`, and how that was decided ("math-verify" / "numeric")."""
    from math_verify import verify

    gold_parsed = _parse(f"${gold}$", timeout) or _parse(gold, timeout)
    pred_parsed = _parse(f"${answer}$", timeout) or _parse(answer, timeout)
    if gold_parsed and pred_parsed:
        try:
            if verify(gold_parsed, pred_parsed, timeout_seconds=_timeout(timeout)):
                return True, "math-verify"
        except Exception:
            pass
    g, a = _as_number(gold), _as_number(answer)
    if g is not None and a is not None and math.isclose(g, a, rel_tol=rel_tol, abs_tol=rel_tol):
        return True, "numeric"
    return False, "math-verify" if gold_parsed and pred_parsed else "unparsed"


class MathEquivalence:
    """Passes when the candidate's final answer (a `\\boxed{}` or "Answer:" line, else the
    last number) is mathematically equal to `problem.gold`."""

    def __init__(self, rel_tol: float = 1e-6, timeout: int = 5, name: str = "math") -> None:
        self.rel_tol = rel_tol
        self.timeout = timeout
        self.name = name

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        if problem.gold is None:
            return Verdict(0.0, False, "no gold answer to compare with", {"error": "no gold"})
        answer = extract_answer(candidate, "math")
        if not answer:
            return Verdict(0.0, False, "no final answer found; put it in \\boxed{}", {"answer": None})
        ok, how = equivalent(problem.gold, answer, rel_tol=self.rel_tol, timeout=self.timeout)
        feedback = f"the answer {answer} is correct" if ok else f"the answer {answer} is not correct"
        return Verdict(1.0 if ok else 0.0, ok, feedback, {"answer": answer, "method": how})
