"""What a stall is made of and what caused it: pure data and a pure decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from backburner.monitoring.stacks import FrameInfo
from backburner.monitoring.task_context import Activity

__all__ = ["CAUSES", "StallCause", "StallReport", "StallSignals", "classify", "describe", "log_fields"]

StallCause = Literal["blocking", "gc", "starved"]
CAUSES: tuple[StallCause, ...] = ("blocking", "gc", "starved")

# A cause is blamed when it explains at least this share of the stall.
_DOMINANT_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class StallSignals:
    """What was measured over a stall window: from the last heartbeat to the check."""

    window_s: float
    gc_s: float  # time in garbage collection
    on_cpu_s: float | None  # CPU time the loop thread got
    run_delay_s: float | None  # time the loop thread was runnable but waiting for a CPU
    watchdog_late_s: float  # how much later than asked the watchdog thread itself woke
    idle_in_loop: bool  # the loop thread's innermost frame is the loop, not a task


def classify(signals: StallSignals) -> StallCause:
    """Blame garbage collection, starvation or blocking code, in that order.

    GC first: while the collector runs the loop cannot, however much CPU it gets; a
    collection slowed by a busy host is still a collection (its run-queue wait is in the
    report). Starvation needs the loop thread to have been mostly off the CPU *and* evidence
    that it wanted to run: it waited in the run queue, it sits in the loop's own frames (it
    woke up and could not proceed: no CPU, or the GIL held elsewhere), or the whole process,
    the watchdog included, was not running. Code sleeping on the loop thread (``time.sleep``,
    blocking I/O) is off the CPU too, but it is not runnable and its stack is in application
    code, so it counts as blocking.
    """
    share = _DOMINANT_SHARE * max(signals.window_s, 1e-9)
    if signals.gc_s >= share:
        return "gc"
    if signals.on_cpu_s is not None and signals.on_cpu_s < share:
        waited_to_run = signals.run_delay_s is not None and signals.run_delay_s >= share
        process_paused = signals.watchdog_late_s >= share
        if waited_to_run or signals.idle_in_loop or process_paused:
            return "starved"
    return "blocking"


@dataclass(frozen=True, slots=True)
class StallReport:
    """One stall as reported while it happened, completed with its length when it ends."""

    id: int
    cause: StallCause
    started_at: str  # wall clock, ISO 8601 UTC, estimated from the last heartbeat
    detected_at: float  # watchdog clock (monotonic): when the report was made
    detected_after_s: float  # how long the stall had lasted when reported
    duration_s: float  # so far while ongoing, final once ended
    ongoing: bool
    hang: bool
    # False when the stall ended before the watchdog thread could look (a collection or a
    # native call holding the GIL, a paused process): then stack, task and activity are empty.
    sampled: bool
    culprit: FrameInfo | None
    stack: tuple[FrameInfo, ...]  # innermost first, short
    task: str | None
    activity: Activity | None
    gc_s: float
    on_cpu_ratio: float | None  # share of the time since the last heartbeat spent on a CPU
    run_delay_s: float | None  # time waiting in the run queue, runnable but not running
    thread_state: str | None  # the loop thread's scheduler state when reported

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, for logs and ``GET /api/admin/watchdog``."""
        return {
            "id": self.id,
            "cause": self.cause,
            "started_at": self.started_at,
            "detected_after_s": round(self.detected_after_s, 4),
            "duration_s": round(self.duration_s, 4),
            "ongoing": self.ongoing,
            "hang": self.hang,
            "sampled": self.sampled,
            "culprit": self.culprit.as_dict() if self.culprit else None,
            "stack": [str(frame) for frame in self.stack],
            "task": self.task,
            "activity": self.activity.as_dict() if self.activity else None,
            "gc_s": round(self.gc_s, 4),
            "on_cpu_ratio": None if self.on_cpu_ratio is None else round(self.on_cpu_ratio, 3),
            "run_delay_s": None if self.run_delay_s is None else round(self.run_delay_s, 4),
            "thread_state": self.thread_state,
        }


def describe(report: StallReport) -> str:
    """Where and in what the loop was stuck, for a human log line."""
    where = f"at {report.culprit}" if report.culprit else "(stack not sampled)"
    text = f"{where}, task {report.task or 'none'}"
    if report.activity is not None:
        text += ", doing " + " ".join(f"{key}={value}" for key, value in report.activity.as_dict().items())
    return text


def log_fields(report: StallReport) -> dict[str, object]:
    """Flat structured log fields; the names avoid the attributes LogRecord already has."""
    return {
        "stall_id": report.id,
        "cause": report.cause,
        "duration_s": round(report.duration_s, 4),
        "culprit": str(report.culprit) if report.culprit else None,
        "task_name": report.task,
        "activity": report.activity.as_dict() if report.activity else None,
        "gc_s": round(report.gc_s, 4),
        "on_cpu_ratio": None if report.on_cpu_ratio is None else round(report.on_cpu_ratio, 3),
        "run_delay_s": None if report.run_delay_s is None else round(report.run_delay_s, 4),
        "thread_state": report.thread_state,
        "sampled": report.sampled,
        "stack": [str(frame) for frame in report.stack],
    }
