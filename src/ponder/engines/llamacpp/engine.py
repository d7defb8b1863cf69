"""`LlamaCppEngine`: the `Engine` facade over the native model and the batch scheduler.

It turns requests into prompt tokens (chat template, prefill, BOS), refuses what can never
run (a prompt that does not fit the context), and hands the rest to the scheduler.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ponder.engines.base import (
    Completion,
    EngineError,
    GenerationRequest,
    OnCompletion,
    OnDelta,
    Price,
)
from ponder.engines.llamacpp.native import Native
from ponder.engines.llamacpp.scheduler import PREFILL_CHUNK_BUSY, Scheduler, seq_ids_needed
from ponder.engines.llamacpp.work import EngineStats
from ponder.engines.models import bundled_model_path, model_name
from ponder.settings import settings

if TYPE_CHECKING:
    from ponder.budget import Meter


class LlamaCppEngine:
    """An `Engine` over a local GGUF model (default: the bundled SmolLM2-135M-Instruct).

    `model_path` is a GGUF file or a bundled model's name ("smollm2", "gemma3-270m").
    `chat` (default: whether the GGUF has a chat template) decides how `messages` are
    rendered; raw `prompt` requests are always used as-is. `n_ctx` is the KV pool shared by
    all live sequences: samples wait for room rather than overflow it. `prefix_cache` is how
    many finished prompts stay in KV for reuse (a beam of width w extends w prefixes a step;
    under KV pressure the oldest go first). `flash_attn` (default: llama.cpp's choice) changes
    the arithmetic, hence greedy text: False matches llama-cpp-python's server default.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        max_batch: int = 16,
        seed: int = 0,
        price: Price = Price(),  # noqa: B008 - Price is frozen, sharing the default is safe
        chat: bool | None = None,
        n_batch: int = 512,
        prefix_cache: int = 16,
        verbose: bool = False,
        flash_attn: bool | None = None,
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
        self.n_threads = n_threads or _default_threads()
        self.native = Native(
            path,
            n_ctx=n_ctx,
            n_batch=max(n_batch, max_batch + PREFILL_CHUNK_BUSY),
            n_seq_max=seq_ids_needed(max_batch, prefix_cache),
            n_threads=self.n_threads,
            chat=chat,
            verbose=verbose,
            flash_attn=flash_attn,
        )
        self.n_ctx = self.native.n_ctx
        self.chat = self.native.chat
        self.scheduler = Scheduler(
            self.native, max_batch=max_batch, prefix_cache=prefix_cache, seed=seed, price=price
        )

    @property
    def price(self) -> Price:
        return self.scheduler.price

    @price.setter
    def price(self, value: Price) -> None:
        self.scheduler.price = value

    @property
    def stats(self) -> EngineStats:
        return self.scheduler.stats

    async def generate(
        self,
        requests: Sequence[GenerationRequest],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
        on_delta: OnDelta | None = None,
    ) -> list[list[Completion]]:
        """Completions for each request, n per request, in order. Raises `EngineError` for
        a request that can never run (its prompt does not fit the context, the chat
        template rejects its messages), before anything is generated."""
        if self.scheduler.closing:
            raise RuntimeError("LlamaCppEngine is closed")
        prompts = []
        for request in requests:
            try:
                tokens = self.tokenize_request(request)
            except ValueError as exc:
                raise EngineError(str(exc)) from exc
            if len(tokens) >= self.n_ctx:
                raise EngineError(
                    f"the prompt has {len(tokens)} tokens and the context holds {self.n_ctx}"
                    " (n_ctx): shorten the prompt or raise n_ctx",
                    status=400,  # the caller's request, as an HTTP server would say
                )
            prompts.append((request, tokens))
        return await self.scheduler.generate(prompts, meter, on_completion, on_delta)

    def render(self, request: GenerationRequest) -> str:
        """The exact prompt text the model sees: the chat template applied to the messages
        (or the raw prompt), with the prefill appended."""
        return self.native.render(request)

    def tokenize_request(self, request: GenerationRequest) -> list[int]:
        return self.native.prompt_tokens(request)

    def tokenize(self, text: str, *, add_special: bool = False, special: bool = True) -> list[int]:
        return self.native.tokenize(text, add_special=add_special, special=special)

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        return self.native.detokenize(tokens, special=special)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the worker thread and free the model; pending calls get an error."""
        if self.scheduler.closing:
            return
        self.scheduler.close()
        self.native.close()


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
    threads = settings().threads
    if threads is not None:
        return threads
    cores = max(1, os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return cores if load < cores - 0.5 else max(1, cores - math.ceil(load - cores + 0.5))
