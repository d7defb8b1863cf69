"""The scheduler's view of a model, so the scheduler can be tested without one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ponder.engines.base import GenerationRequest, TokenLogprob


class Decoder(Protocol):
    """What the scheduler needs from a model: a KV pool of `n_ctx` cells shared by numbered
    sequences, and batched decoding of at most `n_batch` tokens a step.

    `decode` appends each token to its sequence's KV at its position (positions of a
    sequence are contiguous) and keeps logits where asked; `sample` and `logprob` read the
    logits of that batch's entry `index`. `copy_seq(src, dst, p0, p1)` makes `dst` share
    `src`'s cells in [p0, p1) (-1: open end) without copying them.
    """

    n_ctx: int
    n_batch: int

    def decode(
        self, tokens: Sequence[int], positions: Sequence[int], seq_ids: Sequence[int], logits: Sequence[bool]
    ) -> None: ...
    def sampler(self, request: GenerationRequest, seed: int) -> Any: ...
    def free_sampler(self, sampler: Any) -> None: ...
    def sample(self, sampler: Any, index: int) -> int: ...
    def logprob(self, index: int, token: int, top: int) -> TokenLogprob: ...
    def is_eog(self, token: int) -> bool: ...
    def piece(self, token: int) -> bytes:
        """The bytes the token writes; a character may span several tokens."""
        ...

    def copy_seq(self, src: int, dst: int, p0: int, p1: int) -> None: ...
    def remove_seq(self, seq_id: int) -> None: ...
    def clear(self) -> None: ...
