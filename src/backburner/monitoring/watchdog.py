"""The event-loop watchdog: sees a stalled loop while it is stalled, and names the culprit.

Two halves:

- a *heartbeat* on the loop, a ``call_later`` chain every ``heartbeat_interval_s``, which
  records when it ran, the loop thread's CPU time and the GC total, and observes the loop
  lag: a few attribute reads and writes and one histogram observation per beat.
- a *watchdog thread*, which sleeps on a ``threading.Event`` until the moment the stall
  threshold would be crossed if no further beat came (next expected beat + threshold). If a
  beat came meanwhile it sleeps until the next such moment; if not, the loop is stalled now.
  So it wakes about once per threshold while the loop is healthy, and sees a stall within a
  millisecond or so of the threshold, without polling.

On a stall the thread samples the loop thread's stack (``sys._current_frames``), finds the
running task (the one whose coroutine is executing) and what Backburner was doing in it
(``task_context``), measures GC time and the loop thread's CPU time since the last beat,
classifies the cause, and reports once. A stall lasting past ``hang_threshold_s`` is a hang:
logged at CRITICAL with every thread's stack; readiness is degraded until the loop has been
free of stalls for ``recovery_s``; repeated hangs are posted to a webhook.

A garbage collection holds the GIL throughout, so the thread may only get to look once it is
over. The heartbeat therefore flags any beat that came late; a late beat the thread never
saw as an ongoing stall is still reported, from what the heartbeat measured, without a stack.

Only public asyncio APIs are used (``call_later``, ``all_tasks``, ``Task.get_coro``), so any
loop implementation works, uvloop included.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import NamedTuple

from backburner.monitoring.alerts import AlertSender, WebhookAlertSender
from backburner.monitoring.gc_probe import GcTimer
from backburner.monitoring.stacks import (
    FrameInfo,
    all_thread_stacks,
    find_culprit,
    format_stack,
    is_idle_in_loop,
    thread_stack,
)
from backburner.monitoring.stall import (
    CAUSES,
    StallCause,
    StallReport,
    StallSignals,
    classify,
    describe,
    log_fields,
)
from backburner.monitoring.task_context import Activity, activity_of_task, activity_of_thread
from backburner.monitoring.thread_probe import SchedCounters, ThreadProbe
from backburner.monitoring.watchdog_config import WatchdogConfig
from backburner.monitoring.watchdog_metrics import WatchdogMetrics

__all__ = ["Watchdog", "WatchdogConfig", "running_task"]

logger = logging.getLogger("backburner.watchdog")

# The thread never sleeps less than this, so a deadline reached early cannot make it spin.
_MIN_WAIT_S = 0.0005


class _Beat(NamedTuple):
    """What one heartbeat measured; replaced whole, so the thread reads a consistent one."""

    seq: int
    at: float
    expected_at: float  # when the next beat is due
    lag_s: float  # how late this beat ran
    gc_s: float  # GC total at this beat
    sched: SchedCounters  # loop thread CPU time and run-queue wait at this beat
    gap: StallSignals | None  # what happened since the previous beat, if it came late


@dataclass(slots=True)
class _OpenStall:
    report: StallReport
    beat_seq: int  # the last beat before the stall: a newer one means the stall is over
    expected_at: float  # when the loop should have beaten: the stall's start


def running_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[object] | None:
    """The task executing on ``loop`` right now, callable from another thread.

    ``all_tasks`` copies the task set with retries, which is what makes it usable off the
    loop thread; the running task is the one whose coroutine is executing.
    """
    try:
        tasks = asyncio.all_tasks(loop)
    except RuntimeError:
        return None
    for task in tasks:
        coro = task.get_coro()
        if getattr(coro, "cr_running", False) or getattr(coro, "gi_running", False):
            return task
    return None


class Watchdog:
    """Watches one event loop. Call ``start()`` and ``stop()`` on the loop's thread.

    ``clock`` must tick in real seconds (the thread sleeps in real time until deadlines
    computed with it); it is injectable to share a clock with the rest of the runtime.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: WatchdogConfig,
        metrics: WatchdogMetrics | None = None,
        alert_sender: AlertSender | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self.config = config
        self._metrics = metrics
        self._alert_sender: AlertSender = alert_sender or WebhookAlertSender(config.alert_timeout_s)
        self._clock = clock
        self._gc = GcTimer()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._running = False
        # Written by the heartbeat, read by the thread.
        self._beat: _Beat | None = None
        self._late_beat: _Beat | None = None
        self._loop_thread: threading.Thread | None = None
        self._probe: ThreadProbe | None = None
        # Written by the thread, read by the heartbeat: wake the thread when a stall ends.
        self._stall_open = False
        # The thread's own bookkeeping.
        self._open: _OpenStall | None = None
        self._handled_seq = 0  # late beats up to this one are accounted for
        self._last_logged_at: float | None = None
        self._suppressed_since_log = 0
        # Read by snapshot() and state() from any thread, under the lock.
        self._lock = threading.Lock()
        self._recent: deque[StallReport] = deque(maxlen=config.max_recent_stalls)
        self._next_id = 1
        self._stalls_by_cause: dict[StallCause, int] = dict.fromkeys(CAUSES, 0)
        self._hangs = 0
        self._consecutive_hangs = 0
        self._degraded_since: float | None = None
        self._healthy_since: float | None = None
        self._suppressed = 0
        self._alerts_sent = 0
        self._alerts_failed = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the heartbeat and the watchdog thread; does nothing when disabled."""
        if not self.config.enabled or self._running:
            return
        self._running = True
        # A fresh start: beat numbering, open stall and health begin again; counts are kept.
        self._beat = self._late_beat = None
        self._handled_seq = 0
        self._open = None
        self._stall_open = False
        with self._lock:
            self._degraded_since = self._healthy_since = None
            self._consecutive_hangs = 0
        self._wake.clear()
        self._gc.install()
        if self._metrics is not None:
            self._metrics.watch(tasks=self._task_count, healthy=lambda: self.healthy)
        if _running_loop() is self._loop:
            self._heartbeat()
        else:
            self._loop.call_soon_threadsafe(self._heartbeat)
        self._thread = threading.Thread(target=self._run, name="backburner-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat and join the watchdog thread."""
        if not self._running:
            return
        self._running = False  # a beat already queued sees this and does not reschedule
        handle = self._handle
        if handle is not None:
            if _running_loop() is self._loop or not self._loop.is_running():
                handle.cancel()
            else:
                self._loop.call_soon_threadsafe(handle.cancel)
        self._wake.set()
        thread = self._thread
        if thread is not None:
            # The thread answers the wake at once unless it is posting an alert.
            thread.join(timeout=self.config.alert_timeout_s + 1.0)
            self._thread = None
        self._gc.uninstall()
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._metrics is not None:
            self._metrics.watch(tasks=lambda: 0, healthy=lambda: True)

    async def __aenter__(self) -> Watchdog:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- reading ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def healthy(self) -> bool:
        """False from a hang until the loop has been free of stalls for ``recovery_s``."""
        return self._degraded_since is None

    def lag_s(self) -> float:
        """How late the heartbeat is right now (0 when on time or not running)."""
        beat = self._beat
        if beat is None or not self._running:
            return 0.0
        return max(0.0, self._clock() - beat.expected_at)

    def state(self) -> dict[str, object]:
        """Health for ``/readyz``: ``healthy`` is False while degraded after a hang."""
        now = self._clock()
        with self._lock:
            degraded_since = self._degraded_since
            healthy_since = self._healthy_since
            stalled = self._open is not None
            consecutive = self._consecutive_hangs
        if not self.config.enabled:
            status = "disabled"
        elif not self._running:
            status = "stopped"
        else:
            status = "ok" if degraded_since is None else "degraded"
        recovers_in_s: float | None = None
        if degraded_since is not None and not stalled and healthy_since is not None:
            recovers_in_s = round(max(0.0, healthy_since + self.config.recovery_s - now), 3)
        return {
            "status": status,
            "healthy": degraded_since is None,
            "stalled": stalled,
            "lag_s": round(self.lag_s(), 4),
            "consecutive_hangs": consecutive,
            "degraded_for_s": None if degraded_since is None else round(now - degraded_since, 3),
            "recovers_in_s": recovers_in_s,
        }

    def recent_stalls(self) -> list[StallReport]:
        """Recent stalls, newest first."""
        with self._lock:
            return list(self._recent)

    def snapshot(self) -> dict[str, object]:
        """Everything ``GET /api/admin/watchdog`` shows, JSON-ready."""
        config = self.config
        with self._lock:
            stalls = [report.as_dict() for report in self._recent]
            counts = {
                "stalls": sum(self._stalls_by_cause.values()),
                "stalls_by_cause": dict(self._stalls_by_cause),
                "hangs": self._hangs,
                "reports_suppressed": self._suppressed,
                "alerts_sent": self._alerts_sent,
                "alerts_failed": self._alerts_failed,
            }
        return {
            "enabled": config.enabled,
            "running": self._running,
            "thresholds": {
                "stall_s": config.stall_threshold_s,
                "hang_s": config.hang_threshold_s,
                "check_interval_s": config.check_interval_s,
                "heartbeat_interval_s": config.heartbeat_interval_s,
                "recovery_s": config.recovery_s,
                "alert_after_hangs": config.alert_after_hangs,
            },
            "lag_s": round(self.lag_s(), 4),
            "state": self.state(),
            "counts": counts,
            "recent_stalls": stalls,
        }

    # -- loop side -------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        if not self._running:
            return
        now = self._clock()
        gc_s = self._gc.total_s()
        config = self.config
        probe, previous = self._probe, self._beat
        if probe is None or previous is None:
            self._loop_thread = threading.current_thread()
            self._probe = probe = ThreadProbe(self._loop_thread)
            beat = _Beat(1, now, now + config.heartbeat_interval_s, 0.0, gc_s, probe.counters(), None)
        else:
            sched = probe.counters()
            lag_s = max(0.0, now - previous.expected_at)
            gap = None
            if lag_s >= config.stall_threshold_s:  # kept in case the thread never saw this stall
                gap = _signals_between(previous.sched, sched, now - previous.at, gc_s - previous.gc_s)
            beat = _Beat(previous.seq + 1, now, now + config.heartbeat_interval_s, lag_s, gc_s, sched, gap)
            if self._metrics is not None:
                self._metrics.loop_lag.observe(lag_s)
        self._beat = beat
        self._handle = self._loop.call_later(config.heartbeat_interval_s, self._heartbeat)
        if beat.gap is not None:
            self._late_beat = beat
            self._wake.set()
        elif self._stall_open:
            self._wake.set()

    def _task_count(self) -> int:
        try:
            return len(asyncio.all_tasks(self._loop))
        except RuntimeError:
            return 0

    # -- watchdog thread -------------------------------------------------------------------

    def _run(self) -> None:
        timeout_s = self.config.heartbeat_interval_s
        while True:
            due_at = self._clock() + timeout_s
            woken = self._wake.wait(timeout_s)
            self._wake.clear()
            if not self._running:
                return
            now = self._clock()
            late_s = 0.0 if woken else max(0.0, now - due_at)
            try:
                timeout_s = self._check(now, late_s)
            except Exception:  # the watchdog must outlive its own bugs
                logger.exception("watchdog check failed", extra={"event": "watchdog.error"})
                timeout_s = self.config.check_interval_s

    def _check(self, now: float, late_s: float) -> float:
        """One look at the heartbeat; returns how long to sleep until the next deadline."""
        config = self.config
        beat = self._beat
        if beat is None:  # the first beat is still queued on the loop
            return config.heartbeat_interval_s
        open_stall = self._open
        if open_stall is not None:
            if beat.seq != open_stall.beat_seq:
                self._end_stall(open_stall, beat)
                open_stall = None
            elif not open_stall.report.hang and now - open_stall.expected_at >= config.hang_threshold_s:
                self._declare_hang(open_stall, now)
        late = self._late_beat
        # Only beats up to the one read above: a newer late beat may end a stall opened below.
        if late is not None and self._handled_seq < late.seq <= beat.seq:
            self._record_unsampled(late, now, late_s)
        if open_stall is None and now - beat.expected_at >= config.stall_threshold_s:
            open_stall = self._open_stall(beat, now, late_s)
        self._maybe_recover(now)

        if open_stall is None:
            deadline = beat.expected_at + config.stall_threshold_s
        elif not open_stall.report.hang:
            deadline = open_stall.expected_at + config.hang_threshold_s
        else:
            deadline = now + config.check_interval_s  # the next beat wakes the thread
        healthy_since = self._healthy_since
        if self._degraded_since is not None and healthy_since is not None:
            deadline = min(deadline, healthy_since + config.recovery_s)
        return min(max(deadline - now, _MIN_WAIT_S), config.check_interval_s)

    def _open_stall(self, beat: _Beat, now: float, late_s: float) -> _OpenStall:
        loop_thread, probe = self._loop_thread, self._probe
        assert loop_thread is not None and loop_thread.ident is not None and probe is not None
        sched = probe.counters()
        frames = thread_stack(loop_thread.ident)
        task = running_task(self._loop)
        activity: Activity | None = (
            activity_of_task(task) if task is not None else activity_of_thread(loop_thread.ident)
        )
        signals = replace(
            _signals_between(beat.sched, sched, now - beat.at, self._gc.total_s() - beat.gc_s),
            watchdog_late_s=late_s,
            idle_in_loop=is_idle_in_loop(frames),
        )
        stalled_s = now - beat.expected_at
        report = self._new_report(
            signals,
            now=now,
            stalled_s=stalled_s,
            ongoing=True,
            frames=frames,
            task=task.get_name() if task is not None else None,
            activity=activity,
            thread_state=probe.state(),
        )
        open_stall = _OpenStall(report, beat.seq, beat.expected_at)
        with self._lock:
            self._open = open_stall
            self._healthy_since = None
        self._stall_open = True
        if self._beat is not beat:  # the loop beat while we looked: check again at once
            self._wake.set()
        self._log_stall(report, now)
        return open_stall

    def _record_unsampled(self, late: _Beat, now: float, late_s: float) -> None:
        """Report a stall that ended before the thread could look, from the late beat alone."""
        self._handled_seq = late.seq
        assert late.gap is not None
        report = self._new_report(
            replace(late.gap, watchdog_late_s=late_s),
            now=now,
            stalled_s=late.lag_s,
            ongoing=False,
            frames=(),
            task=None,
            activity=None,
            thread_state=None,
        )
        with self._lock:
            if self._open is None:
                self._healthy_since = late.at
        self._log_stall(report, now)
        if late.lag_s >= self.config.hang_threshold_s:
            self._declare_hang(_OpenStall(report, late.seq, late.at - late.lag_s), now)

    def _new_report(
        self,
        signals: StallSignals,
        *,
        now: float,
        stalled_s: float,
        ongoing: bool,
        frames: Sequence[FrameInfo],
        task: str | None,
        activity: Activity | None,
        thread_state: str | None,
    ) -> StallReport:
        """Classify, number, keep and count a new stall."""
        cause = classify(signals)
        on_cpu_s = signals.on_cpu_s
        with self._lock:
            report = StallReport(
                id=self._next_id,
                cause=cause,
                started_at=self._wall_time(now - stalled_s),
                detected_at=now,
                detected_after_s=stalled_s,
                duration_s=stalled_s,
                ongoing=ongoing,
                hang=False,
                sampled=ongoing,
                culprit=find_culprit(frames),
                stack=tuple(frames[: self.config.stack_depth]),
                task=task,
                activity=activity,
                gc_s=signals.gc_s,
                on_cpu_ratio=None if on_cpu_s is None else min(1.0, on_cpu_s / max(signals.window_s, 1e-9)),
                run_delay_s=signals.run_delay_s,
                thread_state=thread_state,
            )
            self._next_id += 1
            self._recent.appendleft(report)
            self._stalls_by_cause[cause] += 1
        if self._metrics is not None:
            self._metrics.stalls.labels(cause=cause).inc()
        return report

    def _wall_time(self, at: float) -> str:
        """A time of the watchdog clock as an ISO 8601 UTC wall-clock time."""
        wall = time.time() - (self._clock() - at)
        return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")

    def _log_stall(self, report: StallReport, now: float) -> None:
        last = self._last_logged_at
        if last is not None and now - last < self.config.report_min_interval_s:
            self._suppressed_since_log += 1
            with self._lock:
                self._suppressed += 1
            return
        suppressed, self._suppressed_since_log = self._suppressed_since_log, 0
        self._last_logged_at = now
        logger.warning(
            "event loop stalled for %.3fs (%s) %s",
            report.detected_after_s,
            report.cause,
            describe(report),
            extra={"event": "loop.stalled", "suppressed_since_last": suppressed, **log_fields(report)},
        )

    def _end_stall(self, open_stall: _OpenStall, beat: _Beat) -> None:
        self._handled_seq = beat.seq
        final = replace(open_stall.report, duration_s=beat.at - open_stall.expected_at, ongoing=False)
        with self._lock:
            self._replace_recent(final)
            self._open = None
            self._healthy_since = beat.at
        self._stall_open = False

    def _declare_hang(self, open_stall: _OpenStall, now: float) -> None:
        report = open_stall.report
        if report.sampled:
            # Sampled again: after hang_threshold_s the loop may be stuck somewhere else.
            loop_thread = self._loop_thread
            frames = thread_stack(loop_thread.ident) if loop_thread and loop_thread.ident else []
            report = replace(
                report,
                duration_s=now - open_stall.expected_at,
                culprit=find_culprit(frames) or report.culprit,
                stack=tuple(frames[: self.config.stack_depth]) or report.stack,
            )
        report = replace(report, hang=True)
        open_stall.report = report
        with self._lock:
            self._replace_recent(report)
            self._hangs += 1
            self._consecutive_hangs += 1
            consecutive = self._consecutive_hangs
            if self._degraded_since is None:
                self._degraded_since = now
        if self._metrics is not None:
            self._metrics.hangs.inc()
        threads = all_thread_stacks()
        logger.critical(
            "event loop hung for %.3fs %s; readiness degraded\n%s",
            report.duration_s,
            describe(report),
            "\n".join(f"Thread {name}:\n{format_stack(stack)}" for name, stack in threads.items()),
            extra={
                "event": "loop.hung",
                "consecutive_hangs": consecutive,
                "threads": {name: [str(frame) for frame in stack] for name, stack in threads.items()},
                **log_fields(report),
            },
        )
        url = self.config.alert_webhook_url
        if url and consecutive >= self.config.alert_after_hangs:
            self._send_alert(url, report, consecutive)

    def _send_alert(self, url: str, hang: StallReport, consecutive: int) -> None:
        payload = {
            "event": "loop.hung",
            "summary": f"event loop hung {consecutive} times in a row (pid {os.getpid()})",
            "pid": os.getpid(),
            "consecutive_hangs": consecutive,
            "hang_threshold_s": self.config.hang_threshold_s,
            "stall": hang.as_dict(),
        }
        try:
            self._alert_sender(url, payload)
        except Exception as exc:  # an alert that cannot be sent must not stop the watchdog
            with self._lock:
                self._alerts_failed += 1
            logger.error(
                "watchdog alert to %s failed: %r",
                url,
                exc,
                extra={"event": "loop.alert_failed", "consecutive_hangs": consecutive},
            )
        else:
            with self._lock:
                self._alerts_sent += 1
            logger.info(
                "watchdog alert sent to %s",
                url,
                extra={"event": "loop.alert_sent", "consecutive_hangs": consecutive},
            )

    def _maybe_recover(self, now: float) -> None:
        with self._lock:
            degraded_since, healthy_since = self._degraded_since, self._healthy_since
            if (
                degraded_since is None
                or healthy_since is None
                or now - healthy_since < self.config.recovery_s
            ):
                return
            self._degraded_since = None
            self._consecutive_hangs = 0
        logger.info(
            "event loop healthy for %.1fs after a hang; readiness restored",
            now - healthy_since,
            extra={"event": "loop.recovered", "degraded_for_s": round(now - degraded_since, 3)},
        )

    def _replace_recent(self, report: StallReport) -> None:
        """Swap in a newer version of a recent report (the caller holds the lock)."""
        for index, existing in enumerate(self._recent):
            if existing.id == report.id:
                self._recent[index] = report
                return


def _signals_between(
    before: SchedCounters, after: SchedCounters, window_s: float, gc_s: float
) -> StallSignals:
    """Stall signals from two readings of the loop thread's counters; the stack is judged later."""

    def delta(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else max(0.0, end - start)

    return StallSignals(
        window_s=window_s,
        gc_s=max(0.0, gc_s),
        on_cpu_s=delta(before.cpu_s, after.cpu_s),
        run_delay_s=delta(before.run_delay_s, after.run_delay_s),
        watchdog_late_s=0.0,
        idle_in_loop=False,
    )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
