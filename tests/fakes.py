"""A scripted engine for testing strategies' control flow without a model.

Real-model tests prove the product works; this one proves a strategy's branching (stop
when tests pass, votes add up) on outputs a small model would rarely produce on demand.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from ponder.budget import Meter
from ponder.engines.base import Completion, GenerationRequest, OnCompletion, OnDelta, Price, TokenLogprob
from ponder.trace import collect

__all__ = ["ScriptedEngine", "collect"]

Script = Callable[[GenerationRequest, int], str] | Sequence[str]


class ScriptedEngine:
    """Returns scripted texts in order (cycling), or what a function of (request, index)
    returns; one token per whitespace-separated word; charges the meter like a real engine."""

    model = "scripted"
    price = Price(1.0, 2.0)
    chat = True

    def __init__(self, script: Script, *, logprob: float = -0.1) -> None:
        self.script = script
        self.calls: list[GenerationRequest] = []
        self.logprob = logprob
        self._texts = itertools.cycle(script) if not callable(script) else None
        self._count = 0

    async def generate(
        self,
        requests: Sequence[GenerationRequest],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
        on_delta: OnDelta | None = None,
    ) -> list[list[Completion]]:
        out: list[list[Completion]] = []
        for r, req in enumerate(requests):
            self.calls.append(req)
            prompt_tokens = sum(len(m["content"].split()) for m in req.messages or []) + len(
                (req.prompt or "").split()
            )
            if meter is not None:
                meter.charge(prompt_tokens=prompt_tokens, usd=self.price.cost(prompt_tokens, 0))
            group = []
            for _ in range(req.n):
                if meter is not None and meter.exhausted():
                    group.append(Completion("", "budget", prompt_tokens, 0))
                    continue
                text = self.script(req, self._count) if callable(self.script) else next(self._texts)  # type: ignore[arg-type]
                self._count += 1
                words = text.split()[: req.max_tokens]
                tokens = len(words)
                finish = "length" if len(text.split()) > req.max_tokens else "stop"
                if meter is not None:
                    meter.charge(completion_tokens=tokens, usd=self.price.cost(0, tokens))
                logprobs = [TokenLogprob(w, self.logprob) for w in words] if req.logprobs else None
                completion = Completion(
                    " ".join(words) if finish == "length" else text,
                    finish,
                    prompt_tokens,
                    tokens,
                    logprobs=logprobs,
                )
                if on_delta is not None and completion.text:
                    on_delta(r, len(group), completion.text)
                if on_completion is not None:
                    on_completion(r, len(group), completion)
                group.append(completion)
            out.append(group)
        return out

    async def aclose(self) -> None:
        return None
