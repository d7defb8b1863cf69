"""`ponder fix`: make a repository's checks pass with patches from a model, never touching
the repository itself until asked.

    files    = read(repo)                         # into memory; checks run on sandboxed copies
    baseline = run(checks, files)
    current  = files
    for attempt in 1..max_attempts, within the budget:
        failing = checks that fail on current
        if none: break
        reply   = model(relevant files of current, failing output, last error)
        diff    = patch(reply)                    # a unified diff, or a ```python block made into one
        after   = apply(diff, current)            # by content; a reply that does not apply is fed back
        runs    = run(checks, after)
        broken  = checks that passed on baseline and fail now
        if not broken and more checks pass than on current: current = after   # build on progress
    best = current; patch = diff(files, best)

Invariant: a patch that breaks a check that passed before is never reported as a fix
(it is never adopted as `current`, and the report compares the best state with the
baseline check by check). The trace is a chain: the baseline's verdict, then for each
attempt its "revision" (the model's reply) and a "verdict" with every check's output (or
why the reply held no usable patch).

What the model is asked for (`ask`): "code", the corrected definitions in a ```python block
(the default: the bundled 135M model writes code, never a diff that applies; measured on
the fixtures, docs/results/fix/), or "diff", a unified diff. Either kind of reply is read
(`ponder.code.reply`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ponder.budget import Budget, Meter
from ponder.code.checks import CheckRun, default_limits, run_checks
from ponder.code.patch import PatchError, apply_patch, changed_paths, is_test_file, make_diff
from ponder.code.reply import reply_patch
from ponder.code.repo import PROMPT_CHARS, read_repo, relevant_files
from ponder.context import Context
from ponder.engines.base import Engine, GenerationRequest, Message
from ponder.sandbox import Limits
from ponder.trace import Store, Trace

Ask = Literal["code", "diff"]
FIX_SYSTEM: dict[Ask, str] = {
    "diff": (
        "You fix bugs in a Python repository. Reply with a unified diff in one ```diff code block: "
        "'--- a/PATH' and '+++ b/PATH' headers, then '@@' hunks whose context and '-' lines are copied "
        "exactly from the file. Change only what makes the failing checks pass."
    ),
    "code": (
        "You fix bugs in a Python repository. Reply with the corrected function (or class) in one "
        "```python code block, written out whole. Change only what makes the failing checks pass; "
        "do not change the tests."
    ),
}
FIX_ASK: dict[Ask, tuple[str, str]] = {  # the last line of the prompt, and the reply's start
    "diff": ("Write the unified diff that fixes them.", "```diff\n"),
    "code": ("Write the corrected code.", "```python\n"),
}
#: characters of one check's output in a prompt (its tail: summaries and errors come last)
OUTPUT_CHARS = 1500


@dataclass
class Attempt:
    """One patch proposed by the model and what the checks said about it."""

    index: int
    response: str
    diff: str | None = None
    how: str | None = None  # how the reply was read: a unified diff, a whole file, definitions
    error: str | None = None
    runs: list[CheckRun] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    adopted: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["runs"] = [r.to_dict() for r in self.runs]
        return d


@dataclass
class FixReport:
    """What `fix` found: the checks before, every attempt, and the best patch (empty when
    nothing was an improvement) with what it fixed and what still fails."""

    root: str
    checks: list[str]
    baseline: list[CheckRun]
    attempts: list[Attempt]
    final: list[CheckRun]
    patch: str
    files_after: dict[str, str]
    trace_id: str
    usage: dict[str, Any]

    @property
    def fixed(self) -> list[str]:
        return [
            b.command for b, f in zip(self.baseline, self.final, strict=True) if not b.passed and f.passed
        ]

    @property
    def still_failing(self) -> list[str]:
        return [f.command for f in self.final if not f.passed]

    @property
    def broken(self) -> list[str]:
        return [
            b.command for b, f in zip(self.baseline, self.final, strict=True) if b.passed and not f.passed
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "checks": self.checks,
            "baseline": [r.to_dict() for r in self.baseline],
            "attempts": [a.to_dict() for a in self.attempts],
            "final": [r.to_dict() for r in self.final],
            "patch": self.patch,
            "fixed": self.fixed,
            "still_failing": self.still_failing,
            "trace_id": self.trace_id,
            "usage": self.usage,
        }


def _passing(runs: Sequence[CheckRun]) -> int:
    return sum(r.passed for r in runs)


def _outputs(failing: Sequence[CheckRun]) -> str:
    return "\n\n".join(f"$ {r.command}\n{r.output[-OUTPUT_CHARS:]}" for r in failing)


def shown_files(files: dict[str, str], failing: Sequence[CheckRun]) -> list[str]:
    """The files a fix prompt shows (within `PROMPT_CHARS`), most relevant first."""
    return relevant_files(files, _outputs(failing), PROMPT_CHARS)


def fix_request(
    files: dict[str, str],
    failing: Sequence[CheckRun],
    last_error: str | None,
    *,
    chat: bool,
    ask: Ask = "code",
    **params: Any,
) -> GenerationRequest:
    """The model sees the relevant files and each failing check's output. A raw-prompt
    engine gets the reply's opening fence as prefill."""
    outputs = _outputs(failing)
    shown = shown_files(files, failing)
    sources = "\n\n".join(f"### {p}\n```python\n{files[p].rstrip()}\n```" for p in shown)
    last_line, opening = FIX_ASK[ask]
    user = f"Repository files:\n\n{sources}\n\nFailing checks:\n\n{outputs}\n\n"
    if last_error:
        user += f"Your previous patch could not be used: {last_error}\n\n"
    user += last_line
    if chat:
        messages: list[Message] = [
            {"role": "system", "content": FIX_SYSTEM[ask]},
            {"role": "user", "content": user},
        ]
        return GenerationRequest(messages=messages, **params)
    prompt = f"{FIX_SYSTEM[ask]}\n\n{user}\n"
    return GenerationRequest(prompt=prompt, prefill=opening, stop=("\n```",), **params)


async def afix(
    root: Path,
    checks: Sequence[str],
    *,
    engine: Engine,
    budget: Budget | None = None,
    max_attempts: int = 4,
    store: Store | None = None,
    limits: Limits | None = None,
    max_tokens: int = 512,
    seed: int = 0,
    protect_tests: bool = True,
    ask: Ask = "code",
) -> FixReport:
    """Run `checks` on a copy of the repository at `root`, ask `engine` for patches until
    they pass, the attempts or the budget run out; `root` itself is only read. With
    `protect_tests` a patch that edits test files is refused (making a test pass by
    changing the test is no fix). `ask` is the form of reply the prompt asks for."""
    files = read_repo(root)
    limits = limits or default_limits()
    meter = Meter(budget or Budget())
    trace = Trace(None, store=store)
    question = f"fix {root} so that these checks pass: " + "; ".join(checks)
    if store is not None:
        store.begin_trace(
            trace.id,
            question=question,
            strategy=f"fix:attempts={max_attempts}",
            model=engine.model,
            budget=meter.budget.to_dict(),
            created_at=time.time(),
            problem={"format": "code", "has_tests": True},
        )
    root_node = trace.add("root", question, strategy="fix")
    ctx = Context(engine=engine, meter=meter, trace=trace, parent=root_node, seed=seed, max_tokens=max_tokens)
    status = "error"
    try:
        baseline = await run_checks(files, checks, limits)
        parent = _record(ctx, root_node, "baseline", baseline)
        current, current_runs = files, baseline
        attempts: list[Attempt] = []
        last_error: str | None = None
        for i in range(1, max_attempts + 1):
            failing = [r for r in current_runs if not r.passed]
            if not failing or meter.limit_reached():
                break
            request = fix_request(
                current, failing, last_error, chat=ctx.chat, ask=ask, max_tokens=max_tokens,
                temperature=0.0 if i == 1 else 0.7, top_p=0.95, seed=seed + i,
            )  # fmt: skip
            (generated,) = await ctx.complete([request], kind="revision", parent=parent, meta={"attempt": i})
            if not generated:
                break
            attempt = Attempt(i, request.prefill + generated[0].completion.text)
            attempts.append(attempt)
            try:
                shown = shown_files(current, failing)
                patch = reply_patch(attempt.response, current, shown, protect_tests=protect_tests)
                attempt.diff, attempt.how = patch.diff, patch.how
                after = apply_patch(current, patch.diff)
                if after == current:
                    raise PatchError(f"the patch changes nothing ({patch.how})")
                if protect_tests and (tests := [p for p in changed_paths(current, after) if is_test_file(p)]):
                    raise PatchError(
                        f"the patch edits tests ({', '.join(tests)}); fix the code under test instead"
                    )
            except PatchError as exc:
                attempt.error = last_error = str(exc)
                ctx.note(
                    "verdict", f"patch not applied: {exc}", parent=generated[0].node, score=0.0, passed=False
                )
                continue
            last_error = None
            attempt.runs = await run_checks(after, checks, limits)
            attempt.fixed = [
                b.command for b, r in zip(baseline, attempt.runs, strict=True) if not b.passed and r.passed
            ]
            attempt.broken = [
                b.command for b, r in zip(baseline, attempt.runs, strict=True) if b.passed and not r.passed
            ]
            attempt.adopted = not attempt.broken and _passing(attempt.runs) > _passing(current_runs)
            node = _record(ctx, generated[0].node, f"attempt {i}", attempt.runs, attempt)
            if attempt.adopted:
                current, current_runs, parent = after, attempt.runs, node
        meter.note_limit()
        report = FixReport(
            root=str(root),
            checks=list(checks),
            baseline=baseline,
            attempts=attempts,
            final=current_runs,
            patch=make_diff(files, current),
            files_after=current,
            trace_id=trace.id,
            usage={
                "prompt_tokens": meter.prompt_tokens,
                "completion_tokens": meter.completion_tokens,
                "seconds": round(meter.elapsed, 3),
                "stopped_by": meter.stopped_by,
            },
        )
        trace.add(
            "answer",
            report.patch or "no patch improved the checks",
            parent=parent,
            score=_score(current_runs),
        )
        status = "done"
        return report
    finally:
        if store is not None:
            store.finish_trace(
                trace.id,
                status=status,  # type: ignore[arg-type]
                answer=None,
                stopped_by=meter.stopped_by,
                usage={"prompt_tokens": meter.prompt_tokens, "completion_tokens": meter.completion_tokens},
                finished_at=time.time(),
            )


def _score(runs: Sequence[CheckRun]) -> float:
    return _passing(runs) / len(runs) if runs else 0.0


def _record(
    ctx: Context, parent: str, label: str, runs: Sequence[CheckRun], attempt: Attempt | None = None
) -> str:
    """A verdict node holding every check's output on one version of the repository."""
    text = "\n\n".join(
        f"$ {r.command}  [{'pass' if r.passed else 'FAIL'}]\n{r.output}".rstrip() for r in runs
    )
    extra: dict[str, Any] = {}
    if attempt is not None:
        extra = {
            "fixed": attempt.fixed,
            "broken": attempt.broken,
            "adopted": attempt.adopted,
            "how": attempt.how,
        }
        label += f" ({attempt.how})"
    return ctx.note(
        "verdict",
        f"{label}:\n{text}",
        parent=parent,
        score=_score(runs),
        passed=all(r.passed for r in runs),
        checks=[r.to_dict() for r in runs],
        **extra,
    )


def write_patch(root: Path, before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Write the files that differ between `before` and `after` under `root` (deleting the
    removed ones); refuses when a file changed on disk since it was read."""
    changed = changed_paths(before, after)
    for path in changed:
        target = root / path
        on_disk = target.read_text(encoding="utf-8") if target.is_file() else None
        if on_disk != before.get(path):
            raise PatchError(f"{path} changed on disk while ponder fix ran; nothing was written")
    for path in changed:
        target = root / path
        if path in after:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(after[path], encoding="utf-8")
        else:
            target.unlink()
    return changed
