"""The benchmark runner behind `ponder bench`: every (problem, strategy) pair thought about
on an executor (concurrently through one engine here, or on Ray workers), each result
appended to results.jsonl the moment it is graded (so a killed run resumes where it
stopped), then summary tables and the accuracy-versus-tokens plot. No CLI code here: the
command and tests drive it alike."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ponder.allocate import Allocation, allocate
from ponder.batch import Outcome, make_job, run_jobs
from ponder.budget import Budget
from ponder.code.visible import describe_checks
from ponder.datasets import Dataset
from ponder.engines.base import Engine
from ponder.engines.spec import EngineSpec
from ponder.executors import Executor, LocalExecutor
from ponder.metrics import summarize
from ponder.problem import Problem
from ponder.store import TraceStore
from ponder.strategies import REGISTRY, Strategy, StrategyError, parse_strategy
from ponder.think import Answer
from ponder.trace import Store

RESULTS = "results.jsonl"
RUN = "run.json"
# what must match for a rerun to append to an existing out dir (seed, size and strategies may differ)
RUN_KEYS = ("dataset", "dataset_config", "budget", "max_tokens", "engine", "total_budget")


class BenchError(ValueError):
    """Bad benchmark input: reported as one line, before any model is loaded."""


def split_strategies(texts: str | Sequence[str]) -> list[str]:
    """Split strategy lists into specs. Specs are separated by ";" or by a comma whose next
    item starts a new spec (a registered strategy name, optionally followed by ":"); other
    comma-separated items are parameters of the spec before them, so
    "direct,beam-search:width=4,expand=2,self-consistency:n=4" is three specs."""
    import ponder.strategies  # noqa: F401  (fills the registry)
    from ponder.strategies.spec import split_top

    specs: list[str] = []
    for text in [texts] if isinstance(texts, str) else texts:
        for chunk in split_top(text, ";"):
            for item in (part.strip() for part in split_top(chunk)):
                if specs and _is_parameter(item, specs[-1]):
                    specs[-1] += ("," if ":" in specs[-1] else ":") + item
                elif "=" in item.partition(":")[0]:
                    raise BenchError(f"strategy parameter {item!r} comes before any strategy name")
                else:
                    specs.append(item)
    if not specs:
        raise BenchError("no strategies given")
    return specs


def _is_parameter(item: str, spec: str) -> bool:
    """key=value, or a bare flag the previous spec's strategy has (e.g. "weighted")."""
    if "=" in item.partition(":")[0]:
        return True
    cls = REGISTRY.get(spec.partition(":")[0].strip())
    return (
        cls is not None
        and item not in REGISTRY
        and item.replace("-", "_") in {p[0] for p in cls.parameters()}
    )


def parse_strategies(texts: str | Sequence[str]) -> list[tuple[str, Strategy]]:
    """(spec as typed, strategy) pairs; duplicates (same canonical spec) dropped."""
    chosen: dict[str, tuple[str, Strategy]] = {}
    for spec in split_strategies(texts):
        try:
            strategy = parse_strategy(spec)
        except StrategyError as exc:
            raise BenchError(str(exc)) from None
        chosen.setdefault(strategy.spec(), (spec, strategy))
    return list(chosen.values())


@dataclass
class BenchRun:
    """One benchmark: a dataset's problems times strategies, at one seed, into `out`."""

    dataset: Dataset
    problems: list[Problem]
    strategies: list[tuple[str, Strategy]]
    out: Path
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    max_tokens: int = 512
    concurrency: int = 4
    dataset_config: dict[str, Any] = field(default_factory=dict)
    engine_label: str = "llamacpp"
    total_budget: int | None = None  # tokens for all the problems, per strategy (`ponder.allocate`)

    def header(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.name,
            "dataset_config": self.dataset_config,
            "budget": self.budget.to_dict(),
            "max_tokens": self.max_tokens,
            "engine": self.engine_label,
            "total_budget": self.total_budget,
        }

    @property
    def results_path(self) -> Path:
        return self.out / RESULTS

    def prepare(self) -> None:
        """Create the out dir, check it is writable and holds no other run's results."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise BenchError(f"cannot write to --out {str(self.out)!r}: {exc.strerror or exc}") from None
        run_file = self.out / RUN
        header = self.header()
        if run_file.exists():
            try:
                old = json.loads(run_file.read_text())
            except (OSError, ValueError):
                old = None
            if isinstance(old, dict):
                differ = [
                    k
                    for k in RUN_KEYS
                    if json.dumps(old.get(k), sort_keys=True) != json.dumps(header[k], sort_keys=True)
                ]
                if differ:
                    raise BenchError(
                        f"{self.out} holds results of a different run ({', '.join(differ)} differ); "
                        "use another --out"
                    )
        run_file.write_text(json.dumps(header, indent=2) + "\n")

    def pending(self, done: dict[tuple[str, str, int], dict[str, Any]]) -> list[tuple[Problem, str]]:
        """(problem, canonical spec) pairs not yet in results.jsonl, problem-major so that a
        partial run compares strategies on the same problems."""
        return [
            (problem, strategy.spec())
            for problem in self.problems
            for _, strategy in self.strategies
            if (str(problem.id), strategy.spec(), self.seed) not in done
        ]

    def selected(self, done: dict[tuple[str, str, int], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """This run's rows by canonical spec (an out dir may hold other seeds or problems)."""
        return {
            strategy.spec(): [
                done[key]
                for problem in self.problems
                if (key := (str(problem.id), strategy.spec(), self.seed)) in done
            ]
            for _, strategy in self.strategies
        }


def read_results(path: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Rows already written, by (problem id, strategy, seed). A line cut short by a kill is
    dropped and truncated away so that appending starts on a fresh line."""
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    if not path.exists():
        return rows
    data = path.read_bytes()
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
            rows[(str(row["id"]), str(row["strategy"]), int(row["seed"]))] = row
        except (ValueError, KeyError, TypeError):
            break
        good += len(line)
    if good < len(data):
        with path.open("r+b") as fh:
            fh.truncate(good)
    return rows


class ResultLog:
    """Append-only results.jsonl: one flushed, fsynced line per graded result."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = path.open("a", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


Progress = Callable[[dict[str, Any]], None]


async def run_bench(
    run: BenchRun,
    engine: Engine | EngineSpec,
    store: TraceStore | bool,
    on_result: Progress | None = None,
    executor: Executor | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Run what is not yet in results.jsonl on `executor` (default: this process, at most
    `concurrency` thinks at a time through the one engine, which batches them). Rows are
    written here, in the driver, keyed by (problem, strategy, seed): a job a dead worker
    handed back and another finished is written once. Returns this run's rows by
    strategy, and errors.

    With a total budget each strategy splits it over its problems (`ponder.allocate`); a
    resumed run gives the problems still to do what the rows already written left of it."""
    done = read_results(run.results_path)
    todo = run.pending(done)
    executor = executor or LocalExecutor(run.concurrency)
    problems = {str(problem.id): problem for problem in run.problems}
    jobs = [
        make_job(
            problem, spec, budget=run.budget, seed=run.seed, max_tokens=run.max_tokens, remote=executor.remote
        )
        for problem, spec in todo
    ]
    log = ResultLog(run.results_path)
    errors: list[str] = []

    def landed(outcome: Outcome) -> None:
        key = (outcome.id, outcome.strategy, run.seed)
        if outcome.answer is None:
            errors.append(f"{outcome.id} × {outcome.strategy}: {outcome.error}")
            return
        if key in done:
            return
        row = result_row(run, problems[outcome.id], outcome.answer, outcome)
        log.append(row)
        done[key] = row
        if on_result is not None:
            on_result(row)

    trace_store = store if isinstance(store, Store) else None
    try:
        if run.total_budget is None:
            await run_jobs(jobs, executor=executor, engine=engine, store=trace_store, on_outcome=landed)
        else:
            how = Allocation(
                executor, engine, trace_store, run.budget, run.seed, run.max_tokens, run.concurrency
            )
            for spec in dict.fromkeys(spec for _, spec in todo):
                left = run.total_budget - spent(run.selected(done)[spec])
                await allocate([p for p, s in todo if s == spec], spec, left, how, landed)
    finally:
        log.close()
    return run.selected(done), errors


def spent(rows: list[dict[str, Any]]) -> int:
    """Completion tokens the rows used: what they took of a total budget."""
    return sum(int(row["completion_tokens"]) for row in rows)


def result_row(run: BenchRun, problem: Problem, answer: Answer, outcome: Outcome) -> dict[str, Any]:
    """One line of results.jsonl."""
    return {
        "id": problem.id,
        "strategy": outcome.strategy,
        "seed": run.seed,
        "answer": answer.answer,
        "gold": problem.gold,
        "correct": outcome.correct,
        **(
            {"visible_passed": outcome.visible, "visible_checks": describe_checks(problem)}
            if outcome.visible is not None
            else {}
        ),
        "samples": [list(sample) for sample in outcome.samples],
        **dataclasses.asdict(answer.usage),
        "stopped_by": answer.stopped_by,
        "trace_id": answer.trace_id,
        "model": answer.model,
        "finished_at": round(time.time(), 3),
    }


# ---------------------------------------------------------------- summaries


def family(strategy: Strategy) -> str:
    return strategy.name


def summary(run: BenchRun, rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """summary.json: the run's settings and per-strategy metrics."""
    strategies = []
    for typed, strategy in run.strategies:
        spec = strategy.spec()
        strategies.append(
            {
                "strategy": typed,
                "spec": spec,
                "family": family(strategy),
                "parameters": {name: getattr(strategy, name) for name, *_ in strategy.parameters()},
                **summarize(rows.get(spec, [])),
                **visible_summary(rows.get(spec, [])),
                "completion_tokens_total": spent(rows.get(spec, [])),
            }
        )
    models = sorted({row["model"] for spec_rows in rows.values() for row in spec_rows})
    return {
        **run.header(),
        "seed": run.seed,
        "size": len(run.problems),
        "models": models,
        "strategies": strategies,
    }


COLUMNS = [
    ("strategy", "strategy", "{}"),
    ("problems", "problems", "{}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("pass@1", "pass_at_1", "{:.3f}"),
    ("visible pass", "visible_pass_rate", "{:.3f}"),
    ("coverage", "coverage", "{:.3f}"),
    ("samples/problem", "samples_per_problem", "{:.1f}"),
    ("prompt tok/problem", "prompt_tokens_per_problem", "{:.0f}"),
    ("reasoning tok/problem", "reasoning_tokens_per_problem", "{:.0f}"),
    ("completion tok/problem", "completion_tokens_per_problem", "{:.0f}"),
    ("s/problem", "seconds_per_problem", "{:.2f}"),
    ("$ total", "usd_total", "{:.4f}"),
]


def visible_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """For code problems: how often the answer passed the checks the strategy saw (graded
    separately by the hidden tests), and which checks those were."""
    seen = [row for row in rows if "visible_passed" in row]
    if not seen:
        return {}
    kinds = Counter(str(row["visible_checks"]) for row in seen)
    return {
        "visible_pass_rate": sum(bool(row["visible_passed"]) for row in seen) / len(seen),
        "checks_seen": ", ".join(f"{kind} ({n} problems)" for kind, n in kinds.most_common()),
    }


def table_rows(data: dict[str, Any]) -> list[list[str]]:
    out = []
    for s in data["strategies"]:
        values = {**s, "pass_at_1": s["pass_at_k"].get("1")}
        out.append(
            [fmt.format(values[key]) if values.get(key) is not None else "" for _, key, fmt in COLUMNS]
        )
    return out


def write_outputs(run: BenchRun, data: dict[str, Any]) -> None:
    """summary.json, summary.md, summary.csv and accuracy_vs_tokens.png in the out dir."""
    (run.out / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
    header = [title for title, _, _ in COLUMNS]
    body = table_rows(data)
    with (run.out / "summary.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([key for _, key, _ in COLUMNS] + ["pass_at_k", "majority_at_k"])
        for s in data["strategies"]:
            values = {**s, "pass_at_1": s["pass_at_k"].get("1")}
            writer.writerow(
                [values.get(key) for _, key, _ in COLUMNS]
                + [json.dumps(s["pass_at_k"]), json.dumps(s["majority_at_k"])]
            )
    config = f" {json.dumps(data['dataset_config'])}" if data["dataset_config"] else ""
    budget = ", ".join(f"{k}={v}" for k, v in data["budget"].items()) or "none"
    total = data.get("total_budget")
    spending = ", ".join(f"`{s['strategy']}` {s['completion_tokens_total']}" for s in data["strategies"])
    lines = [
        f"# {data['dataset']}{config}",
        "",
        f"{data['size']} problems · seed {data['seed']} · model {', '.join(data['models']) or '?'} · "
        f"max {data['max_tokens']} tokens per sample · budget {budget}",
        *(["", f"total budget {total} tokens per strategy; spent {spending}"] if total else []),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(row) + " |" for row in body),
        "",
        "pass@k (unbiased estimator over each strategy's samples) and majority@k:",
        "",
    ]
    for s in data["strategies"]:
        passes = ", ".join(f"pass@{k} {v:.3f}" for k, v in s["pass_at_k"].items() if v is not None)
        majors = ", ".join(f"maj@{k} {v:.3f}" for k, v in s["majority_at_k"].items())
        lines.append(f"- `{s['strategy']}`: {passes}; {majors}")
    if seen := next((s["checks_seen"] for s in data["strategies"] if s.get("checks_seen")), None):
        lines += [
            "",
            f"Strategies saw only the visible checks: {seen}. `accuracy` and pass@k are graded by the "
            "hidden tests, which no strategy saw; `visible pass` is the answer's pass rate on the "
            "visible checks.",
        ]
    (run.out / "summary.md").write_text("\n".join(lines) + "\n")
    plot(data, run.out / "accuracy_vs_tokens.png")


def plot(data: dict[str, Any], path: Path) -> None:
    """Accuracy against mean completion tokens per problem (log x), one line per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    families: dict[str, list[dict[str, Any]]] = {}
    for s in data["strategies"]:
        if s["problems"]:
            families.setdefault(s["family"], []).append(s)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, members in families.items():
        members.sort(key=lambda s: s["completion_tokens_per_problem"])
        xs = [max(1.0, s["completion_tokens_per_problem"]) for s in members]
        ys = [s["accuracy"] for s in members]
        ax.plot(xs, ys, marker="o", label=name)
        varying = [k for k in members[0]["parameters"] if len({str(m["parameters"][k]) for m in members}) > 1]
        for s, x, y in zip(members, xs, ys, strict=True):
            label = ",".join(f"{k}={s['parameters'][k]}" for k in varying) or s["strategy"]
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 5), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.12)
    ax.set_xlabel("mean completion tokens per problem (log scale)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(True, which="both", alpha=0.3)
    model = ", ".join(data["models"])
    settings = ", ".join(f"{k}={json.dumps(v)}" for k, v in data["dataset_config"].items())
    config = "\n" + textwrap.fill(settings, 95) if settings else ""
    ax.set_title(f"{data['dataset']} · {data['size']} problems · {model}{config}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
