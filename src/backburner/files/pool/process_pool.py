"""A pool of processes for CPU-bound work, where each task can be stopped on its own.

`ProcessPool.run` sends one task to an idle process and waits for its answer in a thread. A task
that runs past its wall-clock limit, whose caller is cancelled (the file was deleted, cancelled
or timed out), or that goes over its CPU or memory limit ends with its process: the process is
killed and a new one takes its place, while the other processes' tasks go on undisturbed.

Processes fork from a fork server (forking this process, which runs threads and an event loop,
would be unsafe) that has imported their work once, so that a replacement starts in
milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar, cast

from backburner.files.pool.child import Outcome, serve
from backburner.logs import log_event
from backburner.tasks import wait_for

log = logging.getLogger(__name__)
T = TypeVar("T")

JOIN_TIMEOUT_S = 5.0
REPLACE_RETRY_START_S = 0.5
REPLACE_RETRY_MAX_S = 30.0


class TaskFailed(Exception):
    """The task's process ended before answering; the message says why."""


class TaskTimedOut(TaskFailed):
    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        super().__init__(f"it ran longer than {limit_s:g} s")


class TaskOverCpu(TaskFailed):
    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        super().__init__(f"it used more than {limit_s:g} CPU-seconds")


class TaskOverMemory(TaskFailed):
    def __init__(self, limit_bytes: int | None) -> None:
        self.limit_bytes = limit_bytes
        limit = f" of {limit_bytes // (1024 * 1024)} MB" if limit_bytes else ""
        super().__init__(f"it went over the memory limit{limit}")


@dataclass(frozen=True, slots=True)
class TaskLimits:
    wall_s: float | None = None
    cpu_s: float | None = None


class _Process:
    """One pool process and the main process's end of its pipe."""

    def __init__(self, context: ForkServerContext, memory_limit_bytes: int | None) -> None:
        ours, theirs = context.Pipe(duplex=True)
        self.conn: Connection = ours
        self.process: BaseProcess = context.Process(
            target=serve, args=(theirs, memory_limit_bytes), name="backburner-pool", daemon=True
        )
        self.process.start()
        theirs.close()
        # The process answers once its limits are set: only then does it take tasks.
        if self.conn.recv() != ("ready", self.process.pid):
            raise RuntimeError("a pool process did not start as expected")

    def roundtrip(self, task: tuple[Callable[..., Any], tuple[Any, ...], float | None]) -> Outcome:
        """Send a task and wait for its outcome (in a thread: both may block)."""
        self.conn.send(task)
        return cast(Outcome, self.conn.recv())

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(JOIN_TIMEOUT_S)
        self.conn.close()

    @property
    def alive(self) -> bool:
        return self.process.is_alive()


class ProcessPool:
    def __init__(
        self, processes: int, *, memory_limit_bytes: int | None = None, preload: Sequence[str] = ()
    ) -> None:
        if processes < 1:
            raise ValueError("a process pool needs at least one process")
        self.processes = processes
        self.memory_limit_bytes = memory_limit_bytes
        self._preload = list(preload)
        self._idle: asyncio.Queue[_Process] | None = None
        self._all: set[_Process] = set()
        self._starting: asyncio.Future[None] | None = None
        self._closed = False
        self.replaced = 0  # processes killed and replaced, for diagnostics and tests

    # --- lifecycle ----------------------------------------------------------------------------

    async def wait_started(self) -> None:
        """Start every process now (in a thread: the fork server's first start imports the
        preloaded modules); returns once they run. A failure is raised, and the next call tries
        again."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        except Exception:
            if self._starting is starting:
                self._starting = None
            raise

    async def _start(self) -> None:
        idle: asyncio.Queue[_Process] = asyncio.Queue()
        for _ in range(self.processes):
            idle.put_nowait(await asyncio.to_thread(self._new_process))
        self._idle = idle

    def _context(self) -> ForkServerContext:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(self._preload)
        return context

    def _new_process(self) -> _Process:
        process = _Process(self._context(), self.memory_limit_bytes)
        self._all.add(process)
        return process

    def close(self) -> None:
        """Kill every process (a task still running ends with TaskFailed)."""
        self._closed = True
        for process in list(self._all):
            process.process.kill()
        for process in list(self._all):
            process.process.join(JOIN_TIMEOUT_S)
            process.conn.close()
        self._all.clear()

    def pids(self) -> list[int]:
        return [p.process.pid for p in self._all if p.process.pid is not None]

    # --- tasks --------------------------------------------------------------------------------

    async def run(self, function: Callable[..., T], *args: Any, limits: TaskLimits | None = None) -> T:
        """Run `function(*args)` in a pool process and return its result, or raise its exception.

        `function` must be a module-level function and its arguments and result picklable.
        """
        await self.wait_started()
        assert self._idle is not None
        limits = limits or TaskLimits()
        process = await self._idle.get()
        reusable = False
        try:
            outcome = await wait_for(
                asyncio.to_thread(process.roundtrip, (function, args, limits.cpu_s)), limits.wall_s
            )
            # After a MemoryError the process leaves on its own (its heap may be damaged).
            reusable = not isinstance(outcome[1], MemoryError)
        except TimeoutError:
            raise TaskTimedOut(limits.wall_s or 0.0) from None
        except (EOFError, OSError):
            raise self._why_ended(process, limits) from None
        finally:
            await self._give_back(process, reusable)
        kind, value = outcome
        if kind == "error":
            if isinstance(value, MemoryError):
                raise TaskOverMemory(self.memory_limit_bytes)
            raise value
        return cast(T, value)

    def _why_ended(self, process: _Process, limits: TaskLimits) -> TaskFailed:
        process.process.join(JOIN_TIMEOUT_S)
        code = process.process.exitcode
        if code == -signal.SIGXCPU and limits.cpu_s is not None:
            return TaskOverCpu(limits.cpu_s)
        if code == -signal.SIGKILL and self.memory_limit_bytes is not None:
            return TaskOverMemory(self.memory_limit_bytes)  # the kernel's OOM killer
        return TaskFailed(f"its process ended unexpectedly (exit code {code})")

    async def _give_back(self, process: _Process, reusable: bool) -> None:
        """Return the process to the idle ones, or kill it and put a new one in its place."""
        assert self._idle is not None
        if reusable or self._closed:
            if not self._closed:
                self._idle.put_nowait(process)
            return
        self._all.discard(process)
        self.replaced += 1
        replacement = asyncio.ensure_future(self._replace(process))
        # A caller cancelled at this point must not leave the pool a process short.
        await asyncio.shield(replacement)

    async def _replace(self, process: _Process) -> None:
        assert self._idle is not None
        await asyncio.to_thread(process.kill)
        delay_s = REPLACE_RETRY_START_S
        while True:
            try:
                fresh = await asyncio.to_thread(self._new_process)
                break
            except Exception as exc:  # the fork server is restarted by the next attempt
                log_event(
                    log, logging.ERROR, "files.pool_replace_failed", error=repr(exc), retry_in_s=delay_s
                )
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, REPLACE_RETRY_MAX_S)
        log_event(log, logging.INFO, "files.pool_process_replaced", pid=fresh.process.pid)
        if self._closed:
            fresh.kill()
            return
        self._idle.put_nowait(fresh)
