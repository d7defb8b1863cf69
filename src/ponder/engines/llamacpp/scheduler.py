"""Continuous batching over a `Decoder`: the embedded engine's scheduler, with no model in it.

One worker thread owns the decoder. Per step: stop what callers cancelled or ran out of
budget for, admit queued requests, fork samples, decode one batch, sample one token per
live sequence. Invariants:

- a request's prompt (all but its last token) is evaluated ONCE into a root sequence; its
  samples are copies (`copy_seq`) that each feed the last prompt token themselves;
- `_reserved` counts KV cells promised to roots, cached prefixes and live samples (a
  sample's whole `max_tokens`), and admission and forking keep it <= `n_ctx`;
- a meter is charged for a step's tokens before any of them can finish a request, and is
  checked after every step: a deadline stops that caller's sequences, nobody else's;
- a sample's deltas hold back text that may begin a stop string, so they concatenate to its
  final text exactly and all go out before its completion.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ponder.engines.base import (
    Completion,
    FinishReason,
    GenerationRequest,
    OnCompletion,
    OnDelta,
    Price,
)
from ponder.engines.llamacpp.decoder import Decoder
from ponder.engines.llamacpp.work import CacheEntry, EngineStats, Group, Job, Seq, common_prefix, resolve

if TYPE_CHECKING:
    from ponder.budget import Meter

# A queued request that shares this many leading tokens with one being evaluated waits
# for it (one step or a few) and then copies its KV instead of evaluating them again.
SHARED_PREFIX = 8
# Prompt tokens evaluated per step while samples are decoding: bounds the latency a new
# request's prefill adds to everyone else's step (and to a deadline).
PREFILL_CHUNK_BUSY = 128


def seq_ids_needed(max_batch: int, prefix_cache: int) -> int:
    """Sequence ids the decoder must offer: live samples, roots of admitted requests (one
    per batch slot at most), cached prefixes."""
    return 2 * max_batch + prefix_cache


class Scheduler:
    """Runs every caller's requests in one continuous batch on `decoder`'s worker thread.

    `max_batch` live samples at most; `prefix_cache` finished prompts stay in KV for reuse
    (oldest evicted first, also under KV pressure). `seed` seeds samples whose request has none.
    """

    def __init__(
        self,
        decoder: Decoder,
        *,
        max_batch: int,
        prefix_cache: int,
        seed: int = 0,
        price: Price | None = None,
    ) -> None:
        self.decoder = decoder
        self.n_ctx = decoder.n_ctx
        self.max_batch = max_batch
        self.max_groups = max_batch
        self.prefix_cache = prefix_cache
        self.price = price or Price()
        self.seed = seed
        self.ignore_eos = False  # for benchmarks: fixed-length samples, comparable token counts
        self.stats = EngineStats()
        self.n_seq_max = seq_ids_needed(max_batch, prefix_cache)
        # Shared with callers, under `_cond`.
        self._cond = threading.Condition()
        self._inbox: list[Group] = []
        self.closing = False
        # The worker thread's own.
        self._queue: deque[Group] = deque()
        self._groups: list[Group] = []  # admitted: prefill or ready
        self.seqs: list[Seq] = []
        self._cache: list[CacheEntry] = []  # most recently used last
        self._free_ids = list(range(self.n_seq_max - 1, -1, -1))
        self._reserved = 0
        self._seed_counter = 0
        self.thread = threading.Thread(target=self._run, name="ponder-llamacpp", daemon=True)
        self.thread.start()

    # ---- callers' side ------------------------------------------------------------

    async def generate(
        self,
        prompts: Sequence[tuple[GenerationRequest, list[int]]],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
        on_delta: OnDelta | None = None,
    ) -> list[list[Completion]]:
        """Each (request, prompt tokens)'s n completions. Prompts must be non-empty and
        shorter than `n_ctx` (the engine checks, with a message for the user)."""
        if not prompts:
            return []
        job = Job(len(prompts), meter, asyncio.get_running_loop(), on_completion, on_delta)
        groups = [
            Group(job, i, request, list(tokens), min(request.max_tokens, self.n_ctx - len(tokens)))
            for i, (request, tokens) in enumerate(prompts)
        ]
        with self._cond:
            if self.closing:
                raise RuntimeError("LlamaCppEngine is closed")
            self._inbox.extend(groups)
            self._cond.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancelled = True
            with self._cond:
                self._cond.notify()
            raise

    def close(self) -> None:
        """Stop the worker thread; pending calls get an error. Idempotent."""
        with self._cond:
            if self.closing:
                return
            self.closing = True
            self._cond.notify()
        self.thread.join()
        for seq in self.seqs:
            self.decoder.free_sampler(seq.sampler)
        self.seqs.clear()

    # ---- worker thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self.closing and not self._inbox and not self._busy():
                    self._cond.wait()
                if self.closing:
                    break
                self._queue.extend(self._inbox)
                self._inbox.clear()
            try:
                self.step()
            except Exception as exc:  # keep serving: fail only the work in flight
                self._fail_all(f"llama.cpp engine error: {exc!r}")
        self._fail_all("LlamaCppEngine was closed", closing=True)

    def _busy(self) -> bool:
        return bool(self._queue or self._groups or self.seqs)

    def step(self) -> None:
        self._check_stops()
        self._admit()
        self._fork()
        tokens: list[int] = []
        positions: list[int] = []
        seq_ids: list[int] = []
        for seq in self.seqs:
            seq.batch_index = len(tokens)
            tokens.append(seq.next_token)
            positions.append(seq.pos)
            seq_ids.append(seq.seq_id)
        n_live = len(tokens)
        room = self.decoder.n_batch - n_live
        if self.seqs:
            room = min(room, PREFILL_CHUNK_BUSY)
        for group in self._groups:
            if group.state != "prefill" or room <= 0:
                continue
            start = group.evaluated
            chunk = group.context[start : start + room]
            tokens.extend(chunk)
            positions.extend(range(start, start + len(chunk)))
            seq_ids.extend([group.root] * len(chunk))
            group.chunk = len(chunk)
            room -= len(chunk)
        if not tokens:
            return
        self.decoder.decode(tokens, positions, seq_ids, [True] * n_live + [False] * (len(tokens) - n_live))
        self.stats.decode_steps += 1
        self.stats.completion_tokens += n_live
        self.stats.prompt_tokens_evaluated += len(tokens) - n_live
        for group in self._groups:
            if group.state == "prefill" and group.chunk:
                group.evaluated += group.chunk
                group.chunk = 0
                if group.evaluated == len(group.context):
                    group.state = "ready"
        # Charge before sampling: finishing a sequence can hand its job's results to the
        # caller, who must then see every token of this step on the meter.
        spent: dict[int, tuple[Meter, int]] = {}
        for seq in self.seqs:
            meter = seq.group.job.meter
            if meter is not None:
                _, k = spent.get(id(meter), (meter, 0))
                spent[id(meter)] = (meter, k + 1)
        for meter, k in spent.values():
            meter.charge(completion_tokens=k, usd=self.price.cost(0, k))
        jobs = {id(s.group.job): s.group.job for s in self.seqs}
        for seq in list(self.seqs):
            self._advance(seq)
        for job in jobs.values():
            job.flush()
        self._check_stops()

    # ---- admission and forking ---------------------------------------------------------

    def _admit(self) -> None:
        """Move queued requests into prefill while roots and KV space allow (FIFO)."""
        while self._queue and self._free_ids:
            if sum(1 for g in self._groups if g.root >= 0) >= self.max_groups:
                return
            group = self._queue[0]
            if any(
                g.state == "prefill" and common_prefix(g.context, group.context) >= SHARED_PREFIX
                for g in self._groups
            ):
                return  # reuse that prompt once it is evaluated rather than evaluate it twice
            # Room for its prompt and one sample, on top of the first sample promised to
            # every admitted request that has none running yet: no admitted request starves.
            promised = sum(g.max_tokens + 1 for g in self._groups if g.waiting and not g.live)
            need = len(group.context) + group.max_tokens + 1 + promised
            while self._reserved + need > self.n_ctx and self._cache:
                self._evict(self._cache[0])
            if self._reserved + need > self.n_ctx and (self._groups or self.seqs):
                return  # wait for running work to free space
            self._queue.popleft()
            group.root = self._free_ids.pop()
            group.start()
            self._reserved += len(group.context)
            self._reuse_prefix(group)
            self.stats.prompt_tokens += len(group.tokens)
            group.state = "ready" if group.evaluated == len(group.context) else "prefill"
            self._groups.append(group)
            meter = group.job.meter
            if meter is not None:
                n = len(group.tokens)
                meter.charge(prompt_tokens=n, usd=self.price.cost(n, 0))

    def _reuse_prefix(self, group: Group) -> None:
        """Start the root from the longest cached/ready prefix of its context."""
        context = group.context
        best_len, best_id, best_entry = 0, -1, None
        for entry in self._cache:
            n = common_prefix(entry.tokens, context)
            if n > best_len:
                best_len, best_id, best_entry = n, entry.seq_id, entry
        for other in self._groups:
            if other.state == "ready" and other.root >= 0:
                n = common_prefix(other.context, context)
                if n > best_len:
                    best_len, best_id, best_entry = n, other.root, None
        if best_len:
            self.decoder.copy_seq(best_id, group.root, 0, best_len)
            group.evaluated = best_len
            if best_entry is not None:  # mark as recently used
                self._cache.remove(best_entry)
                self._cache.append(best_entry)

    def _fork(self) -> None:
        """Start waiting samples of ready requests while batch slots and KV space allow."""
        for group in self._groups:
            if group.state != "ready":
                continue
            while group.waiting and len(self.seqs) < self.max_batch and self._free_ids:
                need = group.max_tokens + 1
                while self._reserved + need > self.n_ctx and self._cache:
                    self._evict(self._cache[0])
                if self._reserved + need > self.n_ctx and self.seqs:
                    return  # running samples will free space
                index = group.waiting.popleft()
                seq_id = self._free_ids.pop()
                if group.context:
                    self.decoder.copy_seq(group.root, seq_id, -1, -1)
                self._reserved += need
                group.live += 1
                sampler = self.decoder.sampler(group.request, self._seed_for(group.request, index))
                self.seqs.append(Seq(group, index, seq_id, sampler))
            if not group.waiting:
                group.state = "forked"
                self._retire_root(group)

    def _seed_for(self, request: GenerationRequest, index: int) -> int:
        if request.seed is not None:
            return request.seed + index
        self._seed_counter += 1
        return self.seed * 1_000_003 + self._seed_counter - 1

    def _retire_root(self, group: Group) -> None:
        """All samples forked: keep the root's KV as a cached prefix for later calls."""
        if group.root < 0:
            return
        tokens = group.context[: group.evaluated]
        if not tokens or group.job.cancelled:
            self._release_id(group.root)
        else:
            for entry in list(self._cache):  # a longer prefix supersedes a shorter one
                if common_prefix(entry.tokens, tokens) == len(entry.tokens):
                    self._evict(entry)
            self._cache.append(CacheEntry(group.root, tokens))
            self._reserved += len(tokens)
            while len(self._cache) > self.prefix_cache:
                self._evict(self._cache[0])
        group.root = -1

    def _evict(self, entry: CacheEntry) -> None:
        self._cache.remove(entry)
        self._reserved -= len(entry.tokens)
        self._release_id(entry.seq_id)

    def _release_id(self, seq_id: int) -> None:
        self.decoder.remove_seq(seq_id)
        self._free_ids.append(seq_id)

    # ---- sampling and finishing ---------------------------------------------------------

    def _advance(self, seq: Seq) -> None:
        """Sample the sequence's next token from this step's logits and check its stops."""
        request = seq.group.request
        token = self.decoder.sample(seq.sampler, seq.batch_index)
        seq.n_tokens += 1
        if seq.logprobs is not None:
            seq.logprobs.append(self.decoder.logprob(seq.batch_index, token, request.top_logprobs))
        if self.decoder.is_eog(token) and not self.ignore_eos:
            self._finish(seq, "stop")
            return
        if seq.write(self.decoder.piece(token)):
            self._finish(seq, "stop")
            return
        if seq.n_tokens >= seq.group.max_tokens:
            self._finish(seq, "length")
            return
        seq.next_token = token
        seq.pos += 1

    def _finish(self, seq: Seq, reason: FinishReason, error: str | None = None) -> None:
        group = seq.group
        self.seqs.remove(seq)
        self.decoder.free_sampler(seq.sampler)
        self._release_id(seq.seq_id)
        self._reserved -= group.max_tokens + 1
        group.live -= 1
        completion = group.record(seq.index, seq.close(), reason, seq.n_tokens, error, seq.logprobs)
        job = group.job
        job.flush()  # its deltas go out before its completion
        if job.on_completion is not None and not job.cancelled:
            job.post(job.on_completion, group.index, seq.index, completion)
        self._maybe_done(group)

    def _maybe_done(self, group: Group) -> None:
        if group.live or group.waiting or group.state == "done":
            return
        if group.root >= 0:
            self._release_id(group.root)
            group.root = -1
        if group in self._groups:
            self._groups.remove(group)
            self._reserved -= len(group.context)
        group.state = "done"
        job = group.job
        job.results[group.index] = [c for c in group.completions if c is not None]
        job.pending -= 1
        if job.pending == 0:
            resolve(job)

    def _stop_group(self, group: Group, reason: FinishReason, error: str | None = None) -> None:
        """End a request now: live samples keep their text, unstarted ones return empty."""
        for seq in [s for s in self.seqs if s.group is group]:
            self._finish(seq, reason, error)
        if group.state == "done":
            return
        for index in group.waiting:
            group.record(index, "", reason, 0, error)
        group.waiting.clear()
        if group in self._queue:
            self._queue.remove(group)
        self._maybe_done(group)

    def _check_stops(self) -> None:
        """Cancelled callers and exhausted meters end their own work, nobody else's."""
        exhausted: dict[int, bool] = {}
        for group in [*self._groups, *self._queue]:
            job = group.job
            if job.cancelled:
                self._stop_group(group, "error", "cancelled")
                continue
            meter = job.meter
            if meter is None:
                continue
            key = id(meter)
            if key not in exhausted:
                exhausted[key] = meter.exhausted() is not None
            if exhausted[key]:
                self._stop_group(group, "budget")

    def _fail_all(self, message: str, closing: bool = False) -> None:
        with self._cond:
            self._queue.extend(self._inbox)
            self._inbox.clear()
        for group in [*self._groups, *self._queue]:
            try:
                self._stop_group(group, "error", message)
            except Exception:
                resolve(group.job, RuntimeError(message))
        if not closing:
            # Whatever state the cache was in, start clean.
            for entry in list(self._cache):
                self._evict(entry)
            self.decoder.clear()
            self._reserved = 0
