"""The embedded engine: llama.cpp with batched parallel sampling and continuous batching.

N samples must not cost N times one sample. One background thread owns the llama
context and runs a small scheduler:

- each request's prompt is evaluated ONCE into a "root" sequence; its samples are forked
  from it with `llama_memory_seq_cp` (unified KV cache: a copy only tags cells), and every
  live sequence advances in the same `llama_decode` call, each with its own sampler;
- requests from any number of callers (tasks, threads, event loops) join the running batch
  between decode steps, bounded by `max_batch` live sequences and by KV space;
- finished sequences leave the batch and free their cells; the roots of finished requests
  stay in a small LRU cache so a later prompt sharing a prefix (step-level search
  extending a partial solution) only evaluates its new tokens;
- meters are charged as tokens are produced and checked after every step, so a deadline
  stops that caller's sequences within one step, leaving the other callers running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np

from ponder.engines.base import (
    Completion,
    FinishReason,
    GenerationRequest,
    Message,
    OnCompletion,
    Price,
    TokenLogprob,
)
from ponder.engines.models import bundled_model_path, model_name

if TYPE_CHECKING:
    from ponder.budget import Meter

_LOCAL = Price()  # a local model costs nothing
# A queued request that shares this many leading tokens with one being evaluated waits
# for it (one step or a few) and then copies its KV instead of evaluating them again.
_SHARED_PREFIX = 8
# Prompt tokens evaluated per step while samples are decoding: bounds the latency a new
# request's prefill adds to everyone else's step (and to a deadline).
_PREFILL_CHUNK_BUSY = 128


class _Job:
    """One `generate` call: its requests, its meter and where to deliver the result."""

    def __init__(
        self,
        n_groups: int,
        meter: Meter | None,
        loop: asyncio.AbstractEventLoop,
        on_completion: OnCompletion | None = None,
    ) -> None:
        self.meter = meter
        self.on_completion = on_completion
        self.loop = loop
        self.future: asyncio.Future[list[list[Completion]]] = loop.create_future()
        self.results: list[list[Completion]] = [[] for _ in range(n_groups)]
        self.pending = n_groups
        self.cancelled = False


@dataclass(eq=False)
class _Group:
    """One request: a prompt evaluated once into `root`, and its n samples."""

    job: _Job
    index: int
    request: GenerationRequest
    tokens: list[int]
    max_tokens: int
    completions: list[Completion | None]
    waiting: deque[int]
    root: int = -1
    evaluated: int = 0  # tokens of tokens[:-1] present in the root's KV
    started: float = 0.0
    live: int = 0
    chunk: int = 0  # prompt tokens in the batch being decoded
    state: str = "queued"  # queued -> prefill -> ready (all forked: forked) -> done

    @property
    def context(self) -> list[int]:
        """What the root holds: all but the last prompt token, which every sample feeds
        itself so a sample can be forked at any later step, not only right after prefill."""
        return self.tokens[:-1]


@dataclass(eq=False)
class _Seq:
    group: _Group
    index: int
    seq_id: int
    sampler: Any
    pos: int
    next_token: int
    data: bytearray = field(default_factory=bytearray)
    n_tokens: int = 0
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    batch_index: int = -1


@dataclass
class EngineStats:
    """Counters for benchmarks and tests: how much work batching and caching saved."""

    decode_steps: int = 0
    prompt_tokens: int = 0  # prompt tokens of admitted requests
    prompt_tokens_evaluated: int = 0  # of those, actually run through the model
    completion_tokens: int = 0


@dataclass(eq=False)
class _CacheEntry:
    seq_id: int
    tokens: list[int]


class LlamaCppEngine:
    """An `Engine` over a local GGUF model (default: the bundled SmolLM2-135M-Instruct).

    `model_path` is a GGUF file or a bundled model's name ("smollm2", "gemma3-270m").
    `chat` (default: whether the GGUF has a chat template) decides how `messages` are
    rendered; raw `prompt` requests are always used as-is. `n_ctx` is the KV pool shared by
    all live sequences: samples wait for room rather than overflow it. `prefix_cache` is how
    many finished prompts stay in KV for reuse (a beam of width w extends w prefixes a step;
    under KV pressure the oldest go first).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        max_batch: int = 16,
        seed: int = 0,
        price: Price = _LOCAL,
        chat: bool | None = None,
        n_batch: int = 512,
        prefix_cache: int = 16,
        verbose: bool = False,
    ) -> None:
        path = _resolve_model(model_path)
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {path}")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if prefix_cache < 0:
            raise ValueError("prefix_cache must be >= 0")
        self.model = model_name(path)
        self.model_path = path
        self.price = price
        self.max_batch = max_batch
        self.prefix_cache = prefix_cache
        self._seed = seed
        self._ignore_eos = False  # private knob for benchmarks: comparable token counts

        from llama_cpp._logger import set_verbose

        set_verbose(verbose)
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ValueError(f"llama.cpp could not load the model {path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)

        # Sequence ids: live samples, roots of admitted requests, cached prefixes.
        self._max_groups = max_batch
        n_seq_max = max_batch + self._max_groups + prefix_cache
        threads = n_threads or _default_threads()
        self.n_threads = threads
        self._n_batch = max(n_batch, max_batch + _PREFILL_CHUNK_BUSY)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = self._n_batch
        cparams.n_ubatch = self._n_batch
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = True  # one cell pool: forking a sample shares the prompt's cells
        cparams.swa_full = True  # sliding-window models (Gemma 3) keep whole prefixes reusable
        cparams.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise ValueError(f"llama.cpp could not create a context (n_ctx={n_ctx}) for {path}")
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)

        self._pieces: dict[int, bytes] = {}  # token -> text bytes (~token: without specials)
        self._metadata = self._read_metadata()
        template = self._metadata.get("tokenizer.chat_template")
        self.chat = bool(template) if chat is None else chat
        self._formatter: Any = None
        if self.chat and template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template, eos_token=self._special_text("eos"), bos_token=self._special_text("bos")
            )
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

        # Scheduler state; everything below `_cond` is touched only by the worker thread.
        self._cond = threading.Condition()
        self._inbox: list[_Group] = []
        self._closing = False
        self._queue: deque[_Group] = deque()
        self._groups: list[_Group] = []  # admitted: prefill or ready
        self._seqs: list[_Seq] = []
        self._cache: list[_CacheEntry] = []  # most recently used last
        self._free_ids = list(range(n_seq_max - 1, -1, -1))
        self._reserved = 0  # KV cells promised to admitted work (conservative)
        self._seed_counter = 0
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._run, name="ponder-llamacpp", daemon=True)
        self._thread.start()

    # ---- public API ---------------------------------------------------------------

    async def generate(
        self,
        requests: Sequence[GenerationRequest],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
    ) -> list[list[Completion]]:
        """Completions for each request, n per request, in order."""
        if self._closing:
            raise RuntimeError("LlamaCppEngine is closed")
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        job = _Job(len(requests), meter, loop, on_completion)
        groups: list[_Group] = []
        for i, request in enumerate(requests):
            try:
                tokens = self.tokenize_request(request)
            except ValueError as exc:
                job.results[i] = [_error(str(exc), 0) for _ in range(request.n)]
                job.pending -= 1
                continue
            if len(tokens) >= self.n_ctx:
                message = (
                    f"prompt of {len(tokens)} tokens does not fit the context of {self.n_ctx} tokens"
                    " (raise n_ctx or shorten the prompt)"
                )
                job.results[i] = [_error(message, len(tokens)) for _ in range(request.n)]
                job.pending -= 1
                continue
            groups.append(
                _Group(
                    job=job,
                    index=i,
                    request=request,
                    tokens=tokens,
                    max_tokens=min(request.max_tokens, self.n_ctx - len(tokens)),
                    completions=[None] * request.n,
                    waiting=deque(range(request.n)),
                )
            )
        if not groups:
            return job.results
        with self._cond:
            if self._closing:
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

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the worker thread and free the model; pending calls get an error."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join()
        for sampler in (s.sampler for s in self._seqs):
            llama_cpp.llama_sampler_free(sampler)
        self._seqs.clear()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    def tokenize(self, text: str, *, add_special: bool = False, special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (llama_cpp.llama_token * size)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, special)
        if n < 0:
            size = -n
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, special)
            if n < 0:
                raise ValueError("tokenization failed")
        return list(buf[:n])

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        return b"".join(self._piece(t, special) for t in tokens).decode("utf-8", errors="replace")

    def format_prompt(self, request: GenerationRequest) -> str:
        """The exact text the model sees before generating: template + prefill, or prompt + prefill."""
        if request.prompt is not None:
            return request.prompt + request.prefill
        assert request.messages is not None
        return self._render_chat(request.messages) + request.prefill

    def tokenize_request(self, request: GenerationRequest) -> list[int]:
        text = self.format_prompt(request)
        bos = self._special_text("bos")
        add_bos = self._add_bos and not (bos and text.startswith(bos))
        tokens = self.tokenize(text, add_special=add_bos, special=True)
        if not tokens:
            bos_id = llama_cpp.llama_vocab_bos(self._vocab)
            if bos_id < 0:
                raise ValueError("empty prompt")
            tokens = [bos_id]
        return tokens

    # ---- prompt formatting ----------------------------------------------------------

    def _render_chat(self, messages: Sequence[Message]) -> str:
        if self._formatter is not None:
            import jinja2

            try:
                rendered: str = self._formatter(messages=[dict(m) for m in messages]).prompt
            except jinja2.TemplateError as exc:
                raise ValueError(f"the model's chat template rejected these messages: {exc}") from exc
            return rendered
        # A base model has no template: a plain transcript it can continue.
        lines = [f"{m.get('role', 'user').capitalize()}: {m.get('content', '')}" for m in messages]
        return "\n\n".join([*lines, "Assistant:"])

    def _read_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        for i in range(llama_cpp.llama_model_meta_count(self._model)):
            n = llama_cpp.llama_model_meta_key_by_index(self._model, i, buf, size)
            if n < 0:
                continue
            key = buf.value.decode("utf-8", errors="replace")
            if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "scores", "merges", "type")):
                continue  # huge arrays we never need
            n = llama_cpp.llama_model_meta_val_str_by_index(self._model, i, buf, size)
            if n >= size:
                big = ctypes.create_string_buffer(n + 1)
                llama_cpp.llama_model_meta_val_str_by_index(self._model, i, big, n + 1)
                out[key] = big.value.decode("utf-8", errors="replace")
            elif n >= 0:
                out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    def _special_text(self, which: str) -> str:
        token = (
            llama_cpp.llama_vocab_bos(self._vocab)
            if which == "bos"
            else llama_cpp.llama_vocab_eos(self._vocab)
        )
        return "" if token < 0 else self._piece(token, True).decode("utf-8", errors="replace")

    def _piece(self, token: int, special: bool) -> bytes:
        key = token if special else ~token
        piece = self._pieces.get(key)
        if piece is None:
            piece = self._pieces[key] = self._piece_uncached(token, special)
        return piece

    def _piece_uncached(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[: max(n, 0)]

    # ---- worker thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._inbox and not self._busy():
                    self._cond.wait()
                if self._closing:
                    break
                self._queue.extend(self._inbox)
                self._inbox.clear()
            try:
                self._step()
            except Exception as exc:  # keep serving: fail only the work in flight
                self._fail_all(f"llama.cpp engine error: {exc!r}")
        self._fail_all("LlamaCppEngine was closed", closing=True)

    def _busy(self) -> bool:
        return bool(self._queue or self._groups or self._seqs)

    def _step(self) -> None:
        self._check_stops()
        self._admit()
        self._fork()
        n_batch = self._fill_batch()
        if n_batch == 0:
            return
        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self.stats.decode_steps += 1
        self.stats.completion_tokens += len(self._seqs)
        self.stats.prompt_tokens_evaluated += n_batch - len(self._seqs)
        for group in self._groups:
            if group.state == "prefill" and group.chunk:
                group.evaluated += group.chunk
                group.chunk = 0
                if group.evaluated == len(group.context):
                    group.state = "ready"
        # Charge before sampling: finishing a sequence can hand its job's results to the
        # caller, who must then see every token of this step on the meter.
        spent: dict[int, tuple[Meter, int]] = {}
        for seq in self._seqs:
            meter = seq.group.job.meter
            if meter is not None:
                _, k = spent.get(id(meter), (meter, 0))
                spent[id(meter)] = (meter, k + 1)
        for meter, k in spent.values():
            meter.charge(completion_tokens=k, usd=self.price.cost(0, k))
        for seq in list(self._seqs):
            self._advance(seq)
        self._check_stops()

    # Admission ------------------------------------------------------------------------

    def _admit(self) -> None:
        """Move queued requests into prefill while roots and KV space allow (FIFO)."""
        while self._queue and self._free_ids:
            if sum(1 for g in self._groups if g.root >= 0) >= self._max_groups:
                return
            group = self._queue[0]
            if any(
                g.state == "prefill" and _common_prefix(g.context, group.context) >= _SHARED_PREFIX
                for g in self._groups
            ):
                return  # reuse that prompt once it is evaluated rather than evaluate it twice
            # Room for its prompt and one sample, on top of the first sample promised to
            # every admitted request that has none running yet: no admitted request starves.
            promised = sum(g.max_tokens + 1 for g in self._groups if g.waiting and not g.live)
            need = len(group.context) + group.max_tokens + 1 + promised
            while self._reserved + need > self.n_ctx and self._cache:
                self._evict(self._cache[0])
            if self._reserved + need > self.n_ctx and (self._groups or self._seqs):
                return  # wait for running work to free space
            self._queue.popleft()
            group.root = self._free_ids.pop()
            group.started = time.monotonic()
            group.chunk = 0
            self._reserved += len(group.context)
            self._reuse_prefix(group)
            self.stats.prompt_tokens += len(group.tokens)
            group.state = "ready" if group.evaluated == len(group.context) else "prefill"
            self._groups.append(group)
            meter = group.job.meter
            if meter is not None:
                n = len(group.tokens)
                meter.charge(prompt_tokens=n, usd=self.price.cost(n, 0))

    def _reuse_prefix(self, group: _Group) -> None:
        """Start the root from the longest cached/ready prefix of its context."""
        context = group.context
        best_len, best_id, best_entry = 0, -1, None
        for entry in self._cache:
            n = _common_prefix(entry.tokens, context)
            if n > best_len:
                best_len, best_id, best_entry = n, entry.seq_id, entry
        for other in self._groups:
            if other.state == "ready" and other.root >= 0:
                n = _common_prefix(other.context, context)
                if n > best_len:
                    best_len, best_id, best_entry = n, other.root, None
        if best_len:
            llama_cpp.llama_memory_seq_cp(self._mem, best_id, group.root, 0, best_len)
            group.evaluated = best_len
            if best_entry is not None:  # mark as recently used
                self._cache.remove(best_entry)
                self._cache.append(best_entry)

    def _fork(self) -> None:
        """Start waiting samples of ready requests while batch slots and KV space allow."""
        for group in self._groups:
            if group.state not in ("ready",):
                continue
            while group.waiting and len(self._seqs) < self.max_batch and self._free_ids:
                need = group.max_tokens + 1
                while self._reserved + need > self.n_ctx and self._cache:
                    self._evict(self._cache[0])
                if self._reserved + need > self.n_ctx and self._seqs:
                    return  # running samples will free space
                index = group.waiting.popleft()
                seq_id = self._free_ids.pop()
                if group.context:
                    llama_cpp.llama_memory_seq_cp(self._mem, group.root, seq_id, -1, -1)
                self._reserved += need
                group.live += 1
                self._seqs.append(
                    _Seq(
                        group=group,
                        index=index,
                        seq_id=seq_id,
                        sampler=self._make_sampler(group.request, index),
                        pos=len(group.tokens) - 1,
                        next_token=group.tokens[-1],
                        logprobs=[] if group.request.logprobs else None,
                    )
                )
            if not group.waiting:
                group.state = "forked"
                self._retire_root(group)

    def _retire_root(self, group: _Group) -> None:
        """All samples forked: keep the root's KV as a cached prefix for later calls."""
        if group.root < 0:
            return
        tokens = group.context[: group.evaluated]
        if not tokens or group.job.cancelled:
            self._release_id(group.root)
        else:
            for entry in list(self._cache):  # a longer prefix supersedes a shorter one
                if _common_prefix(entry.tokens, tokens) == len(entry.tokens):
                    self._evict(entry)
            self._cache.append(_CacheEntry(group.root, tokens))
            self._reserved += len(tokens)
            while len(self._cache) > self.prefix_cache:
                self._evict(self._cache[0])
        group.root = -1

    def _evict(self, entry: _CacheEntry) -> None:
        self._cache.remove(entry)
        self._reserved -= len(entry.tokens)
        self._release_id(entry.seq_id)

    def _release_id(self, seq_id: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        self._free_ids.append(seq_id)

    def _make_sampler(self, request: GenerationRequest, index: int) -> Any:
        params = llama_cpp.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = llama_cpp.llama_sampler_chain_init(params)
        if request.temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if request.top_k > 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(request.top_k))
        if request.top_p < 1.0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(request.top_p, 1))
        if request.min_p > 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(request.min_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(request.temperature))
        if request.seed is not None:
            seed = request.seed + index
        else:
            seed = self._seed * 1_000_003 + self._seed_counter
            self._seed_counter += 1
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    # Decoding ---------------------------------------------------------------------------

    def _fill_batch(self) -> int:
        batch = self._batch
        n = 0
        for seq in self._seqs:
            batch.token[n] = seq.next_token
            batch.pos[n] = seq.pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq.seq_id
            batch.logits[n] = 1
            seq.batch_index = n
            n += 1
        room = self._n_batch - n
        if self._seqs:
            room = min(room, _PREFILL_CHUNK_BUSY)
        for group in self._groups:
            if group.state != "prefill" or room <= 0:
                continue
            start = group.evaluated
            chunk = group.context[start : start + room]
            for offset, token in enumerate(chunk):
                batch.token[n] = token
                batch.pos[n] = start + offset
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = group.root
                batch.logits[n] = 0
                n += 1
            group.chunk = len(chunk)
            room -= len(chunk)
        batch.n_tokens = n
        return n

    def _advance(self, seq: _Seq) -> None:
        """Sample the sequence's next token from this step's logits and check its stops."""
        request = seq.group.request
        token = llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, seq.batch_index)
        seq.n_tokens += 1
        if seq.logprobs is not None:
            seq.logprobs.append(self._logprob(seq.batch_index, token, request.top_logprobs))
        if llama_cpp.llama_vocab_is_eog(self._vocab, token) and not self._ignore_eos:
            self._finish(seq, "stop")
            return
        before = len(seq.text)
        seq.data += self._piece(token, False)
        seq.text = seq.data.decode("utf-8", errors="ignore")
        if request.stop:
            longest = max(len(s) for s in request.stop)
            window = max(0, before - longest)
            hits = [i for i in (seq.text.find(s, window) for s in request.stop if s) if i >= 0]
            if hits:
                seq.text = seq.text[: min(hits)]
                self._finish(seq, "stop")
                return
        if seq.n_tokens >= seq.group.max_tokens:
            self._finish(seq, "length")
            return
        seq.next_token = token
        seq.pos += 1

    def _logprob(self, index: int, token: int, top: int) -> TokenLogprob:
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        peak = logits.max()
        logz = peak + np.log(np.exp(logits - peak).sum())
        alternatives: dict[str, float] = {}
        if top > 0:
            k = min(top, self.n_vocab)
            best = np.argpartition(-logits, k - 1)[:k]
            for t in best[np.argsort(-logits[best])]:
                alternatives[self._token_text(int(t))] = float(logits[t] - logz)
        return TokenLogprob(self._token_text(token), float(logits[token] - logz), alternatives)

    def _token_text(self, token: int) -> str:
        return self._piece(token, True).decode("utf-8", errors="replace")

    # Finishing ---------------------------------------------------------------------------

    def _finish(self, seq: _Seq, reason: FinishReason, error: str | None = None) -> None:
        group = seq.group
        self._seqs.remove(seq)
        llama_cpp.llama_sampler_free(seq.sampler)
        self._release_id(seq.seq_id)
        self._reserved -= group.max_tokens + 1
        group.live -= 1
        completion = Completion(
            text=seq.text,
            finish_reason=reason,
            prompt_tokens=len(group.tokens),
            completion_tokens=seq.n_tokens,
            seconds=time.monotonic() - group.started,
            logprobs=seq.logprobs,
            error=error,
        )
        group.completions[seq.index] = completion
        job = group.job
        if job.on_completion is not None and not job.cancelled:
            # queued before the job's result, so the caller hears of it first
            job.loop.call_soon_threadsafe(job.on_completion, group.index, seq.index, completion)
        self._maybe_done(group)

    def _maybe_done(self, group: _Group) -> None:
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
            _resolve(job)

    def _stop_group(self, group: _Group, reason: FinishReason, error: str | None = None) -> None:
        """End a request now: live samples keep their text, unstarted ones return empty."""
        for seq in [s for s in self._seqs if s.group is group]:
            self._finish(seq, reason, error)
        if group.state == "done":
            return
        now = time.monotonic()
        for index in group.waiting:
            group.completions[index] = Completion(
                text="",
                finish_reason=reason,
                prompt_tokens=len(group.tokens),
                completion_tokens=0,
                seconds=now - group.started if group.started else 0.0,
                error=error,
            )
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
                _resolve(group.job, RuntimeError(message))
        if not closing:
            # Whatever state the cache was in, start clean.
            for entry in list(self._cache):
                self._evict(entry)
            llama_cpp.llama_memory_clear(self._mem, True)
            self._reserved = 0


def _resolve_model(model_path: str | Path | None) -> Path:
    """A GGUF path, or a bundled model's name ("smollm2", "gemma3-270m"); None: SmolLM2."""
    if model_path is None:
        return bundled_model_path("smollm2")
    path = Path(model_path)
    if not path.exists() and isinstance(model_path, str) and path.suffix != ".gguf" and len(path.parts) == 1:
        return bundled_model_path(model_path)
    return path


def _default_threads() -> int:
    """All cores on an idle machine, one when other processes keep the cores busy.

    ggml's threads spin at every barrier: when busy processes share the cores, a thread
    waits for a descheduled partner and two threads decode ~10x slower than one (measured
    here: 7.7 vs 75 tok/s), while on an idle 2-core machine two threads gain ~1.1x for one
    sequence and ~1.5x for a batch of 16. One thread is never catastrophic, so when the
    load says the cores are taken, take one. PONDER_THREADS overrides.
    """
    env = os.environ.get("PONDER_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = max(1, os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return cores if load < cores - 0.5 else max(1, cores - math.ceil(load - cores + 0.5))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _error(message: str, prompt_tokens: int) -> Completion:
    return Completion(
        text="", finish_reason="error", prompt_tokens=prompt_tokens, completion_tokens=0, error=message
    )


def _resolve(job: _Job, exc: BaseException | None = None) -> None:
    def deliver() -> None:
        if job.future.done():
            return
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(job.results)

    with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody to tell
        job.loop.call_soon_threadsafe(deliver)
