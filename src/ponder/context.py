"""What a strategy thinks with: the engine, the request's meter, its trace and an optional
verifier. Nested strategies get a child context that shares all of them but writes its
nodes under the parent's node."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ponder.budget import Meter
from ponder.engines.base import Completion, Engine, GenerationRequest
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

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """Generate through the engine, clamped to the samples budget; the engine charges
        tokens, this charges samples."""
        left = self.meter.samples_left()
        clamped: list[GenerationRequest] = []
        for req in requests:
            n = int(min(req.n, left)) if not math.isinf(left) else req.n
            left -= n
            if n >= 1:
                clamped.append(replace(req, n=n))
        if not clamped or self.meter.exhausted():
            return [[] for _ in requests]
        results = await self.engine.generate(clamped, meter=self.meter)
        self.meter.charge(samples=sum(len(r) for r in results))
        results = results + [[] for _ in range(len(requests) - len(results))]
        return results

    async def sample(
        self,
        problem: Problem,
        n: int,
        *,
        kind: NodeKind = "sample",
        parent: str | None = None,
        **params: Any,
    ) -> list[Candidate]:
        """n solve samples, each recorded as a node with its extracted answer."""
        params.setdefault("seed", self.seed)
        (completions,) = await self.generate([self.request(problem, n=n, **params)])
        return [self.record(problem, c, kind=kind, parent=parent, index=i) for i, c in enumerate(completions)]

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
