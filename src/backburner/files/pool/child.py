"""The loop of one pool process: take a task, run it within its limits, send back the outcome.

A task is `(function, args, cpu_s)`; the answer is `("ok", result)` or `("error", exception)`.
The process leaves once the main process has gone, even in the middle of a task.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import resource
import threading
from multiprocessing.connection import Connection
from typing import Any

Outcome = tuple[str, Any]
POOL_NICENESS = 10
# A task that failed with its process's address space this close to the cap failed for want
# of memory (at most an eighth of the limit).
LIMIT_MARGIN_BYTES = 32 * 1024 * 1024


class RemoteTaskError(RuntimeError):
    """A task's exception that could not travel back as itself, described."""


def serve(conn: Connection, memory_limit_bytes: int | None) -> None:
    """Run tasks from `conn` until the main process closes it or goes away."""
    _exit_with_parent()
    # Parsing yields the CPU to the instance's event loop: a file that takes a core for
    # minutes must not make the API or the leader's jobs wait.
    os.nice(POOL_NICENESS)
    start_peak = _peak_address_space()
    address_space_limit = _limit_memory(memory_limit_bytes) if memory_limit_bytes is not None else None
    margin = min(LIMIT_MARGIN_BYTES, (memory_limit_bytes or 0) // 8)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            function, args, cpu_s = conn.recv()
        except (EOFError, OSError):
            return
        _limit_cpu(cpu_s)
        try:
            outcome: Outcome = ("ok", function(*args))
        except MemoryError:
            # The heap may be in any state now: answer, then leave so that a fresh process
            # takes this one's place.
            conn.send(("error", MemoryError("the task went over the pool process's memory limit")))
            os._exit(1)
        except Exception as exc:
            peak = _peak_address_space()
            if address_space_limit is not None and start_peak < peak >= address_space_limit - margin:
                # A library that failed to allocate may say so in its own words ("unknown
                # error", "corrupt"): an error at the memory limit is the limit's doing.
                conn.send(("error", MemoryError("the task went over the pool process's memory limit")))
                os._exit(1)
            outcome = ("error", _portable(exc))
        finally:
            _limit_cpu(None)
        conn.send(outcome)


def _portable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RemoteTaskError(f"{type(exc).__name__}: {exc}")
    return exc


def _limit_memory(limit_bytes: int) -> int:
    """Cap the address space at what the process has now plus `limit_bytes`: an allocation
    beyond it fails instead of growing the process. Returns the cap."""
    with open("/proc/self/statm") as statm:
        size_pages = int(statm.read().split()[0])
    current = size_pages * os.sysconf("SC_PAGE_SIZE")
    limit = current + limit_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def _peak_address_space() -> int:
    """The largest the address space has been, in bytes (a forked process starts with its
    parent's peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_cpu(cpu_s: float | None) -> None:
    """Let the next task use at most `cpu_s` CPU-seconds (the kernel ends the process with
    SIGXCPU past it); None lifts the limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if cpu_s is None:
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used_s = usage.ru_utime + usage.ru_stime
    soft = math.ceil(used_s + cpu_s)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _exit_with_parent() -> None:
    """Exit when the main process is gone, even while a task runs (a task never reads `conn`)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # waits on a pipe that the main process's end closes
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
