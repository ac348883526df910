"""Whether a thread is getting the CPU: its CPU time, run-queue wait and scheduler state.

The heartbeat reads the loop thread's counters on every beat and the watchdog thread reads
them again during a stall; the difference says whether the loop thread ran, waited for a
CPU, or slept. On Linux both come from ``/proc/self/task/<tid>/schedstat``, kept open and
re-read with ``pread`` (well under a microsecond, and no file is opened per beat).
Elsewhere CPU time comes from the thread's CPU clock and the run-queue wait is unknown.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

__all__ = ["SchedCounters", "ThreadProbe"]

_STATE_NAMES = {
    "R": "running",  # running or runnable: on a CPU or waiting in the run queue for one
    "S": "sleeping",
    "D": "uninterruptible",
    "T": "stopped",
    "t": "traced",
    "Z": "zombie",
    "X": "dead",
}


@dataclass(frozen=True, slots=True)
class SchedCounters:
    """Cumulative counters of one thread. Unknown values are None."""

    cpu_s: float | None  # time on a CPU
    run_delay_s: float | None  # time runnable but waiting in a run queue


class ThreadProbe:
    """Reads the scheduling counters of one thread (the event loop's) from any thread."""

    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread
        self._task_dir = f"/proc/self/task/{thread.native_id}" if thread.native_id else None
        self._schedstat_fd: int | None = None
        if self._task_dir is not None:
            try:
                self._schedstat_fd = os.open(f"{self._task_dir}/schedstat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._schedstat_fd = None

    def close(self) -> None:
        fd, self._schedstat_fd = self._schedstat_fd, None
        if fd is not None:
            os.close(fd)

    def counters(self) -> SchedCounters:
        fd = self._schedstat_fd
        if fd is not None:
            try:
                # schedstat: time on CPU (ns), time waiting in a run queue (ns), timeslices.
                fields = os.pread(fd, 128, 0).split()
                return SchedCounters(int(fields[0]) / 1e9, int(fields[1]) / 1e9)
            except (OSError, ValueError, IndexError):
                pass
        return SchedCounters(self._cpu_clock_s(), None)

    def state(self) -> str | None:
        """The scheduler state now: running (or runnable), sleeping, ... or None if unknown."""
        if self._task_dir is None:
            return None
        try:
            with open(f"{self._task_dir}/stat", encoding="ascii") as file:
                text = file.read()
        except OSError:
            return None
        # "pid (comm) S ...": comm may hold spaces or parentheses, so split after the last ")".
        after_comm = text.rpartition(")")[2].split()
        return _STATE_NAMES.get(after_comm[0], after_comm[0]) if after_comm else None

    def _cpu_clock_s(self) -> float | None:
        # A stale pthread id must never reach pthread_getcpuclockid: check the thread lives.
        ident = self._thread.ident
        if ident is None or not self._thread.is_alive():
            return None
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(ident))
        except (AttributeError, OSError):  # not a POSIX platform, or the thread just ended
            return None
