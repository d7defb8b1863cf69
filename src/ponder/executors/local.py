"""Jobs as asyncio tasks in this process, at most `concurrency` at a time, through one
engine that batches them (the embedded engine decodes their samples in one batch)."""

from __future__ import annotations

import asyncio
from typing import Any

from ponder.engines.spec import EngineSpec
from ponder.executors.base import Executor, MapCall


class LocalExecutor(Executor):
    def __init__(self, concurrency: int = 4) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency

    async def _run(self, call: MapCall) -> None:
        """`work` writes traces straight into `store` (a viewer sees them grow)."""
        engine = call.engine
        own = isinstance(engine, EngineSpec)
        active = engine.build() if isinstance(engine, EngineSpec) else engine
        gate = asyncio.Semaphore(self.concurrency)

        async def one(job: Any) -> None:
            async with gate:
                result = await call.work(job, active, call.store)
            call.on_result(job, result)

        try:
            await asyncio.gather(*(one(job) for job in call.jobs))
        finally:
            if own:
                await active.aclose()
