"""`think_many()`: many problems, one strategy, on an executor (this process, or a Ray
cluster), each answer graded when the problem came from a dataset.

A problem is sent as a `Job`: plain data. A problem from `load_dataset` travels to a remote
executor as its `ItemRef` (dataset name, config, size, seed, id) and is rebuilt and graded
where it is thought about; nothing carries a dataset object across processes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ponder.budget import Budget, BudgetError
from ponder.code.visible import visible_checks
from ponder.datasets import ItemRef, item_ref, resolve
from ponder.datasets.base import GRADER_KEY, Dataset
from ponder.engines.base import Engine
from ponder.engines.spec import EngineSpec
from ponder.executors import Executor, get_executor
from ponder.problem import Problem
from ponder.strategies import Strategy, StrategyError, parse_strategy
from ponder.strategies.base import DEFAULT_STRATEGY
from ponder.think import Answer, _blocking, _open_store, as_problem, athink, default_engine
from ponder.trace import NodeRecord, Store

if TYPE_CHECKING:
    from ponder.allocate import Share

__all__ = ["Job", "Outcome", "athink_many", "make_job", "run_jobs", "solve", "think_many"]


@dataclass(frozen=True)
class Job:
    """One problem and one strategy (a spec, or a strategy object whose verifier has no
    spec), with the run's settings."""

    problem: Problem | ItemRef
    strategy: str | Strategy
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    max_tokens: int = 512
    trace_id: str | None = None  # None: a new id (batch allocation names phase 2's after phase 1's)

    @property
    def problem_id(self) -> str:
        return str(self.problem.id)

    @property
    def spec(self) -> str:
        return self.strategy.spec() if isinstance(self.strategy, Strategy) else self.strategy


@dataclass(frozen=True)
class Outcome:
    """What one job came to: the `Answer`, whether it is right (None: no grader), each
    sample's extracted answer and grade, or why it failed (`answer` is then None); for a
    code problem, whether the answer passed the visible checks its strategy used; `auto`'s
    first decision (its text, choice and signals); under a total budget, the problem's
    `share` of it (`ponder.allocate`)."""

    id: str
    strategy: str
    answer: Answer | None
    correct: bool | None = None
    samples: list[tuple[str | None, bool | None]] = field(default_factory=list)
    error: str | None = None
    visible: bool | None = None  # a code problem's answer passed the visible checks the strategy saw
    decision: dict[str, Any] | None = None
    share: Share | None = None


def make_job(
    problem: Problem,
    strategy: str | Strategy,
    *,
    budget: Budget | None = None,
    seed: int = 0,
    max_tokens: int = 512,
    remote: bool = False,
) -> Job:
    """A job; for a remote executor a dataset's problem is replaced by its reference."""
    ref = item_ref(problem) if remote else None
    return Job(ref or problem, strategy, budget or Budget(), seed, max_tokens)


async def solve(job: Job, engine: Engine, store: Store | None) -> Outcome:
    """The work every executor runs: think, then grade the answer and every sample with the
    problem's dataset. A failing problem is an `Outcome` with `error`; a `BudgetError`
    (a dollar budget with no price) would fail every job alike and is raised."""
    heard: dict[str, NodeRecord] = {}  # listeners hear a sample as it grows: keep its final record
    decisions: list[dict[str, Any]] = []

    def on_node(node: NodeRecord) -> None:
        if node.kind == "sample":
            heard[node.id] = node
        elif node.kind == "decision" and not decisions:
            decisions.append({"text": node.text, **node.meta})

    try:
        problem = resolve(job.problem) if isinstance(job.problem, ItemRef) else job.problem
        checks = visible_checks(problem) if problem.format == "code" else None  # never a grader's tests
        answer = await athink(
            problem,
            strategy=job.strategy,
            budget=job.budget,
            engine=engine,
            verifier=checks,
            store=store if store is not None else False,
            trace_id=job.trace_id,
            on_node=on_node,
            seed=job.seed,
            max_tokens=job.max_tokens,
        )
        samples = [n for n in heard.values() if n.meta.get("finish_reason") not in ("budget", "cancelled")]
        decision = decisions[0] if decisions else None
        grader = problem.meta.get(GRADER_KEY)
        if not isinstance(grader, Dataset):
            unknown: list[tuple[str | None, bool | None]] = [(n.answer, None) for n in samples]
            return Outcome(job.problem_id, job.spec, answer, None, unknown, decision=decision)
        correct = await grader.agrade(problem, answer.answer, answer.response)
        visible = (await checks.verify(problem, answer.response)).passed if checks is not None else None
        graded: dict[tuple[str | None, str], bool] = {}
        for node in samples:
            key = (node.answer, node.text)
            if key not in graded:
                graded[key] = await grader.agrade(problem, node.answer, node.text)
        rows: list[tuple[str | None, bool | None]] = [(n.answer, graded[(n.answer, n.text)]) for n in samples]
        return Outcome(job.problem_id, job.spec, answer, correct, rows, visible=visible, decision=decision)
    except BudgetError:
        raise
    except Exception as exc:  # one failing problem must not sink the batch; a rerun retries it
        return Outcome(job.problem_id, job.spec, None, error=f"{type(exc).__name__}: {exc}")


async def run_jobs(
    jobs: Sequence[Job],
    *,
    executor: Executor,
    engine: Engine | EngineSpec,
    store: Store | None,
    on_outcome: Callable[[Outcome], None],
) -> None:
    """Every job through `executor`; `on_outcome` hears each one in the driver as it lands
    (after its trace is in `store`), failures included."""

    def failed(job: Job, why: str) -> None:
        on_outcome(Outcome(job.problem_id, job.spec, None, error=why))

    await executor.map(
        solve,
        jobs,
        engine=engine,
        store=store,
        on_result=lambda _, outcome: on_outcome(outcome),
        on_error=failed,
    )


async def athink_many(
    problems: Iterable[str | Problem | Sequence[Mapping[str, Any]]],
    *,
    strategy: str | Mapping[str, Any] | Strategy = DEFAULT_STRATEGY,
    budget: Budget | str | None = None,
    total_budget: Budget | str | None = None,
    engine: Engine | EngineSpec | None = None,
    executor: Executor | str = "local",
    store: Store | str | bool | None = None,
    seed: int = 0,
    max_tokens: int = 512,
    concurrency: int = 4,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Think about every problem with `strategy`, each inside `budget`, and return one
    `Outcome` per problem in the order given (problems from `load_dataset` are graded).

    `executor` is "local" (this process, `concurrency` problems at a time on one engine),
    "ray" (a local Ray cluster) or an `Executor` such as `RayExecutor(address=...)`. A
    remote executor needs `engine` as an `EngineSpec` (default: the embedded model); traces
    land in `store` either way. `on_outcome` hears each outcome as it finishes.

    `total_budget` ("20000tok" or `Budget(tokens=...)`) is one token budget for all the
    problems, spent where it is needed (`ponder.allocate`: with `auto`, a greedy answer for
    each, the rest to the least confident), in waves of `concurrency` problems; each
    outcome's `share` says what its problem was granted and spent. Only tokens can be
    split: a total in seconds, dollars or samples raises `BudgetError`. With `budget` too,
    the stricter limit wins for each problem.
    """
    from ponder.allocate import Allocation, allocate, total_tokens  # it builds on this module

    total = None if total_budget is None else total_tokens(total_budget)
    items = [as_problem(p) for p in problems]
    items = [p if p.id is not None else dataclasses.replace(p, id=str(i)) for i, p in enumerate(items)]
    ids = [str(p.id) for p in items]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids must be unique: each outcome is keyed by its problem's id")
    limits = Budget.parse(budget) if isinstance(budget, str) else budget or Budget()
    owned = isinstance(executor, str)
    runner = get_executor(executor, concurrency=concurrency) if isinstance(executor, str) else executor
    if engine is None:
        engine = EngineSpec() if runner.remote else default_engine()
    chosen = strategy if isinstance(strategy, Strategy) else _canonical(strategy, engine)
    jobs = [
        make_job(p, chosen, budget=limits, seed=seed, max_tokens=max_tokens, remote=runner.remote)
        for p in items
    ]
    outcomes: dict[str, Outcome] = {}

    def landed(outcome: Outcome) -> None:
        outcomes.setdefault(outcome.id, outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        if total is not None:
            how = Allocation(runner, engine, _open_store(store), limits, seed, max_tokens, concurrency)
            return await allocate(items, chosen, total, how, on_outcome)
        await run_jobs(jobs, executor=runner, engine=engine, store=_open_store(store), on_outcome=landed)
    finally:
        if owned:
            runner.close()
    return [outcomes[i] for i in ids]


def _canonical(strategy: str | Mapping[str, Any], engine: Engine | EngineSpec) -> str:
    """The strategy's canonical spec (the outcomes' key). One that grades with the engine
    (a judge verifier) cannot be built without it; with only an engine spec here, its
    text goes as given and each worker builds it with its own engine."""
    text = strategy if isinstance(strategy, str) else json.dumps(dict(strategy))
    try:
        return parse_strategy(text, engine=None if isinstance(engine, EngineSpec) else engine).spec()
    except StrategyError as exc:
        if isinstance(engine, EngineSpec) and "needs an engine" in str(exc):
            return text
        raise


think_many = _blocking(athink_many)
think_many.__doc__ = """Think about many problems; the blocking face of `athink_many`.

    >>> problems = load_dataset("reasoning-gym:products", size=100)
    >>> outcomes = think_many(problems, strategy="direct", executor="ray")
    >>> sum(o.correct for o in outcomes)
"""
