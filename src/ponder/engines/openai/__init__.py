"""An `Engine` over any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs).

One concern per module: `http` (a client per event loop, retries, error messages), `sse`
(streamed completions put back together, deltas as they arrive), `wire` (request bodies,
checked replies), `spend` (requests capped to the token and dollar budgets), and `engine`,
which puts them together as `OpenAIEngine`.
"""

from ponder.engines.base import EngineError
from ponder.engines.openai.engine import OpenAIEngine

__all__ = ["EngineError", "OpenAIEngine"]
