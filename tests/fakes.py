"""A scripted engine for testing strategies' control flow without a model.

Real-model tests prove the product works; this one proves a strategy's branching (stop
when tests pass, votes add up) on outputs a small model would rarely produce on demand.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence

from ponder.budget import Meter
from ponder.engines.base import Completion, GenerationRequest, OnCompletion, OnDelta, Price, TokenLogprob
from ponder.trace import collect

__all__ = ["ScriptedEngine", "collect", "prompt_words"]

Script = Callable[[GenerationRequest, int], str] | Sequence[str]


def prompt_words(request: GenerationRequest) -> int:
    """A scripted engine's prompt tokens: one per whitespace-separated word."""
    texts = [m["content"] for m in request.messages or []] + [request.prompt or ""]
    return sum(len(text.split()) for text in texts)


class ScriptedEngine:
    """Returns scripted texts in order (cycling), or what a function of (request, index)
    returns; one token per whitespace-separated word; charges the meter like a real engine.

    `logprob` is every token's logprob, or a function of the sample's text giving it; `tops`,
    when given, are the tokens' top candidates instead (a verifier reading Yes/No odds).
    `before`, when given, is awaited with each request first (it may hold it back or raise)."""

    model = "scripted"
    price = Price(1.0, 2.0)
    chat = True

    def __init__(
        self,
        script: Script,
        *,
        logprob: float | Callable[[str], float] = -0.1,
        tops: Sequence[dict[str, float]] | None = None,
        before: Callable[[GenerationRequest], Awaitable[None]] | None = None,
    ) -> None:
        self.script = script
        self.before = before
        self.calls: list[GenerationRequest] = []
        self.batches: list[list[GenerationRequest]] = []  # each generate call's requests
        self.logprob = logprob
        self.tops = None if tops is None else list(tops)
        self._texts = itertools.cycle(script) if not callable(script) else None
        self._count = 0

    def text(self, request: GenerationRequest, sample: int) -> str:
        """The next scripted text (`sample` is its index within `request`, for a subclass
        whose answers depend on it)."""
        return self.script(request, self._count) if callable(self.script) else next(self._texts)  # type: ignore[arg-type]

    def _logprobs(self, text: str, words: list[str]) -> list[TokenLogprob]:
        if self.tops is not None:
            return [TokenLogprob(max(top, key=top.__getitem__), max(top.values()), top) for top in self.tops]
        logprob = self.logprob(text) if callable(self.logprob) else self.logprob
        return [TokenLogprob(w, logprob) for w in words]

    async def generate(
        self,
        requests: Sequence[GenerationRequest],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
        on_delta: OnDelta | None = None,
    ) -> list[list[Completion]]:
        out: list[list[Completion]] = []
        self.batches.append(list(requests))
        for r, req in enumerate(requests):
            if self.before is not None:
                await self.before(req)
            self.calls.append(req)
            prompt_tokens = prompt_words(req)
            if meter is not None:
                meter.charge(prompt_tokens=prompt_tokens, usd=self.price.cost(prompt_tokens, 0))
            group = []
            for _ in range(req.n):
                if meter is not None and meter.exhausted():
                    group.append(Completion("", "budget", prompt_tokens, 0))
                    continue
                text = self.text(req, len(group))
                self._count += 1
                words = text.split()[: req.max_tokens]
                tokens = len(words)
                finish = "length" if len(text.split()) > req.max_tokens else "stop"
                if meter is not None:
                    meter.charge(completion_tokens=tokens, usd=self.price.cost(0, tokens))
                written = " ".join(words) if finish == "length" else text
                logprobs = self._logprobs(written, words) if req.logprobs else None
                completion = Completion(written, finish, prompt_tokens, tokens, logprobs=logprobs)
                if on_delta is not None and completion.text:
                    on_delta(r, len(group), completion.text)
                if on_completion is not None:
                    on_completion(r, len(group), completion)
                group.append(completion)
            out.append(group)
        return out

    async def aclose(self) -> None:
        return None
