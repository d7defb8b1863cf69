"""CodeT (Chen et al. 2022, "CodeT: Code Generation with Generated Tests"): select a program by
executing the candidates against tests the model wrote itself, and trusting *agreement*.

    codes = sample(problem, n)                      # candidate programs
    tests = distinct asserts from sample_tests(k)   # the model's own guesses at behaviour
    for x in codes:
        visible[x] = verify(x)                      # the checks the problem shows (examples, ruff)
        passes[x]  = {t in tests : x passes t}      # one sandboxed run per program
    consensus sets S = codes grouped by the tests they pass
    agreement(S) = |codes in S| * |tests passed by S|   # dual execution agreement
    return argmax over x of (visible[x], agreement(S(x)))

The visible checks rank first because they are ground truth; agreement breaks their ties
(often all candidates fail or all pass the few examples). A model's tests may be wrong:
a single test passed by one program counts for little, the same tests passed by many
programs count a lot. Generated tests are "step" nodes (role "tests") under a "note"; each
program's runs are verdict nodes under its sample; the choice is a "vote" node.
Anytime: a budget reached before the tests or the runs ranks what was checked so far.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from ponder.code.selftest import asserts_module, parse_asserts, tests_request
from ponder.context import Candidate, Context
from ponder.problem import Problem
from ponder.strategies.base import COUNT, TEMPERATURE, Result, Strategy
from ponder.verifiers.base import Verifier
from ponder.verifiers.code import UnitTests

_GENERATED = re.compile(r"test_generated_(\d+)")


@dataclass
class CodeT(Strategy):
    name = "codet"
    summary = "n programs ranked by the visible checks, then by agreement on tests the model writes (CodeT)."

    n: int = field(default=8, metadata={"help": "candidate programs to draw", **COUNT})
    tests: int = field(
        default=4, metadata={"help": "samples of model-written tests (each a few asserts)", **COUNT}
    )
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature", **TEMPERATURE})
    test_tokens: int = field(default=192, metadata={"help": "token cap of one sample of tests", "ge": 1})
    max_asserts: int = field(default=20, metadata={"help": "distinct generated asserts kept", "ge": 1})
    verifier: Verifier | None = field(
        default=None, metadata={"help": "the visible checks (default: the request's verifier)"}
    )

    async def run(self, problem: Problem, ctx: Context) -> Result:
        verifier = self.verifier or ctx.verifier
        codes = await ctx.sample(problem, self.n, temperature=self.temperature, top_p=0.95)
        codes = [c for c in codes if c.finished] or codes
        if not codes:
            return Result(None, "")
        tests = await self._generate_tests(problem, ctx)
        visible: dict[int, float] = {}
        passes: dict[int, frozenset[int]] = {}
        for i, code in enumerate(codes):
            if ctx.meter.limit_reached(samples=False):
                break  # unchecked programs rank last
            if verifier is not None:
                visible[i] = (await ctx.verify(problem, code.text, code.node, verifier))[0].score
            passes[i] = await self._passed(problem, ctx, code, tests)
        return self._select(codes, visible, passes, len(tests), ctx)

    async def _generate_tests(self, problem: Problem, ctx: Context) -> list[str]:
        """Distinct asserts about the entry point from `tests` samples of the model."""
        if not problem.entry_point or ctx.meter.limit_reached():
            return []
        request = tests_request(
            problem,
            self.tests,
            max_tokens=min(self.test_tokens, ctx.max_tokens),
            temperature=self.temperature,
            seed=ctx.seed + 1,
        )
        note = ctx.note("note", "model-written tests", role="tests")
        (samples,) = await ctx.complete([request], kind="step", parent=note, meta={"role": "tests"})
        found: list[str] = []
        for s in samples:
            found += parse_asserts(s.completion.text, problem.entry_point)
        tests = list(dict.fromkeys(found))[: self.max_asserts]
        ctx.trace.update(note, text="\n".join(tests) or "no usable asserts", meta={"n_tests": len(tests)})
        return tests

    async def _passed(
        self, problem: Problem, ctx: Context, code: Candidate, tests: list[str]
    ) -> frozenset[int]:
        """Indices of the generated tests this program passes (one sandboxed run for all)."""
        if not tests or not problem.entry_point:
            return frozenset()
        checks = UnitTests(asserts_module(tests, problem.entry_point), name="generated-tests")
        verdict, _ = await ctx.verify(problem, code.text, code.node, checks)
        return frozenset(
            int(m.group(1))
            for t in verdict.details.get("tests", [])
            if t.get("passed")
            and not t.get("skipped")
            and (m := _GENERATED.search(str(t.get("name", "")))) is not None
        )

    def _select(
        self,
        codes: list[Candidate],
        visible: dict[int, float],
        passes: dict[int, frozenset[int]],
        n_tests: int,
        ctx: Context,
    ) -> Result:
        """Dual execution agreement within the best visible score; ties go to the earliest."""
        members: dict[frozenset[int], list[int]] = defaultdict(list)
        for i, passed in passes.items():
            members[passed].append(i)
        agreement = {i: len(members[p]) * len(p) for i, p in passes.items()}

        def rank(i: int) -> tuple[float, int, int]:
            return (visible.get(i, -1.0), agreement.get(i, -1), -i)

        best = max(range(len(codes)), key=rank)
        chosen = codes[best]
        ctx.note(
            "vote",
            f"program {best + 1} of {len(codes)}: "
            f"visible {visible.get(best)}, agreement {agreement.get(best)}",
            parent=chosen.node,
            answer=chosen.answer,
            score=visible.get(best),
            method="codet",
            visible=[visible.get(i) for i in range(len(codes))],
            agreement=[agreement.get(i) for i in range(len(codes))],
            consensus_sets=len(members),
            generated_tests=n_tests,
        )
        return Result(
            chosen.answer,
            chosen.text,
            score=visible.get(best),
            node=chosen.node,
            response_tokens=chosen.completion.completion_tokens,
        )
