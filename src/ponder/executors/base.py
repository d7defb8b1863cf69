"""The executor contract (see the package docstring)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ponder.engines.base import Engine
from ponder.engines.spec import EngineSpec
from ponder.trace import Store

# work(job, engine, store) -> result: a module-level function (a remote executor sends it by name)
Work = Callable[[Any, Engine, Store | None], Awaitable[Any]]
OnResult = Callable[[Any, Any], None]  # (job, result), called in the driver as each job finishes
OnError = Callable[[Any, str], None]  # (job, why) for a job the executor gave up on


class ExecutorError(RuntimeError):
    """An executor cannot run at all (Ray missing, a cluster address that does not answer)."""


@dataclass(frozen=True)
class MapCall:
    """One `Executor.map` call's arguments, so each executor's `_run` takes them whole."""

    work: Work
    jobs: Sequence[Any]
    engine: Engine | EngineSpec
    store: Store | None
    on_result: OnResult
    on_error: OnError


class Executor(ABC):
    """Runs `work` over jobs; exceptions `work` raises are fatal to the whole map (work
    that should survive a failing job returns the failure as its result)."""

    #: jobs cross a process boundary: send references (dataset name and item id), not objects
    remote: ClassVar[bool] = False

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
        await self._run(MapCall(work, jobs, engine, store, on_result, on_error))

    @abstractmethod
    async def _run(self, call: MapCall) -> None: ...

    def close(self) -> None:  # noqa: B027  (most executors start nothing)
        """Release what this executor started (a Ray cluster it launched)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
