"""Jobs as asyncio tasks in this process, at most `concurrency` at a time, through one
engine that batches them (the embedded engine decodes their samples in one batch)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ponder.engines.base import Engine
from ponder.engines.spec import EngineSpec
from ponder.executors.base import Executor, OnError, OnResult, Work
from ponder.trace import Store


class LocalExecutor(Executor):
    def __init__(self, concurrency: int = 4) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency

    async def map(
        self,
        work: Work,
        jobs: Sequence[Any],
        *,
        engine: Engine | EngineSpec,
        store: Store | None,
        on_result: OnResult,
        on_error: OnError,
    ) -> None:
        """`work` writes traces straight into `store` (a viewer sees them grow)."""
        own = isinstance(engine, EngineSpec)
        active = engine.build() if isinstance(engine, EngineSpec) else engine
        gate = asyncio.Semaphore(self.concurrency)

        async def one(job: Any) -> None:
            async with gate:
                result = await work(job, active, store)
            on_result(job, result)

        try:
            await asyncio.gather(*(one(job) for job in jobs))
        finally:
            if own:
                await active.aclose()
