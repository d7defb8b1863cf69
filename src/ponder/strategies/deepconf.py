"""DeepConf (Fu et al. 2025, "Deep Think with Confidence"): weigh and prune sampled
reasoning traces by the model's own token-level confidence.

    token confidence   C_i = -mean(logprobs of the top-k candidates at token i)
    group confidence   sliding-window mean of C_i over `window` tokens
    trace confidence   the lowest group confidence (one bad stretch sinks a trace)

Offline: sample n traces, keep the top eta% by trace confidence, confidence-weighted vote.
Online: `warmup` traces are sampled in full; the threshold s is their (100 - eta)th
percentile confidence. Later traces are generated in chunks of `chunk` tokens (prefill
continuation) and stopped as soon as a full window's confidence falls below s: they cost
only what they generated and do not vote. Sampling ends early when the vote of the
confident traces is settled (`consensus`, 0 turns that off) by a `ponder.stopping` rule:
by default `gain` (more traces are unlikely to raise the answer's share), or the paper's
`share` (the leader's confidence-weighted share; `stop=share,consensus=0.95,batch=4` is
its online setting); and when the leader's lead in traces exceeds the traces left. At the
latest, at n traces. With 16 traces, not the paper's 512, a 0.95 share is near unanimity,
which a small model's traces rarely reach (measured in docs/results/early-stop).

When an engine gives no top-k alternatives, the token confidence is the chosen token's
probability (exp logprob; still higher = more confident). With no logprobs at all the
strategy degrades to a plain majority vote and says so in the trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ponder.context import Candidate, Context
from ponder.engines.base import Completion, FinishReason, TokenLogprob
from ponder.extract import extract_answer
from ponder.problem import Problem
from ponder.stopping import StopRule, settled
from ponder.strategies.base import COUNT, TEMPERATURE, TOP_P, Result, Strategy
from ponder.strategies.self_consistency import note_votes
from ponder.vote import tally


def token_confidences(logprobs: list[TokenLogprob]) -> list[float]:
    out = []
    for t in logprobs:
        top = [v for v in t.top.values() if math.isfinite(v)]
        if top:
            out.append(-sum(top) / len(top))
        else:
            out.append(math.exp(t.logprob) if math.isfinite(t.logprob) else 0.0)
    return out


def lowest_group_confidence(confs: list[float], window: int, *, partial: bool = True) -> float | None:
    """Min over sliding-window means; a trace shorter than the window is one group
    (unless `partial` is False: mid-generation, only full windows are judged)."""
    if len(confs) < window:
        return sum(confs) / len(confs) if confs and partial else None
    s = sum(confs[:window])
    low = s
    for i in range(window, len(confs)):
        s += confs[i] - confs[i - window]
        low = min(low, s)
    return low / window


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Trace:
    """A trace being generated chunk by chunk."""

    index: int
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0
    finish: FinishReason = "length"
    open: bool = True
    stopped_early: bool = False
    node: str | None = None


@dataclass
class DeepConf(Strategy):
    name = "deepconf"
    summary = (
        "Confidence-filtered, confidence-weighted voting; online mode stops low-confidence traces early."
    )

    n: int = field(default=16, metadata={"help": "most traces to sample", **COUNT})
    mode: Literal["online", "offline"] = field(
        default="online", metadata={"help": "online (early stop) or offline"}
    )
    eta: float = field(
        default=90.0,
        metadata={"help": "keep the top eta% most confident traces (10 = aggressive)", "gt": 0, "le": 100},
    )
    warmup: int = field(
        default=4, metadata={"help": "online: traces sampled in full to set the threshold", **COUNT}
    )
    batch: int = field(default=2, metadata={"help": "online: traces per round after warmup", **COUNT})
    chunk: int = field(
        default=48, metadata={"help": "online: tokens generated between confidence checks", "ge": 1}
    )
    consensus: float = field(
        default=0.96,
        metadata={"help": "online: stop when the rule's score >= this (0: off; see stop)", "ge": 0, "le": 1},
    )
    stop: StopRule = field(
        default="gain",
        metadata={
            "help": "online: share (the leader's weighted share, the paper's) or a ponder.stopping rule"
        },
    )
    window: int = field(default=32, metadata={"help": "tokens per confidence group", "ge": 1})
    top_k: int = field(
        default=5,
        metadata={
            "help": "top logprobs per token for the confidence (>= 2: it compares alternatives)",
            "ge": 2,
        },
    )
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature", **TEMPERATURE})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling", **TOP_P})

    def _sampling(self) -> dict[str, Any]:
        """Every trace and chunk: sampled, with the top-k logprobs the confidence needs."""
        return {
            "logprobs": True,
            "top_logprobs": self.top_k,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }

    def confidence(self, candidate: Candidate) -> float | None:
        return self._trace_confidence(candidate.completion.logprobs)

    def _trace_confidence(self, logprobs: list[TokenLogprob] | None) -> float | None:
        return lowest_group_confidence(token_confidences(logprobs), self.window) if logprobs else None

    async def run(self, problem: Problem, ctx: Context) -> Result:
        first = self.n if self.mode == "offline" else min(self.warmup, self.n)
        warm_node = ctx.note(
            "step", f"{'traces' if self.mode == 'offline' else 'warmup'}: {first}", phase="warmup"
        )
        traces = await ctx.sample(
            problem,
            first,
            parent=warm_node,
            seed=ctx.seed,
            **self._sampling(),
        )
        confs = [self.confidence(t) for t in traces]
        known = [c for c in confs if c is not None]
        threshold: float | None = None
        if known:
            threshold = percentile(known, 100 - self.eta)
            ctx.note("note", f"confidence threshold {threshold:.4g}", parent=warm_node, threshold=threshold)
        else:
            ctx.note("note", "no token logprobs from the engine: plain majority vote")
        vote_node = self._tally_node(ctx, traces, confs, threshold, warm_node)
        if threshold is None or self.mode == "offline":
            return self._result(traces, confs, threshold, vote_node)
        rounds = 0
        while len(traces) < self.n and not ctx.meter.limit_reached():
            if self.consensus and self._settled(traces, confs, threshold):
                break
            rounds += 1
            k = min(self.batch, self.n - len(traces))
            node = ctx.note("step", f"round {rounds}: {k} traces, stop below {threshold:.4g}", phase="online")
            new = await self._online(problem, ctx, k, len(traces), threshold, node)
            if not new:
                break
            traces += new
            confs += [self.confidence(t) for t in new]
            vote_node = self._tally_node(ctx, traces, confs, threshold, node)
        return self._result(traces, confs, threshold, vote_node)

    async def _online(
        self, problem: Problem, ctx: Context, k: int, start: int, threshold: float, parent: str
    ) -> list[Candidate]:
        """k traces generated in chunks; each stops when a full window dips below the threshold."""
        live = [Trace(start + i) for i in range(k)]
        step = 0
        while any(t.open for t in live):
            todo = [t for t in live if t.open]
            requests = [
                ctx.request(
                    problem,
                    prefill=t.text,
                    max_tokens=min(self.chunk, ctx.max_tokens - t.tokens),
                    seed=ctx.seed + t.index + 7919 * step,
                    **self._sampling(),
                )
                for t in todo
            ]
            # the first chunk starts a sample (samples budget); later chunks grow its node
            results = await ctx.complete(
                requests,
                parent=parent,
                samples=step == 0,
                grow=[t.node for t in todo],
                meta=[{"index": t.index} for t in todo],
            )
            step += 1
            for t, got in zip(todo, results, strict=True):
                if not got:
                    t.open, t.finish = False, "budget"
                    continue
                t.node = got[0].node
                self._extend(t, got[0].completion, ctx.max_tokens, threshold)
            if step == 1:
                live = [t for t in live if t.node]  # never started (samples budget)
        out = []
        for t in live:
            assert t.node is not None
            done = Completion(t.text, t.finish, t.prompt_tokens, t.tokens, t.seconds, logprobs=t.logprobs)
            conf = self._trace_confidence(t.logprobs)
            answer = extract_answer(t.text, problem.format)
            ctx.trace.update(
                t.node,
                answer=answer,
                meta={
                    "finish_reason": t.finish,
                    "confidence": conf,
                    "stopped_early": t.stopped_early,
                    "chunks": step,
                },
            )
            out.append(Candidate(t.text, answer, done, t.node))
        return out

    def _extend(self, t: Trace, got: Completion, max_tokens: int, threshold: float) -> None:
        t.text += got.text
        t.tokens += got.completion_tokens
        t.prompt_tokens = t.prompt_tokens or got.prompt_tokens
        t.seconds += got.seconds
        t.logprobs += got.logprobs or []
        if got.finish_reason != "length" or t.tokens >= max_tokens or not got.completion_tokens:
            t.open, t.finish = False, got.finish_reason
            return
        low = lowest_group_confidence(token_confidences(t.logprobs), self.window, partial=False)
        if low is not None and low < threshold:
            t.open, t.stopped_early, t.finish = False, True, "budget"

    def _voters(
        self, traces: list[Candidate], confs: list[float | None], threshold: float | None
    ) -> list[tuple[Candidate, float]]:
        """Finished traces with an answer at or above the confidence threshold."""
        pool = [
            (i, t, c if c is not None else 1.0)
            for i, (t, c) in enumerate(zip(traces, confs, strict=True))
            if t.finished and t.answer and (threshold is None or c is None or c >= threshold)
        ]
        if self.mode == "offline" and threshold is not None:  # keep exactly the top eta%
            keep = max(1, math.ceil(len(traces) * self.eta / 100))
            pool = sorted(sorted(pool, key=lambda itc: -itc[2])[:keep])  # back in generation order
        return [(t, c) for _, t, c in pool]

    def _settled(self, traces: list[Candidate], confs: list[float | None], threshold: float) -> bool:
        """Whether the confident traces' vote is settled (ponder.stopping), so the traces
        still allowed need not be sampled."""
        pool = self._voters(traces, confs, threshold)
        answers = [t.answer for t, _ in pool]
        weighted = tally(answers, (w for _, w in pool))
        stop, _ = settled(tally(answers), self.n - len(traces), self.stop, self.consensus, weighted=weighted)
        return stop is not None

    def _tally_node(
        self,
        ctx: Context,
        traces: list[Candidate],
        confs: list[float | None],
        threshold: float | None,
        parent: str,
    ) -> str:
        pool = self._voters(traces, confs, threshold)
        votes = tally((t.answer for t, _ in pool), (w for _, w in pool))
        return note_votes(
            ctx,
            votes,
            len(pool),
            ".4g",
            parent=parent,
            traces=len(traces),
            confidences=[None if c is None else round(c, 4) for c in confs],
            dropped=[i for i, t in enumerate(traces) if all(t is not v for v, _ in pool)],
        )

    def _result(
        self, traces: list[Candidate], confs: list[float | None], threshold: float | None, node: str
    ) -> Result:
        pool = self._voters(traces, confs, threshold)
        if not pool:  # nothing confident and finished: fall back to whatever answered (anytime)
            pool = [(t, 1.0) for t in traces if t.answer]
        if not pool:
            return Result(None, traces[0].text if traces else "", node=node)
        votes = tally((t.answer for t, _ in pool), (w for _, w in pool))
        chosen = max((tc for tc in pool if tc[0].answer == votes.winner), key=lambda tc: tc[1])[0]
        return Result(
            votes.winner,
            chosen.text,
            score=votes.share(),
            node=node,
            response_tokens=chosen.completion.completion_tokens,
        )
