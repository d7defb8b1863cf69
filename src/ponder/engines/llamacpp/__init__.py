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
  stops that caller's sequences within one step, leaving the other callers running;
- text reaches `on_delta` as it is decoded, whole characters only, and never text a stop
  string may still cut: the deltas are the final text, through a deadline or a cancel.

Modules: `native` (llama.cpp calls: model, context, tokenizer, chat template, samplers),
`scheduler` (the batch loop) over `decoder` (its view of a model, a protocol, so it runs
without a model in tests), `work` (its units: job, request, sample), `engine` (the facade).
"""

from ponder.engines.llamacpp.decoder import Decoder
from ponder.engines.llamacpp.engine import LlamaCppEngine
from ponder.engines.llamacpp.scheduler import Scheduler
from ponder.engines.llamacpp.work import EngineStats

__all__ = ["Decoder", "EngineStats", "LlamaCppEngine", "Scheduler"]
