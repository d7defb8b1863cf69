"""One metered, recorded generation call: the engine work behind `Context.complete`.

- waves: at most `WAVE` samples per engine call, n clamped to the samples and tokens left
  and each request's `max_tokens` to the tokens left, the budget checked between waves;
- nodes that grow: a sample is a trace node from its first delta (`meta["open"]`), its
  text updated as it is written (throttled by `Trace`), closed with its tokens, answer
  and finish reason; a cancel (or an engine error) closes it as "cancelled" ("error")
  with the text it had;
- tokens where they were spent: each call charges its own `Meter.tab()`; completion
  tokens go on each sample's node; a request's prompt tokens on the first of its nodes to
  close (an engine evaluates a prompt once for its n samples), or on every sample's node
  when the call charged them once per sample (an HTTP engine that fans n out); whatever
  no completion reports goes on the call's first node (`meta["unattributed"]`), or on one
  empty node when the call wrote none. So the nodes add up to the meter;
- prompts: each distinct request as sent (with the engine's `render` when it has one) is
  kept once on the trace and named by its nodes' `meta["prompt"]`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ponder.budget import Meter
from ponder.engines.base import Completion, Engine, GenerationRequest
from ponder.extract import extract_answer
from ponder.problem import Problem
from ponder.trace import NodeKind, Trace

#: most samples asked of the engine in one call: a deadline or a spent budget is checked
#: between calls, so `n=100000` stops within one wave of its limit
WAVE = 64


@dataclass
class Generated:
    """One generated sample and its trace node; `index` is its sample index within the
    caller's request (waves included)."""

    completion: Completion
    node: str
    request: int
    index: int


async def generate_recorded(
    requests: Sequence[GenerationRequest],
    *,
    engine: Engine,
    meter: Meter,
    trace: Trace,
    kind: NodeKind,
    parents: Sequence[str | None],
    metas: Sequence[Mapping[str, Any]],
    grow: Sequence[str | None] | None,
    problem: Problem | None,
    samples: bool,
    lead: str,
) -> list[list[Generated]]:
    """`Context.complete`'s work, with its options one per request."""
    run = _Call(trace, meter, engine, kind, samples, problem, lead)
    grows = list(grow) if grow is not None else [None] * len(requests)
    results: list[list[Generated]] = [[] for _ in requests]
    todo = [(i, 0, r.n) for i, r in enumerate(requests)]  # (request, first sample, samples)
    starts = [sum(r.n for r in requests[:i]) for i in range(len(requests))]
    while todo:
        if (limit := meter.limit_reached(samples=samples)) is not None:
            meter.note_stop(limit)
            break
        room = min(WAVE, meter.tokens_left())
        if samples:
            room = min(room, meter.samples_left())
        if room < 1:
            meter.note_stop("samples" if samples and meter.samples_left() < 1 else "tokens")
            break
        wave: list[tuple[int, int, int]] = []
        while todo and room >= 1:
            i, first, n = todo[0]
            k = int(min(n, room))
            wave.append((i, first, k))
            room -= k
            if k == n:
                todo.pop(0)
            else:
                todo[0] = (i, first + k, n - k)
        sub = [_piece(requests[i], first, k, meter.tokens_left()) for i, first, k in wave]
        heads = [
            _Head(i, first, starts[i] + first, parents[i], metas[i], grows[i], requests[i])
            for i, first, _ in wave
        ]
        for head, generated in zip(heads, await run.wave(sub, heads), strict=True):
            results[head.request] += generated
    return results


@dataclass
class _Head:
    """Where one engine request's samples go: the caller's request and its first sample
    there, parent, meta and (for a continuation) the node it grows."""

    request: int
    first: int
    position: int  # of its first sample among all the samples the caller asked for
    parent: str | None
    meta: Mapping[str, Any]
    grow: str | None
    asked: GenerationRequest  # as the caller wrote it (a wave may cap its max_tokens)


@dataclass
class _Open:
    """A sample being written: its node and what it had before this generation."""

    node: str
    base: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    written: str = ""
    closed: bool = False
    sibling_prompt: int = 0  # prompt tokens its completion reports, not put on it (a sibling has them)


@dataclass
class _Call:
    """One `Context.complete`: the engine calls (waves) and the nodes they write."""

    trace: Trace
    meter: Meter
    engine: Engine
    kind: NodeKind
    samples: bool
    problem: Problem | None
    lead: str
    open: dict[tuple[int, int], _Open] = field(default_factory=dict)
    heads: list[_Head] = field(default_factory=list)

    async def wave(self, requests: list[GenerationRequest], heads: list[_Head]) -> list[list[Generated]]:
        trace, tab = self.trace, self.meter.tab(samples=self.samples)
        keys = [trace.add_prompt(_payload(self.engine, r)) for r in requests]
        self.open, self.heads = {}, heads
        priced: set[int] = set()  # engine requests whose prompt tokens are on a node
        out: list[list[Generated]] = [[] for _ in requests]

        def start(r: int, s: int, text: str) -> _Open:
            head = heads[r]
            if head.grow is not None:
                node = trace.get(head.grow)
                state = _Open(head.grow, node.text, node.prompt_tokens, node.completion_tokens, node.seconds)
                trace.update(head.grow, text=node.text + text, meta={"open": True}, throttle=True)
            else:
                node_id = trace.add(
                    self.kind,
                    self.lead + text,
                    parent=head.parent,
                    **{"index": head.position + s, **head.meta, "prompt": keys[r], "open": True},
                )
                state = _Open(node_id, self.lead)
            state.written = text
            self.open[r, s] = state
            return state

        def on_delta(r: int, s: int, text: str) -> None:
            state = self.open.get((r, s))
            if state is None:
                if text:
                    start(r, s, text)
            elif not state.closed:
                state.written += text
                trace.update(state.node, text=state.base + state.written, throttle=True)

        def on_completion(r: int, s: int, c: Completion) -> None:
            state = self.open.get((r, s))
            if state is None:
                if not _generated(c) and not (c.error and s == 0):
                    return  # never started: no node, no sample
                state = start(r, s, "")
            if state.closed:
                return
            state.closed = True
            if c.finish_reason == "length" and requests[r].max_tokens < heads[r].asked.max_tokens:
                c = replace(c, finish_reason="budget")  # cut by the tokens left, not its own cap
            prompt = c.prompt_tokens if r not in priced else 0
            state.sibling_prompt = c.prompt_tokens - prompt
            priced.add(r)
            text = state.base + c.text
            fields: dict[str, Any] = {
                "text": text,
                "prompt_tokens": state.prompt_tokens + prompt,
                "completion_tokens": state.completion_tokens + c.completion_tokens,
                "seconds": state.seconds + c.seconds,
            }
            if self.problem is not None:
                fields["answer"] = extract_answer(text, self.problem.format)
            meta: dict[str, Any] = {"open": False, "finish_reason": c.finish_reason}
            if c.error:
                meta["error"] = c.error
            if c.usage_estimated:
                meta["usage_estimated"] = True
            trace.update(state.node, meta=meta, **fields)
            out[r].append(Generated(c, state.node, heads[r].request, heads[r].first + s))

        try:
            groups = await _generate(self.engine, requests, tab, on_completion, on_delta)
        except BaseException as exc:
            self._settle(tab, "cancelled" if isinstance(exc, asyncio.CancelledError) else "error")
            raise
        for r, group in enumerate(groups):
            for s, c in enumerate(group):
                on_completion(r, s, c)  # engines that do not call back, and any they missed
        self._settle(tab, "budget")
        if self.samples:
            self.meter.charge(samples=sum(_generated(g.completion) for row in out for g in row))
        for row in out:
            row.sort(key=lambda g: g.index)
        return out

    def _settle(self, tab: Meter, cut_by: str) -> None:
        """Close what a cancel left open and put on nodes whatever the call charged that no
        closed node carries, so the nodes add up to the meter: a cancelled sample gets its
        share of the tokens by the text it wrote, anything else goes on the call's first node."""
        trace = self.trace
        states = list(self.open.values())
        cut = [s for s in states if not s.closed]
        grew = [(trace.get(s.node), s) for s in states]  # what this call added to each node
        prompt = tab.prompt_tokens - sum(n.prompt_tokens - s.prompt_tokens for n, s in grew)
        completion = tab.completion_tokens - sum(n.completion_tokens - s.completion_tokens for n, s in grew)
        siblings = [s for s in states if s.closed and s.sibling_prompt]
        if prompt > 0 and prompt == sum(s.sibling_prompt for s in siblings):
            # the engine evaluated the prompt once per sample (an HTTP engine fanning n out
            # as single requests), not once per request: each sample's node carries its own
            for state in siblings:
                node = trace.get(state.node)
                trace.update(state.node, prompt_tokens=node.prompt_tokens + state.sibling_prompt)
            prompt = 0
        shares = _split(max(0, completion), [len(s.written) for s in cut])
        for i, (state, share) in enumerate(zip(cut, shares, strict=True)):
            state.closed = True
            node = trace.get(state.node)
            trace.update(
                state.node,
                completion_tokens=node.completion_tokens + share,
                prompt_tokens=node.prompt_tokens + (max(0, prompt) if i == 0 else 0),
                meta={"open": False, "finish_reason": cut_by, "tokens_estimated": True},
            )
        completion -= sum(shares)
        prompt = min(0, prompt) if cut else prompt
        if prompt or completion:
            extra: dict[str, Any] = {
                "unattributed": {"prompt_tokens": prompt, "completion_tokens": completion}
            }
            if states:
                node = grew[0][0]
                trace.update(
                    node.id,
                    prompt_tokens=node.prompt_tokens + prompt,
                    completion_tokens=node.completion_tokens + completion,
                    meta=extra,
                )
            else:
                first = next(iter(self.heads), None)
                self.trace.add(
                    self.kind,
                    "",
                    parent=first.parent if first else None,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    finish_reason="budget",
                    open=False,
                    **extra,
                )
        trace.flush(s.node for s in states)


def _split(total: int, weights: list[int]) -> list[int]:
    """`total` in whole parts proportional to `weights` (largest remainders; equal parts
    when every weight is 0)."""
    if not weights:
        return []
    weights = weights if any(weights) else [1] * len(weights)
    exact = [total * w / sum(weights) for w in weights]
    parts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: parts[i] - exact[i])[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _generated(c: Completion) -> bool:
    """Whether a completion is a sample that was generated (not one the budget or an
    error stopped before it began)."""
    return bool(c.text or c.completion_tokens) or c.finish_reason in ("stop", "length")


def _piece(req: GenerationRequest, first: int, n: int, tokens_left: float) -> GenerationRequest:
    """Samples first..first+n of a request: seeds continue where the last wave stopped,
    `max_tokens` is capped at the tokens left (so one sample cannot overshoot them)."""
    seed = None if req.seed is None else req.seed + first
    cap = req.max_tokens if math.isinf(tokens_left) else max(1, min(req.max_tokens, int(tokens_left)))
    return replace(req, n=n, seed=seed, max_tokens=cap)


def _payload(engine: Engine, req: GenerationRequest) -> dict[str, Any]:
    """A request as sent, for the trace's prompts: what the model saw and how it sampled."""
    payload: dict[str, Any] = {
        "model": engine.model,
        "messages" if req.messages is not None else "prompt": (
            [dict(m) for m in req.messages] if req.messages is not None else req.prompt
        ),
        "prefill": req.prefill,
        "n": req.n,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": req.top_k,
        "min_p": req.min_p,
        "stop": list(req.stop),
        "seed": req.seed,
        "logprobs": req.logprobs,
        "top_logprobs": req.top_logprobs,
    }
    render = getattr(engine, "render", None)
    if callable(render):
        try:
            payload["rendered"] = str(render(req))
        except (ValueError, TypeError, RuntimeError) as exc:  # the engine will report it too
            payload["render_error"] = str(exc)
    return payload


async def _generate(
    engine: Engine,
    requests: Sequence[GenerationRequest],
    meter: Meter,
    on_completion: Callable[[int, int, Completion], None],
    on_delta: Callable[[int, int, str], None],
) -> list[list[Completion]]:
    if _streams(type(engine)):
        return await engine.generate(requests, meter=meter, on_completion=on_completion, on_delta=on_delta)
    legacy: Callable[..., Awaitable[list[list[Completion]]]] = engine.generate
    return await legacy(requests, meter=meter, on_completion=on_completion)


@functools.cache
def _streams(engine_type: type) -> bool:
    """Whether an engine takes `on_delta`: one written before the hook existed (a user's
    own engine) still works, its samples appearing when they finish."""
    try:
        params = inspect.signature(engine_type.generate).parameters  # type: ignore[attr-defined]
    except (TypeError, ValueError, AttributeError):
        return True
    return "on_delta" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
