"""Batch allocation: many problems, one total token budget, spent where it is needed.

A uniform per-problem budget wastes tokens on questions the greedy answer settles and starves
the ones that need a vote (Snell et al. 2024 allocate test-time compute by difficulty). With
`auto` the split takes two phases:

    phase 1, System 1 for all:  auto:max_n=1 on every problem -> greedy answer + decision
                                problems whose decision was "answer at once" are done
    phase 2, System 2 where it pays:
                                what is left of the total goes to the problems that wanted
                                to escalate, least confident first (the decision's signal,
                                ascending), each running auto with escalation forced

Any other strategy runs one phase. Every phase runs in waves of `wave` problems, and each
problem of a wave is capped at an even share of what is left for the problems not yet run:
what an early problem does not use flows to later ones, and each problem's cap is at least
the even share it would have had at the start (caps never shrink while problems keep to them).

Invariant: spent <= total + (per-request overshoot of `ponder.budget`) x `wave`. A wave's
caps sum to at most what is left, the next wave's caps come from what is actually left, and
a wave starts only while at least one token per problem remains. A problem whose run failed
is charged its whole cap (its tokens are not known), so failures never hide spending.

What the split costs: phase 2 recomputes the greedy answer in a trace of its own (the
engine's prefix cache reuses the prompt, but the greedy tokens are generated twice and
both count against the total), and phases and waves wait for their slowest problem.
Phase 2's trace id is phase 1's plus `ESCALATED`, so `ponder traces show ID` and
`ponder traces show ID-escalated` show both halves of one problem; each `Outcome.share`
names both ids.

Only a token total is split: seconds run concurrently (a wall-clock total is not a sum
over problems) and dollars follow tokens at the engine's price; both are refused with a
`BudgetError`, as are samples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ponder.batch import Job, Outcome, make_job, run_jobs
from ponder.budget import Budget, BudgetError
from ponder.engines.base import Engine
from ponder.engines.spec import EngineSpec
from ponder.executors import Executor
from ponder.problem import Problem
from ponder.strategies import Strategy, StrategyError, parse_strategy
from ponder.strategies.auto import Auto
from ponder.think import Usage
from ponder.trace import Store

__all__ = ["ESCALATED", "Allocation", "Share", "allocate", "total_tokens"]

ESCALATED = "-escalated"  # phase 2's trace id: phase 1's with this suffix


@dataclass(frozen=True)
class Share:
    """One problem's part of a total budget: the tokens it was granted (its caps in the
    phases it ran) and spent (completion tokens of both phases; a failed run counts its
    whole cap), whether it ran phase 2, and its traces (phase 1's first)."""

    granted: int
    spent: int
    escalated: bool = False
    traces: tuple[str, ...] = ()
    note: str | None = None  # why phase 2's answer was not kept, or phase 2 did not run


@dataclass(frozen=True)
class Allocation:
    """How one batch runs: where, with what per-problem limits, `wave` problems at a time."""

    executor: Executor
    engine: Engine | EngineSpec
    store: Store | None
    budget: Budget = dataclasses.field(default_factory=Budget)
    seed: int = 0
    max_tokens: int = 512
    wave: int = 4


def total_tokens(total: Budget | str) -> int:
    """The token total of a budget; anything else is refused (see the module docstring)."""
    budget = Budget.parse(total) if isinstance(total, str) else total
    others = [name for name in ("seconds", "usd", "samples") if getattr(budget, name) is not None]
    if budget.tokens is None or others:
        raise BudgetError(
            "a total budget is split in tokens only (e.g. 20000tok): "
            + (f"{', '.join(others)} cannot be split across problems" if others else "give a token count")
        )
    return budget.tokens


async def allocate(
    problems: Sequence[Problem],
    strategy: str | Strategy,
    total: int,
    how: Allocation,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """One `Outcome` per problem, in the order given, each with its `share`, spending at
    most `total` completion tokens on all of them (plus the overshoot in the module
    docstring). `on_outcome` hears each problem once its answer is final."""
    spec = strategy if isinstance(strategy, str) else strategy.spec()
    auto = _auto(strategy, how.engine)
    final: dict[str, Outcome] = {}

    def done(outcome: Outcome) -> None:
        outcome = dataclasses.replace(outcome, strategy=spec)
        final[outcome.id] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    def in_order() -> list[Outcome]:
        starved = "no tokens of the total budget were left for this problem"
        for p in problems:
            if str(p.id) not in final:
                done(Outcome(str(p.id), spec, None, error=starved))
        return [final[str(p.id)] for p in problems]

    if auto is None:
        await _waves(problems, strategy, total, how, lambda o, cap: done(_shared(o, cap)))
        return in_order()

    firsts: dict[str, tuple[Outcome, int]] = {}

    def settled(outcome: Outcome, cap: int) -> None:
        if _wants_more(outcome):
            firsts[outcome.id] = (outcome, cap)
        else:
            done(_shared(outcome, cap))

    greedy, escalating = dataclasses.replace(auto, max_n=1), dataclasses.replace(auto, threshold=math.inf)
    phases: tuple[str | Strategy, str | Strategy] = (
        (greedy.spec(), escalating.spec()) if isinstance(strategy, str) else (greedy, escalating)
    )
    left = await _waves(problems, phases[0], total, how, settled)
    unsure = sorted(
        (p for p in problems if str(p.id) in firsts), key=lambda p: _confidence(firsts[str(p.id)][0])
    )

    def escalated(second: Outcome, cap: int) -> None:
        done(_joined(*firsts.pop(second.id), second, cap))

    names = {str(p.id): _trace(firsts[str(p.id)][0]) for p in unsure}
    await _waves(unsure, phases[1], left, how, escalated, names)
    for first, cap in firsts.values():  # no tokens were left for these
        done(_shared(first, cap, note="no tokens of the total were left for phase 2"))
    return in_order()


async def _waves(
    problems: Sequence[Problem],
    strategy: str | Strategy,
    left: int,
    how: Allocation,
    landed: Callable[[Outcome, int], None],
    trace_ids: dict[str, str | None] | None = None,
) -> int:
    """Run `problems` in waves, each capped at an even share of what is left for those not
    yet run; `landed` hears each outcome with its cap. Returns the tokens left."""
    remote = how.executor.remote
    for start in range(0, len(problems), how.wave):
        cap = left // (len(problems) - start)
        if cap < 1:
            break  # the rest get nothing: the caller keeps what it has of them
        limits = how.budget.merge(Budget(tokens=cap))
        jobs: list[Job] = []
        for problem in problems[start : start + how.wave]:
            job = make_job(
                problem, strategy, budget=limits, seed=how.seed, max_tokens=how.max_tokens, remote=remote
            )
            jobs.append(dataclasses.replace(job, trace_id=(trace_ids or {}).get(job.problem_id)))
        got: dict[str, Outcome] = {}
        await run_jobs(
            jobs, executor=how.executor, engine=how.engine, store=how.store, on_outcome=_keep_first(got)
        )
        for job in jobs:
            outcome = got[job.problem_id]
            left -= _spent(outcome, cap)
            landed(outcome, cap)
    return left


def _keep_first(got: dict[str, Outcome]) -> Callable[[Outcome], None]:
    """A job a dead worker handed back and another finished lands twice: keep the first."""

    def keep(outcome: Outcome) -> None:
        got.setdefault(outcome.id, outcome)

    return keep


def _auto(strategy: str | Strategy, engine: Engine | EngineSpec) -> Auto | None:
    """The strategy as `Auto` when it is one (two phases), else None (one phase)."""
    if isinstance(strategy, Strategy):
        return strategy if isinstance(strategy, Auto) else None
    try:
        parsed = parse_strategy(strategy, engine=engine if isinstance(engine, Engine) else None)
    except StrategyError:  # built by each worker with its own engine: run it as given
        return None
    return parsed if isinstance(parsed, Auto) else None


def _wants_more(outcome: Outcome) -> bool:
    """Phase 1 decided to escalate, or answered at once only because its cap ran out."""
    if outcome.answer is None or outcome.decision is None:
        return False
    return outcome.decision.get("choice") != "direct" or outcome.answer.stopped_by is not None


def _confidence(outcome: Outcome) -> float:
    """The decision's signal value; no value sorts first (least known, least confident)."""
    decision = outcome.decision or {}
    value = (decision.get("signals") or {}).get(decision.get("signal"))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else -math.inf


def _spent(outcome: Outcome, cap: int) -> int:
    return outcome.answer.usage.completion_tokens if outcome.answer is not None else cap


def _trace(outcome: Outcome) -> str | None:
    return None if outcome.answer is None else outcome.answer.trace_id + ESCALATED


def _shared(outcome: Outcome, cap: int, note: str | None = None) -> Outcome:
    traces = () if outcome.answer is None else (outcome.answer.trace_id,)
    return dataclasses.replace(outcome, share=Share(cap, _spent(outcome, cap), traces=traces, note=note))


def _joined(first: Outcome, cap1: int, second: Outcome, cap2: int) -> Outcome:
    """Phase 2's outcome with both phases' usage; phase 1's answer when phase 2 has none."""
    assert first.answer is not None  # only answered problems escalate
    spent = _spent(first, cap1) + _spent(second, cap2)
    traces = (first.answer.trace_id, *(() if second.answer is None else (second.answer.trace_id,)))
    if second.answer is not None and second.answer.answer is not None:
        usage = first.answer.usage + second.answer.usage
        answer = dataclasses.replace(second.answer, usage=usage)
        share = Share(cap1 + cap2, spent, True, traces)
        return dataclasses.replace(second, answer=answer, decision=first.decision, share=share)
    why = second.error or "phase 2 gave no answer"
    extra = second.answer.usage if second.answer is not None else None
    unknown = Usage(
        prompt_tokens=0,
        reasoning_tokens=cap2,
        completion_tokens=cap2,
        total_tokens=cap2,
        seconds=0.0,
        usd=0.0,
    )
    usage = first.answer.usage + (extra or unknown)  # a failed run is charged its whole cap
    answer = dataclasses.replace(first.answer, usage=usage)
    note = f"kept phase 1's answer: {why}"
    return dataclasses.replace(first, answer=answer, share=Share(cap1 + cap2, spent, True, traces, note))
