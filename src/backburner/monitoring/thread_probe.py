"""Whether a thread is getting the CPU: its CPU time, run-queue wait and scheduler state.

Read from another thread. CPU time comes from the thread's CPU clock (the same clock
``time.thread_time()`` reads on the thread itself, so the two can be subtracted). Run-queue
wait and state come from ``/proc/self/task/<tid>/`` where Linux provides it; elsewhere they
are None and the watchdog judges without them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

__all__ = ["ThreadProbe", "ThreadSample"]

_STATE_NAMES = {
    "R": "running",  # running or runnable: on a CPU or waiting in the run queue
    "S": "sleeping",
    "D": "uninterruptible",
    "T": "stopped",
    "t": "traced",
    "Z": "zombie",
    "X": "dead",
}


@dataclass(frozen=True, slots=True)
class ThreadSample:
    """One reading of a thread's scheduling counters. Unknown values are None."""

    cpu_s: float | None
    run_delay_s: float | None
    state: str | None


class ThreadProbe:
    """Reads the scheduling counters of one thread (typically the event loop's)."""

    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread
        self._task_dir = f"/proc/self/task/{thread.native_id}" if thread.native_id else None

    def cpu_time_s(self) -> float | None:
        # A stale pthread id must never reach pthread_getcpuclockid: check the thread lives.
        ident = self._thread.ident
        if ident is None or not self._thread.is_alive():
            return None
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(ident))
        except (AttributeError, OSError):  # not a POSIX platform, or the thread just ended
            return None

    def sample(self) -> ThreadSample:
        return ThreadSample(self.cpu_time_s(), self._run_delay_s(), self._state())

    def _run_delay_s(self) -> float | None:
        text = self._read("schedstat")
        if text is None:
            return None
        fields = text.split()
        # schedstat: time on CPU (ns), time waiting on a run queue (ns), timeslices.
        if len(fields) < 2 or not fields[1].isdigit():
            return None
        return int(fields[1]) / 1e9

    def _state(self) -> str | None:
        text = self._read("stat")
        if text is None:
            return None
        # stat: "pid (comm) S ..."; comm may hold spaces or parentheses, so split after the last ")".
        after_comm = text.rpartition(")")[2].split()
        if not after_comm:
            return None
        return _STATE_NAMES.get(after_comm[0], after_comm[0])

    def _read(self, name: str) -> str | None:
        if self._task_dir is None:
            return None
        try:
            with open(f"{self._task_dir}/{name}", encoding="ascii") as file:
                return file.read()
        except OSError:
            return None
