"""Executors: where a batch of independent jobs runs. `LocalExecutor` thinks in this
process on one shared engine (asyncio, today's `ponder bench`); `RayExecutor` fans the jobs
out to Ray actors, each with its own engine built from an `EngineSpec`.

An executor knows nothing of problems or strategies: it is handed a `work` function
(job, engine, store) -> result and jobs, and calls back with each result as it lands, in
the driver. Both guarantee that a job's trace is in the driver's store before its result
is reported, so a caller that writes a result row after `on_result` never has a row
without its trace. Ray is imported only by `ponder.executors.ray`.
"""

from __future__ import annotations

from typing import Any

from ponder.executors.base import Executor, ExecutorError, OnError, OnResult, Work
from ponder.executors.local import LocalExecutor
from ponder.executors.recorder import Recorder

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorError",
    "LocalExecutor",
    "OnError",
    "OnResult",
    "Recorder",
    "Work",
    "get_executor",
]

EXECUTORS = ("local", "ray")


def get_executor(name: str = "local", **options: Any) -> Executor:
    """An executor by name; options go to its constructor (`concurrency` for both; Ray's
    `address`, `workers`, `cpus_per_worker`, ...)."""
    if name == "local":
        return LocalExecutor(**options)
    if name == "ray":
        from ponder.executors.ray import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTORS)}")
