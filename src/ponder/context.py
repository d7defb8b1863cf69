"""What a strategy thinks with: the engine, the request's meter, its trace and an optional
verifier. Nested strategies get a child context that shares all of them but writes its
nodes under the parent's node.

One meter for every token: everything that generates (samples, steps, critiques,
revisions, continuations, a judge's or a reward model's verdicts) goes through
`Context.complete`, which charges the request's meter and writes each sample as a trace
node from its first text (`ponder.generation`), so a request's usage is the sum of its
trace's node tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ponder.budget import Meter
from ponder.engines.base import Completion, Engine, GenerationRequest
from ponder.generation import Generated, generate_recorded
from ponder.problem import Problem
from ponder.prompts import solve_messages, solve_prompt
from ponder.trace import NodeKind, Trace
from ponder.verifiers.base import Verdict, Verifier
from ponder.verifiers.model import generating_through


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

    async def complete(
        self,
        requests: Sequence[GenerationRequest],
        *,
        kind: NodeKind = "sample",
        parent: str | Sequence[str | None] | None = None,
        problem: Problem | None = None,
        samples: bool = True,
        engine: Engine | None = None,
        grow: Sequence[str | None] | None = None,
        lead: str = "",
        meta: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> list[list[Generated]]:
        """Generate `requests` and record each sample as a `kind` node under `parent` (one
        for all, or one per request; default: this context's parent), written when its
        first text arrives, grown as it is written and closed when it finishes. Returns,
        per request, the samples that were generated (never-started ones are left out).

        `problem`: extract each node's answer from its text. `samples`: whether these
        count against the samples budget (continuations and verdicts do not). `engine`: a
        different engine (a judge's), still on this request's meter and trace. `grow`: per
        request, a node this generation continues (its text is appended, its tokens
        added) instead of a new node. `lead`: text ponder wrote before the generated text
        (budget forcing's "Wait"), shown at the start of each new node. `meta`: one dict
        for all nodes or one per request.
        """
        n = len(requests)
        parents = [parent] * n if parent is None or isinstance(parent, str) else list(parent)
        return await generate_recorded(
            requests,
            engine=engine or self.engine,
            meter=self.meter,
            trace=self.trace,
            kind=kind,
            parents=[p or self.parent for p in parents],
            metas=[meta or {}] * n if meta is None or isinstance(meta, Mapping) else list(meta),
            grow=grow,
            problem=problem,
            samples=samples,
            lead=lead,
        )

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
        """n solve samples, each a node (with its extracted answer) from its first token.
        The first `greedy` of them are decoded at temperature 0 (in the same batch), the
        rest with `params`; sampled seeds start at `seed` either way."""
        params.setdefault("seed", self.seed)
        greedy = min(greedy, n)
        requests = [self.request(problem, n=n - greedy, **params)] if n > greedy else []
        metas: list[dict[str, Any]] = [{}] * len(requests)
        if greedy:
            requests.insert(0, self.request(problem, n=greedy, **{**params, "temperature": 0.0}))
            metas.insert(0, {"greedy": True})
        groups = await self.complete(requests, kind=kind, parent=parent, problem=problem, meta=metas)
        return [self.candidate(g) for group in groups for g in group]

    def candidate(self, generated: Generated) -> Candidate:
        node = self.trace.get(generated.node)
        return Candidate(node.text, node.answer, generated.completion, generated.node)

    async def verify(self, problem: Problem, text: str, node: str, verifier: Verifier) -> tuple[Verdict, str]:
        """Run the verifier on `text` and record its verdict under `node`; returns the
        verdict and its own node (a revision hangs from it). A model-based verifier
        generates through this context: its tokens meet the meter and become "critique"
        nodes under the verdict."""
        verdict_node = self.note("verdict", "", parent=node, verifier=verifier.name, open=True)

        async def through(engine: Engine, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
            groups = await self.complete(
                requests, kind="critique", parent=verdict_node, samples=False, engine=engine,
                meta={"verifier": verifier.name},
            )  # fmt: skip
            return [[g.completion for g in group] for group in groups]

        try:
            with generating_through(through):
                verdict = await verifier.verify(problem, text)
        except BaseException as exc:
            self.trace.update(verdict_node, meta={"open": False, "error": f"{type(exc).__name__}: {exc}"})
            raise
        self.trace.update(
            verdict_node,
            text=verdict.feedback,
            score=verdict.score,
            meta={"passed": verdict.passed, "open": False},
        )
        return verdict, verdict_node
