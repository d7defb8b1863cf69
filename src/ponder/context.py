"""What a strategy thinks with: the engine, the request's meter, its trace and an optional
verifier. Nested strategies get a child context that shares all of them but writes its
nodes under the parent's node."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ponder.budget import Meter
from ponder.engines.base import Completion, Engine, GenerationRequest, OnCompletion
from ponder.extract import extract_answer
from ponder.problem import Problem
from ponder.prompts import solve_messages, solve_prompt
from ponder.trace import NodeKind, Trace
from ponder.verifiers.base import Verdict, Verifier


@dataclass
class Candidate:
    """One sampled response with what was extracted from it."""

    text: str
    answer: str | None
    completion: Completion
    node: str

    @property
    def finished(self) -> bool:
        return self.completion.finish_reason in ("stop", "length")

    @property
    def mean_logprob(self) -> float | None:
        lps = self.completion.logprobs
        return sum(t.logprob for t in lps) / len(lps) if lps else None


@dataclass
class Context:
    engine: Engine
    meter: Meter
    trace: Trace
    verifier: Verifier | None = None
    parent: str | None = None
    seed: int = 0
    max_tokens: int = 512

    def child(self, parent: str | None) -> Context:
        return replace(self, parent=parent)

    @property
    def chat(self) -> bool:
        return bool(getattr(self.engine, "chat", True))

    def note(self, kind: NodeKind, text: str = "", **fields: Any) -> str:
        """Add a node under this context's parent (unless `parent` is given)."""
        fields.setdefault("parent", self.parent)
        return self.trace.add(kind, text, **fields)

    def request(self, problem: Problem, **params: Any) -> GenerationRequest:
        """A solve request for the problem, chat or raw as the engine wants."""
        params.setdefault("max_tokens", self.max_tokens)
        if not self.chat:
            params.setdefault("stop", ("\nQuestion:",))
            return GenerationRequest(prompt=solve_prompt(problem), **params)
        return GenerationRequest(messages=solve_messages(problem), **params)

    async def generate(
        self, requests: Sequence[GenerationRequest], on_completion: OnCompletion | None = None
    ) -> list[list[Completion]]:
        """Generate through the engine, clamped to the samples budget; the engine charges
        tokens, this charges samples. `on_completion` gets the caller's request indices."""
        left = self.meter.samples_left()
        clamped: list[GenerationRequest] = []
        index: list[int] = []  # clamped request -> caller's request
        for i, req in enumerate(requests):
            n = int(min(req.n, left)) if not math.isinf(left) else req.n
            left -= n
            if n >= 1:
                clamped.append(replace(req, n=n))
                index.append(i)
        results: list[list[Completion]] = [[] for _ in requests]
        if not clamped or self.meter.exhausted():
            return results
        relay = None
        if on_completion is not None:
            callback = on_completion

            def relay(request: int, sample: int, completion: Completion) -> None:
                callback(index[request], sample, completion)

        produced = await self.engine.generate(clamped, meter=self.meter, on_completion=relay)
        self.meter.charge(samples=sum(len(r) for r in produced))
        for i, row in zip(index, produced, strict=False):
            results[i] = row
        return results

    async def sample(
        self,
        problem: Problem,
        n: int,
        *,
        kind: NodeKind = "sample",
        parent: str | None = None,
        greedy: int = 0,
        **params: Any,
    ) -> list[Candidate]:
        """n solve samples, each recorded as a node (with its extracted answer) the moment
        it finishes, so a crash mid-batch keeps the samples already thought. The first
        `greedy` of them are decoded at temperature 0 (in the same batch), the rest with
        `params`; sampled seeds start at `seed` either way."""
        params.setdefault("seed", self.seed)
        greedy = min(greedy, n)
        requests = [self.request(problem, n=n - greedy, **params)] if n > greedy else []
        if greedy:
            requests.insert(0, self.request(problem, n=greedy, **{**params, "temperature": 0.0}))
        first = [0, greedy] if greedy else [0]  # request -> index of its first sample
        recorded: dict[int, Candidate] = {}

        def record(r: int, i: int, completion: Completion) -> Candidate:
            j = first[r] + i
            tag = {"greedy": True} if greedy and r == 0 else {}
            return self.record(problem, completion, kind=kind, parent=parent, index=j, **tag)

        def record_now(r: int, i: int, completion: Completion) -> None:
            recorded[first[r] + i] = record(r, i, completion)

        groups = await self.generate(requests, on_completion=record_now)
        return [
            recorded.get(first[r] + i) or record(r, i, c)
            for r, group in enumerate(groups)
            for i, c in enumerate(group)
        ]

    def record(
        self,
        problem: Problem,
        completion: Completion,
        *,
        kind: NodeKind = "sample",
        parent: str | None = None,
        **meta: Any,
    ) -> Candidate:
        answer = extract_answer(completion.text, problem.format)
        node = self.note(
            kind,
            completion.text,
            parent=parent if parent is not None else self.parent,
            answer=answer,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            seconds=completion.seconds,
            finish_reason=completion.finish_reason,
            **meta,
        )
        return Candidate(completion.text, answer, completion, node)

    async def verify(self, problem: Problem, text: str, node: str, verifier: Verifier) -> tuple[Verdict, str]:
        """Run the verifier on `text` and record its verdict under `node`; returns the
        verdict and its own node (a revision hangs from it)."""
        verdict = await verifier.verify(problem, text)
        verdict_node = self.note(
            "verdict",
            verdict.feedback,
            parent=node,
            score=verdict.score,
            passed=verdict.passed,
            verifier=verifier.name,
        )
        return verdict, verdict_node
