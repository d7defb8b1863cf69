"""When to stop sampling for a vote: the rules adaptive-consistency and deepconf share.

Each rule turns the votes so far and the samples still allowed into P(settled); sampling
stops once that reaches a threshold (and the leader has at least two votes), or at once
when the leader can no longer lose (its lead exceeds the samples left: more samples cannot
change the answer).

- `predictive`: P(the current leader is still the majority once all the remaining samples
  are in), under the Dirichlet-process posterior predictive of those samples (a Polya urn:
  each further vote repeats a past answer in proportion to its count, or is a new answer
  with weight `alpha`), estimated by seeded simulation. It asks the question that matters
  when the baseline is a fixed vote over all samples (will more samples change its
  answer?): it weighs every answer, not just the top two, and how many samples are left;
  with one sample left it is the exact lead rule.
- `gain`: 1 - the expected rise in the chosen answer's vote share if sampling went on to
  the end, under the same Polya urn: E[share(final winner) - share(current leader)]. It
  asks what a change would be worth, not only whether one happens: when the answers are
  scattered, more samples may well change the leader, but to another answer about as rare,
  so the vote is worth little either way and it stops; a strong rival closing in keeps it
  sampling. (The vote share stands in for P(correct): voting only helps a model whose more
  frequent answers are more often right.) Threshold 0.96: stop when going on is expected to
  add less than 4 points of share.
- `beta` (Aggarwal et al. 2023, Adaptive-Consistency's default): the leader's share among
  the top two answers is p ~ Beta(a+1, b+1) (uniform prior); P(settled) = P(p > 1/2) =
  P(Binomial(a + b + 1, 1/2) <= a), exact for whole counts. It ignores the samples left
  and every answer but the top two.
- `share` (DeepConf's consensus): the leader's share of the (weighted) vote.
- `lead`: only the cannot-lose test.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache
from math import comb
from typing import Literal

from ponder.vote import Tally

StopRule = Literal["gain", "predictive", "beta", "share", "lead"]


def settled(
    votes: Tally,
    remaining: int,
    rule: StopRule,
    threshold: float,
    alpha: float = 1.0,
    weighted: Tally | None = None,
) -> tuple[str | None, float]:
    """Why to stop now ("lead", or the rule's name), or None; and P(settled). `votes` are
    counts (one per sample); `weighted`, when the vote is weighted, is what `share` reads."""
    a, b = top_two(votes)
    counts = [round(v) for v in votes.totals.values()]
    if rule == "predictive":
        p = leader_holds(counts, remaining, alpha)
    elif rule == "gain":
        p = 1.0 - expected_gain(counts, remaining, alpha)
    elif rule == "share":
        p = (weighted or votes).share()
    else:
        p = beta_settled(a, b)
    if a > 0 and a - b > remaining:
        return "lead", p
    if rule != "lead" and a >= 2 and p >= threshold:  # one vote is no consensus
        return rule, p
    return None, p


def leader_holds(counts: list[int], remaining: int, alpha: float = 1.0, sims: int = 2000) -> float:
    """P(the first-seen largest count is still the first-seen largest after `remaining` more
    votes drawn from a Polya urn with new-answer weight `alpha`)."""
    if not any(counts):
        return 0.0
    leader = open_leader(counts, remaining)
    if leader is None:
        return 1.0  # no draw can overturn it: no need to simulate
    return _leader_holds(tuple(counts), leader, remaining, alpha, sims)


def expected_gain(counts: list[int], remaining: int, alpha: float = 1.0, sims: int = 2000) -> float:
    """E[final share of the final winner - final share of the current leader] after
    `remaining` more votes from the Polya urn: 0 when the leader cannot lose."""
    if not any(counts):
        return 1.0
    leader = open_leader(counts, remaining)
    if leader is None:
        return 0.0
    return _expected_gain(tuple(counts), leader, remaining, alpha, sims)


def open_leader(counts: list[int], remaining: int) -> int | None:
    """The first-seen leader's index while `remaining` votes could still overturn it; None
    once its lead exceeds them."""
    leader = counts.index(max(counts))
    runner_up = max((k for i, k in enumerate(counts) if i != leader), default=0)
    return None if counts[leader] - runner_up > remaining else leader


# A vote's state recurs across questions (2-0 after two samples, ...): simulate each once.
@lru_cache(maxsize=1 << 16)
def _leader_holds(counts: tuple[int, ...], leader: int, remaining: int, alpha: float, sims: int) -> float:
    finals = polya_finals(list(counts), remaining, alpha, sims)
    return sum(final.index(max(final)) == leader for final in finals) / sims


@lru_cache(maxsize=1 << 16)
def _expected_gain(counts: tuple[int, ...], leader: int, remaining: int, alpha: float, sims: int) -> float:
    total = sum(counts) + remaining
    finals = polya_finals(list(counts), remaining, alpha, sims)
    return sum(max(final) - final[leader] for final in finals) / (total * sims)


def polya_finals(counts: list[int], remaining: int, alpha: float, sims: int) -> Iterator[list[int]]:
    """`sims` draws of the final counts after `remaining` more votes: each repeats a past
    vote in proportion to its count, or is a new answer with weight `alpha`. Seeded by its
    inputs, so a stopping decision is reproducible."""
    rng = random.Random(hash((tuple(counts), remaining, alpha)))
    start = [i for i, k in enumerate(counts) for _ in range(k)]
    for _ in range(sims):
        final, urn = list(counts), list(start)
        for _ in range(remaining):
            u = rng.random() * (len(urn) + alpha)
            if u < len(urn):
                i = urn[int(u)]
            else:
                i = len(final)
                final.append(0)
            final[i] += 1
            urn.append(i)
        yield final


def beta_settled(a: float, b: float) -> float:
    """P(the leader's true share among the top two exceeds 1/2) under Beta(a+1, b+1)."""
    a_, b_ = round(a), round(b)
    n = a_ + b_ + 1
    return sum(comb(n, k) for k in range(a_ + 1)) / 2**n


def top_two(votes: Tally) -> tuple[float, float]:
    ranked = [*sorted(votes.totals.values(), reverse=True), 0.0, 0.0]
    return ranked[0], ranked[1]
