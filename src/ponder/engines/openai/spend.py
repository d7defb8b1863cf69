"""One `generate` call's share of the meter's token and dollar budgets.

Tokens are counted when a reply is complete (a streamed one may count them only in its
last chunk), so a sample is not stopped when the budget runs out mid-flight. Instead each
request is capped, when it is sent, at an equal share of the tokens neither spent nor
reserved by requests in flight, divided among the samples not yet sent: N parallel samples
cannot spend N times the budget, and samples sent later inherit what early stoppers left.

A dollar budget with a known price becomes a token budget the same way: what is left,
less the prompts in flight, of this request and of those still to send (estimated, ~4
characters a token), divided by the price of an output token and rounded up, so samples cut by it spend
the budget (overshooting by at most a token each, plus the error of the prompt estimate)
and `meter.exhausted()` says "usd".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ponder.engines.base import Price

if TYPE_CHECKING:
    from ponder.budget import Limit, Meter


@dataclass(frozen=True)
class Grant:
    """What a request may spend: `max_tokens` per choice, and the limit that capped it (None
    when the request's own max_tokens did)."""

    max_tokens: int
    capped_by: Limit | None
    reserved: int = 0  # output tokens held back from requests sent while this one runs
    prompt: int = 0  # and prompt tokens (estimated), which a dollar budget pays for too


class Spend:
    def __init__(self, meter: Meter | None, samples: int, price: Price | None) -> None:
        self.meter = meter
        self.price = price
        self.waiting = samples
        self.reserved = 0
        self.reserved_prompt = 0

    def _left(self, prompt_tokens: int, requests: int) -> tuple[float, Limit]:
        """Output tokens the budgets still allow once the prompts in flight and those of
        `requests` more requests are paid for, and which budget allows the fewest."""
        meter = self.meter
        assert meter is not None
        left, limit = meter.tokens_left(), "tokens"
        usd = meter.budget.usd
        if usd is not None and self.price is not None and self.price.completion_per_million > 0:
            prompts = self.reserved_prompt + prompt_tokens * requests
            dollars = usd - meter.usd - self.price.cost(prompts, 0)
            per_token = self.price.completion_per_million / 1e6
            affordable = math.ceil(dollars / per_token) if dollars > 0 else 0
            if affordable < left:
                left, limit = affordable, "usd"
        return left, limit  # type: ignore[return-value]

    def take(self, n: int, max_tokens: int, prompt_tokens: int) -> Grant | None:
        """The grant for a request of `n` choices whose prompt is about `prompt_tokens`, or
        None when the budget is used up (the limit is noted on the meter)."""
        meter, waiting = self.meter, max(self.waiting, n)
        self.waiting = max(0, self.waiting - n)
        if meter is None:
            return Grant(max_tokens, None)
        if meter.exhausted():
            return None
        left, limit = self._left(prompt_tokens, -(-waiting // n))  # this and the requests to come
        if math.isinf(left):
            return Grant(max_tokens, None)
        avail = int(left) - self.reserved
        if avail < 1:
            meter.note_stop(limit)
            return None
        cap = min(max_tokens, max(1, avail // waiting))
        self.reserved += cap * n
        self.reserved_prompt += prompt_tokens
        return Grant(cap, limit if cap < max_tokens else None, cap * n, prompt_tokens)

    def release(self, grant: Grant) -> None:
        self.reserved -= grant.reserved
        self.reserved_prompt -= grant.prompt

    def charge(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Tokens on the meter, and their dollars when the price is known."""
        if self.meter is not None:
            usd = 0.0 if self.price is None else self.price.cost(prompt_tokens, completion_tokens)
            self.meter.charge(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, usd=usd)
