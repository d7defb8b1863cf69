"""A model-free `Decoder` for the scheduler's tests, strict where llama.cpp would be silent.

Tokens are bytes (token = byte + 1; 0 is end-of-generation). Every prompt ends with `|`;
the "model" continues a sequence by writing `reply(prompt, seed)` after its last `|`, one
byte per step, then end-of-generation; the seed is None for greedy samplers. KV cells
are objects: copying a sequence shares them, as in llama.cpp's unified cache, and every
decode asserts that positions are contiguous per sequence and that the cells in use fit
`n_ctx`, so a scheduler that loses track of KV fails loudly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ponder.engines.base import GenerationRequest, TokenLogprob

EOG = 0
Reply = Callable[[bytes, "int | None"], bytes]


def encode(text: str) -> list[int]:
    return [b + 1 for b in text.encode("utf-8")]


def echo(prompt: bytes, seed: int | None) -> bytes:
    """The default model: the prompt reversed, tagged with the seed when sampling."""
    return prompt[::-1] + (b"" if seed is None else b" #%d" % seed)


@dataclass
class FakeSampler:
    seed: int | None


class FakeDecoder:
    def __init__(self, reply: Reply = echo, *, n_ctx: int = 512, n_batch: int = 64) -> None:
        self.reply = reply
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.kv: dict[int, list[int]] = defaultdict(list)  # sequence -> its cells
        self.cells: dict[int, int] = {}  # cell -> token
        self._cell = 0
        self.batch_seqs: list[int] = []
        self.steps = 0
        self.most_cells = 0  # high-water mark of cells in use
        self.most_logits = 0  # high-water mark of samples decoded in one step
        self.on_step: Callable[[int], None] | None = None  # runs on the worker thread
        self.live_samplers = 0

    def decode(
        self, tokens: Sequence[int], positions: Sequence[int], seq_ids: Sequence[int], logits: Sequence[bool]
    ) -> None:
        assert 0 < len(tokens) <= self.n_batch
        for token, pos, seq in zip(tokens, positions, seq_ids, strict=True):
            assert pos == len(self.kv[seq]), f"sequence {seq}: position {pos} after {len(self.kv[seq])} cells"
            self._cell += 1
            self.cells[self._cell] = token
            self.kv[seq].append(self._cell)
        in_use = len({c for cells in self.kv.values() for c in cells})
        assert in_use <= self.n_ctx, f"{in_use} cells in use, the context holds {self.n_ctx}"
        self.most_cells = max(self.most_cells, in_use)
        self.most_logits = max(self.most_logits, sum(logits))
        self.batch_seqs = list(seq_ids)
        self.steps += 1
        if self.on_step is not None:
            self.on_step(self.steps)

    def sampler(self, request: GenerationRequest, seed: int) -> FakeSampler:
        self.live_samplers += 1
        return FakeSampler(None if request.temperature <= 0 else seed)

    def free_sampler(self, sampler: FakeSampler) -> None:
        self.live_samplers -= 1

    def sample(self, sampler: FakeSampler, index: int) -> int:
        text = bytes(self.cells[c] - 1 for c in self.kv[self.batch_seqs[index]])
        prompt, _, written = text.rpartition(b"|")
        reply = self.reply(prompt, sampler.seed)
        return reply[len(written)] + 1 if len(written) < len(reply) else EOG

    def logprob(self, index: int, token: int, top: int) -> TokenLogprob:
        return TokenLogprob(self.piece(token).decode("utf-8", "replace"), -0.5)

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def piece(self, token: int) -> bytes:
        return b"" if token == EOG else bytes([token - 1])

    def copy_seq(self, src: int, dst: int, p0: int, p1: int) -> None:
        assert not self.kv[dst], f"copy into sequence {dst}, which is not empty"
        assert p0 in (-1, 0)
        cells = self.kv[src]
        self.kv[dst] = list(cells if p1 < 0 else cells[:p1])

    def remove_seq(self, seq_id: int) -> None:
        self.kv.pop(seq_id, None)

    def clear(self) -> None:
        self.kv.clear()

    def sequences_in_use(self) -> set[int]:
        return {s for s, cells in self.kv.items() if cells}
