"""Jobs fanned out to Ray actors: each actor builds its own engine from an `EngineSpec` (the
embedded model, loaded once per actor, or a client of a shared OpenAI-compatible server)
and thinks about up to `concurrency` jobs at once on it.

Invariants:
- the driver schedules: it keeps at most `concurrency` calls in flight per actor and hands
  the next job to whichever actor has a free slot, so a slow actor never holds a queue;
- an actor thinks into a `Recorder`, never a database; the driver replays the recording
  into its store and only then reports the result, so traces and result rows are written
  by one process, and a problem lost with its actor leaves nothing behind;
- an actor that dies (its process killed, its node gone) fails its calls with
  `RayActorError`: the driver replaces it and puts those jobs back at the head of the
  queue, so they run again elsewhere; a job whose actors died `max_attempts` times is
  reported through `on_error` instead of retried for ever.

With no address this starts a private cluster on loopback (Ray's single-machine switch,
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, set while the cluster starts, keeps every port on
127.0.0.1) and shuts it down in `close()`; with an address it joins that cluster and
leaves it running. A cluster already initialised in this process (`ray.init` by the
caller) is used as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ponder.engines.spec import EngineSpec
from ponder.executors.base import Executor, ExecutorError, MapCall, Work
from ponder.executors.recorder import Recorder

RAY_EXTRA = "the ray executor needs Ray: pip install 'ponder[ray]'"
_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a node on 127.0.0.1 only
LOCAL_OBJECT_STORE = 128 * 2**20  # results are small; Ray's default takes 30% of RAM


class _Worker:
    """The actor: one engine, many concurrent jobs on it (an async actor's event loop)."""

    def __init__(self, engine: dict[str, Any]) -> None:
        self.engine = EngineSpec.model_validate(engine).build()

    def pid(self) -> int:
        return os.getpid()

    async def run(self, work: Work, job: Any) -> tuple[Any, Recorder]:
        recorder = Recorder()
        result = await work(job, self.engine, recorder)
        return result, recorder


@dataclass(eq=False)
class _Slot:
    handle: Any
    pid: Any  # ObjectRef of the actor's pid, asked for first thing
    busy: int = 0


@contextlib.contextmanager
def _loopback(on: bool) -> Iterator[None]:
    """While a local cluster starts: Ray's single-machine switch, both as the environment
    its processes read at start and as the value this process read when it imported Ray
    (possibly before us), put back afterwards so a later cluster of this process is not
    affected."""
    if not on:
        yield
        return
    from ray._private import ray_constants

    saved_env = os.environ.get(_SWITCH)
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SWITCH], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(_SWITCH, None)
        else:
            os.environ[_SWITCH] = saved_env


def _check_reachable(address: str) -> None:
    """Fail in seconds on a cluster address nobody listens at (ray.init retries for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"Ray address {address!r}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ExecutorError(f"no Ray cluster answers at {address}: {exc.strerror or exc}") from None


class RayExecutor(Executor):
    remote = True

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        concurrency: int = 4,
        cpus_per_worker: float = 1,
        max_attempts: int = 3,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        """`workers` actors (default: the cluster's CPUs / `cpus_per_worker`), each with
        `concurrency` jobs in flight. Each actor's PONDER_THREADS is its CPU share unless
        `runtime_env` sets it. `address` is anything `ray.init` takes ("auto",
        "ray://head:10001"); None starts a local cluster."""
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.address = address
        self.workers = workers
        self.concurrency = concurrency
        self.cpus_per_worker = cpus_per_worker
        self.max_attempts = max_attempts
        self.runtime_env = runtime_env or {}
        self.deaths = 0  # actors lost during map(), for the caller's report
        self.retried = 0  # jobs put back in the queue after their actor died
        self._pool: list[_Slot] = []
        self._replacements = 0
        self._started = False

    def start(self) -> RayExecutor:
        """Start or join the cluster now (`map` does it on first use)."""
        self._ray()
        return self

    def _ray(self) -> Any:
        """The connected ray module: a private loopback cluster when no address is given."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        local = self.address is None and not os.environ.get("RAY_ADDRESS")
        if self.address is not None:
            _check_reachable(self.address)
        try:
            import ray
        except ImportError:
            raise ExecutorError(RAY_EXTRA) from None
        if ray.is_initialized():
            return ray
        options: dict[str, Any] = dict(
            include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False
        )
        if local:
            cpus = (self.workers or os.cpu_count() or 1) * self.cpus_per_worker
            options.update(num_cpus=max(1, round(cpus)), object_store_memory=LOCAL_OBJECT_STORE)
        try:  # "local": a new private cluster, never one that `ray start` left in /tmp/ray
            with _loopback(local):
                ray.init(address="local" if local else self.address, **options)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ExecutorError(f"cannot start or join the Ray cluster {self.address or ''}: {exc}") from None
        self._started = True
        return ray

    def _spawn(self, ray: Any, spec: EngineSpec) -> _Slot:
        env = {"PONDER_THREADS": str(max(1, int(self.cpus_per_worker)))}
        runtime_env = dict(self.runtime_env)
        runtime_env["env_vars"] = {**env, **runtime_env.get("env_vars", {})}
        handle = (
            ray.remote(_Worker)
            .options(
                num_cpus=self.cpus_per_worker,
                max_concurrency=self.concurrency,
                max_restarts=0,  # the driver replaces dead actors and re-queues their jobs itself
                runtime_env=runtime_env,
            )
            .remote(spec.model_dump(mode="json"))
        )
        return _Slot(handle, handle.pid.remote())

    def worker_pids(self) -> list[int]:
        """Process ids of the live actors (for an operator, or a test that kills one)."""
        import ray

        return [int(pid) for pid in ray.get([slot.pid for slot in self._pool], timeout=120)]

    async def _run(self, call: MapCall) -> None:
        engine, jobs = call.engine, call.jobs
        if not isinstance(engine, EngineSpec):
            raise TypeError("the ray executor builds an engine per worker: give an EngineSpec, not an engine")
        if not jobs:
            return
        ray = self._ray()
        from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

        count = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_worker))
        count = min(count, len(jobs))
        self._pool = [self._spawn(ray, engine) for _ in range(count)]
        self._replacements = count * self.max_attempts  # a bound, so a cluster that kills every actor ends
        queue = deque(range(len(jobs)))
        attempts = [0] * len(jobs)
        running: dict[asyncio.Future[Any], tuple[int, _Slot]] = {}
        try:
            while queue or running:
                for slot in self._pool:
                    while slot.busy < self.concurrency and queue:
                        index = queue.popleft()
                        ref = slot.handle.run.remote(call.work, jobs[index])
                        running[asyncio.wrap_future(ref.future())] = (index, slot)
                        slot.busy += 1
                if not running:  # every actor is gone and none may replace it
                    for index in queue:
                        call.on_error(jobs[index], "no Ray worker left to run it")
                    return
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for future in finished:
                    index, slot = running.pop(future)
                    slot.busy -= 1
                    try:
                        result, recorder = future.result()
                    except (RayActorError, WorkerCrashedError) as exc:
                        self._lost(ray, slot, engine, exc)
                        attempts[index] += 1
                        if attempts[index] >= self.max_attempts:
                            call.on_error(jobs[index], f"its Ray worker died {attempts[index]} times")
                        else:
                            self.retried += 1
                            queue.appendleft(index)
                        continue
                    except RayTaskError as exc:
                        raise exc.as_instanceof_cause() from None
                    if call.store is not None:
                        recorder.replay(call.store)
                    call.on_result(jobs[index], result)
        finally:
            for future in running:
                future.cancel()
            for slot in self._pool:
                ray.kill(slot.handle)
            self._pool = []

    def _lost(self, ray: Any, slot: _Slot, engine: EngineSpec, exc: Exception) -> None:
        """An actor died: replace it (once, whichever of its calls reports it first), or stop
        the run when it never started (every worker builds the same spec, so all would fail)."""
        if getattr(exc, "actor_init_failed", False):
            cause = str(exc).strip().splitlines()[-1]
            raise ExecutorError(f"a Ray worker could not build its engine: {cause}") from None
        if slot in self._pool:
            self.deaths += 1
            self._pool.remove(slot)
            if self._replacements > 0:
                self._replacements -= 1
                self._pool.append(self._spawn(ray, engine))

    def close(self) -> None:
        """Shut down the cluster this executor started (a joined one keeps running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
