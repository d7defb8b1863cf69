"""The native side of the embedded engine: llama.cpp through llama-cpp-python's ctypes API.

One `Native` owns a model, one context (a unified KV cell pool: copying a sequence only
tags cells), one reusable batch, and the text side of the vocabulary: tokenize, token
pieces, the GGUF's chat template. It is the scheduler's `Decoder`; nothing here knows
about requests in flight. Not thread-safe: only the scheduler's worker thread decodes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from ponder.engines.base import GenerationRequest, Message, TokenLogprob


class Native:
    """A loaded GGUF with a context of `n_ctx` cells shared by `n_seq_max` sequences."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int,
        n_batch: int,
        n_seq_max: int,
        n_threads: int,
        chat: bool | None,
        verbose: bool,
        flash_attn: bool | None = None,
    ) -> None:
        from llama_cpp._logger import set_verbose

        set_verbose(verbose)
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ValueError(f"llama.cpp could not load the model {path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_batch = n_batch
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.kv_unified = True  # one cell pool: forking a sample shares the prompt's cells
        cparams.swa_full = True  # sliding-window models (Gemma 3) keep whole prefixes reusable
        cparams.no_perf = True
        if flash_attn is not None:  # None: llama.cpp decides (on for CPU)
            fa = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if flash_attn
                else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
            cparams.flash_attn_type = fa
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise ValueError(f"llama.cpp could not create a context (n_ctx={n_ctx}) for {path}")
        self.n_ctx: int = llama_cpp.llama_n_ctx(self._ctx)
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

        self._pieces: dict[int, bytes] = {}  # token -> text bytes (~token: without specials)
        self.metadata = self._read_metadata()
        template = self.metadata.get("tokenizer.chat_template")
        self.chat = bool(template) if chat is None else chat
        self._formatter: Any = None
        if self.chat and template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template, eos_token=self._special_text("eos"), bos_token=self._special_text("bos")
            )
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    # ---- text ---------------------------------------------------------------------

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

    def render(self, request: GenerationRequest) -> str:
        """The exact text the model sees before generating: template + prefill, or prompt + prefill."""
        if request.prompt is not None:
            return request.prompt + request.prefill
        assert request.messages is not None
        return self._render_chat(request.messages) + request.prefill

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """`render`'s text as tokens, with a BOS when the model wants one and the template
        did not already write it."""
        text = self.render(request)
        bos = self._special_text("bos")
        add_bos = self._add_bos and not (bos and text.startswith(bos))
        tokens = self.tokenize(text, add_special=add_bos, special=True)
        if not tokens:
            bos_id = llama_cpp.llama_vocab_bos(self._vocab)
            if bos_id < 0:
                raise ValueError("empty prompt")
            tokens = [bos_id]
        return tokens

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

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes a token writes (a multi-byte character may span several tokens)."""
        key = token if special else ~token
        piece = self._pieces.get(key)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
            piece = self._pieces[key] = buf.raw[: max(n, 0)]
        return piece

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        return b"".join(self.piece(t, special) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def _token_text(self, token: int) -> str:
        return self.piece(token, True).decode("utf-8", errors="replace")

    def _special_text(self, which: str) -> str:
        vocab = self._vocab
        token = llama_cpp.llama_vocab_bos(vocab) if which == "bos" else llama_cpp.llama_vocab_eos(vocab)
        return "" if token < 0 else self._token_text(token)

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

    # ---- decoding (the scheduler's Decoder) -----------------------------------------

    def decode(
        self, tokens: Sequence[int], positions: Sequence[int], seq_ids: Sequence[int], logits: Sequence[bool]
    ) -> None:
        batch = self._batch
        for i, (token, pos, seq_id, want) in enumerate(zip(tokens, positions, seq_ids, logits, strict=True)):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = want
        batch.n_tokens = len(tokens)
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def sampler(self, request: GenerationRequest, seed: int) -> Any:
        """A sampler chain in llama.cpp's usual order: top-k, top-p, min-p, temperature,
        then a seeded draw; greedy at temperature 0. No repetition penalty."""
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
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def free_sampler(self, sampler: Any) -> None:
        llama_cpp.llama_sampler_free(sampler)

    def sample(self, sampler: Any, index: int) -> int:
        return int(llama_cpp.llama_sampler_sample(sampler, self._ctx, index))

    def logprob(self, index: int, token: int, top: int) -> TokenLogprob:
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

    def copy_seq(self, src: int, dst: int, p0: int, p1: int) -> None:
        llama_cpp.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def remove_seq(self, seq_id: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, -1, -1)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self._mem, True)
