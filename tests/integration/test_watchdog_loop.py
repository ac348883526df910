"""The watchdog against a real event loop, blocked for real.

Blocking the loop with ``time.sleep`` is the point of these tests, hence the ``noqa: ASYNC251``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backburner.monitoring.task_context import Activity, doing
from backburner.monitoring.watchdog import Watchdog, WatchdogConfig
from backburner.monitoring.watchdog_metrics import WatchdogMetrics

DEADLINE_S = 10.0

try:
    import uvloop
except ImportError:  # optional: the watchdog is also tested on uvloop where it is installed
    uvloop = None

LOOP_FACTORIES: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop]
if uvloop is not None:
    LOOP_FACTORIES.append(uvloop.new_event_loop)


class WatchdogLog(logging.Handler):
    """Collects the watchdog's records, stamped with when they were emitted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[float, logging.LogRecord]] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append((time.monotonic(), record))
            self._changed.notify_all()

    def events(self, event: str) -> list[tuple[float, logging.LogRecord]]:
        with self._changed:
            return [(at, record) for at, record in self.records if getattr(record, "event", None) == event]

    def wait_for(
        self, event: str, count: int = 1, timeout_s: float = DEADLINE_S
    ) -> list[tuple[float, logging.LogRecord]]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.events(event)) >= count, timeout_s):
                raise TimeoutError(f"no {count} x {event} within {timeout_s}s: {self.records}")
        return self.events(event)


@pytest.fixture
def watchdog_log() -> Iterator[WatchdogLog]:
    logger = logging.getLogger("backburner.watchdog")
    handler = WatchdogLog()
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous_level)


def field(record: logging.LogRecord, name: str) -> object:
    """A structured field passed to the logger in ``extra``."""
    return record.__dict__[name]


def config(**overrides: object) -> WatchdogConfig:
    """Test settings: every stall logged, short recovery."""
    values: dict[str, object] = {"report_min_interval_s": 0.0, "recovery_s": 0.5, "hang_threshold_s": 2.0}
    values.update(overrides)
    return WatchdogConfig(**values)  # type: ignore[arg-type]


async def wait_until(predicate: Callable[[], bool], timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_time_sleep_is_reported_once_while_it_sleeps(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], watchdog_log: WatchdogLog
) -> None:
    async def scenario() -> tuple[float, float, int]:
        async with Watchdog(asyncio.get_running_loop(), config()) as watchdog:
            started = time.monotonic()
            line = sys._getframe().f_lineno + 1
            time.sleep(1.0)  # noqa: ASYNC251
            returned = time.monotonic()
            await wait_until(lambda: not watchdog.state()["stalled"])
            reports = watchdog.recent_stalls()
        assert len(reports) == 1
        report = reports[0]
        assert report.cause == "blocking"
        assert report.culprit is not None
        assert (report.culprit.filename, report.culprit.lineno, report.culprit.function) == (
            __file__,
            line,
            "scenario",
        )
        assert started + 0.25 <= report.detected_at < returned
        assert report.duration_s == pytest.approx(1.0, abs=0.1)
        assert not report.ongoing
        return started, returned, line

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        started, returned, line = runner.run(scenario())

    stalled = watchdog_log.events("loop.stalled")
    assert len(stalled) == 1
    emitted_at, record = stalled[0]
    assert started + 0.25 <= emitted_at < returned  # logged while the call was still sleeping
    assert record.levelno == logging.WARNING
    assert field(record, "culprit") == f"{__file__}:{line} in scenario"
    assert field(record, "cause") == "blocking"
    assert watchdog_log.events("loop.hung") == []


async def test_report_names_the_task_and_what_it_was_doing(watchdog_log: WatchdogLog) -> None:
    async def parse_file() -> None:
        with doing(file_id="file-42", stage="parsing"):
            time.sleep(0.5)  # noqa: ASYNC251

    async with Watchdog(asyncio.get_running_loop(), config()) as watchdog:
        await asyncio.wait_for(asyncio.create_task(parse_file(), name="file-worker-1"), DEADLINE_S)
        await wait_until(lambda: not watchdog.state()["stalled"])
        (report,) = watchdog.recent_stalls()

    assert report.task == "file-worker-1"
    assert report.activity == Activity(file_id="file-42", stage="parsing")
    assert report.culprit is not None and report.culprit.function == "parse_file"
    assert report.thread_state in (None, "sleeping")
    assert report.on_cpu_ratio is None or report.on_cpu_ratio < 0.5
    (_, record) = watchdog_log.events("loop.stalled")[0]
    assert field(record, "task_name") == "file-worker-1"
    assert field(record, "activity") == {"file_id": "file-42", "stage": "parsing"}


async def test_a_hang_is_critical_degrades_and_recovers(watchdog_log: WatchdogLog) -> None:
    registry = CollectorRegistry()
    metrics = WatchdogMetrics(registry)
    async with Watchdog(asyncio.get_running_loop(), config(recovery_s=0.5), metrics) as watchdog:
        started = time.monotonic()
        time.sleep(3.0)  # noqa: ASYNC251
        returned = time.monotonic()

        state = watchdog.state()
        assert state["healthy"] is False
        assert state["status"] == "degraded"
        assert not watchdog.healthy
        assert registry.get_sample_value("backburner_watchdog_healthy") == 0

        recovered = await asyncio.to_thread(watchdog_log.wait_for, "loop.recovered")
        assert watchdog.state()["healthy"] is True
        assert watchdog.state()["status"] == "ok"
        assert registry.get_sample_value("backburner_watchdog_healthy") == 1

    ((hung_at, hung),) = watchdog_log.events("loop.hung")
    assert hung.levelno == logging.CRITICAL
    assert started + 2.0 <= hung_at < returned  # while still hung
    assert str(field(hung, "culprit")).endswith("in test_a_hang_is_critical_degrades_and_recovers")
    assert "MainThread" in hung.getMessage() and "backburner-watchdog" in hung.getMessage()
    threads = field(hung, "threads")
    assert isinstance(threads, dict)
    assert any(name.startswith("MainThread") for name in threads)
    # Readiness came back only after recovery_s of health, counted from the end of the hang.
    assert recovered[0][0] - returned >= 0.5 - 0.05
    assert registry.get_sample_value("backburner_loop_hangs_total") == 1
    assert registry.get_sample_value("backburner_loop_stalls_total", {"cause": "blocking"}) == 1
    snapshot = watchdog.snapshot()
    assert snapshot["counts"] == {
        "stalls": 1,
        "stalls_by_cause": {"blocking": 1, "gc": 0, "starved": 0},
        "hangs": 1,
        "reports_suppressed": 0,
        "alerts_sent": 0,
        "alerts_failed": 0,
    }
    recent = snapshot["recent_stalls"]
    assert isinstance(recent, list) and recent[0]["hang"] is True
    assert json.loads(json.dumps(snapshot)) == snapshot


def _cyclic_garbage(pairs: int) -> list[list[object]]:
    """Many small reference cycles: only the cycle collector can free them."""
    heap: list[list[object]] = []
    for _ in range(pairs):
        first: list[object] = []
        second: list[object] = [first]
        first.append(second)
        heap.append(first)
    return heap


async def test_a_long_collection_is_blamed_on_gc(watchdog_log: WatchdogLog) -> None:
    gc.disable()  # build fast, without collections along the way
    try:
        heap = _cyclic_garbage(2_500_000)
    finally:
        gc.enable()
    gc.collect()  # settle the heap into the oldest generation before watching

    async with Watchdog(asyncio.get_running_loop(), config()) as watchdog:
        del heap  # now unreachable cycles
        collect_started = time.monotonic()
        gc.collect()
        collect_s = time.monotonic() - collect_started
        await wait_until(lambda: not watchdog.state()["stalled"] and bool(watchdog.recent_stalls()))
        reports = watchdog.recent_stalls()

    assert collect_s > 0.3, "the heap was too small to stall the loop"
    assert [report.cause for report in reports] == ["gc"]
    assert reports[0].gc_s >= 0.5 * reports[0].duration_s
    (_, record) = watchdog_log.events("loop.stalled")[0]
    assert field(record, "cause") == "gc"


def _gil_hog_size(seconds: float) -> int:
    """How many numbers ``sum(range(n))`` adds in ``seconds``: a C loop that keeps the GIL."""
    n = 1_000_000
    fastest_s = float("inf")
    for _ in range(5):  # the fastest run: a preempted one would make the hog too short
        started = time.perf_counter()
        sum(range(n))
        fastest_s = min(fastest_s, time.perf_counter() - started)
    return int(n * seconds / max(fastest_s, 1e-6))


async def test_a_loop_starved_of_the_gil_is_not_blamed_on_code(watchdog_log: WatchdogLog) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    size = _gil_hog_size(1.0)

    def hog() -> None:
        sum(range(size))  # holds the GIL throughout: the idle loop cannot wake up
        loop.call_soon_threadsafe(done.set)

    async with Watchdog(loop, config()) as watchdog:
        thread = threading.Thread(target=hog)
        thread.start()
        try:
            await asyncio.wait_for(done.wait(), DEADLINE_S)
        finally:
            thread.join(DEADLINE_S)
        await wait_until(lambda: not watchdog.state()["stalled"] and bool(watchdog.recent_stalls()))
        reports = watchdog.recent_stalls()

    assert [report.cause for report in reports] == ["starved"], [r.as_dict() for r in reports]
    assert reports[0].duration_s >= 0.25


@pytest.mark.parametrize(
    "seconds", [5.0, pytest.param(60.0, marks=pytest.mark.acceptance, id="60s")], ids=lambda s: f"{s:g}s"
)
async def test_a_healthy_loop_under_load_reports_nothing(watchdog_log: WatchdogLog, seconds: float) -> None:
    # The heap other tests of this process left behind is not this loop's load: freeze it, so
    # that a full collection of it cannot land inside the measured minute.
    gc.collect()
    gc.freeze()
    try:
        await _run_healthy_load(watchdog_log, seconds)
    finally:
        gc.unfreeze()


async def _run_healthy_load(watchdog_log: WatchdogLog, seconds: float) -> None:
    registry = CollectorRegistry()
    metrics = WatchdogMetrics(registry)
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=100)

    async def small(n: int) -> int:
        await asyncio.sleep(0)
        return n

    async def consumer() -> None:
        while True:
            await queue.get()
            queue.task_done()

    async with Watchdog(asyncio.get_running_loop(), config(), metrics) as watchdog:
        consumers = [asyncio.create_task(consumer()) for _ in range(4)]
        deadline = time.monotonic() + seconds
        tasks_run = 0
        while time.monotonic() < deadline:
            results = await asyncio.gather(*(small(n) for n in range(200)))
            tasks_run += len(results)
            for n in range(50):
                await queue.put(n)
        await asyncio.wait_for(queue.join(), DEADLINE_S)
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        assert watchdog.state()["healthy"] is True

    assert tasks_run > 2_000 * seconds
    # A host too busy to run this process stalls the loop for real (then the loop thread spent
    # most of the stall waiting for a CPU); any other report would be a false alarm.
    false_alarms = [
        report.as_dict()
        for report in watchdog.recent_stalls()
        if (report.run_delay_s or 0.0) < 0.5 * report.detected_after_s
    ]
    assert false_alarms == []
    beats = registry.get_sample_value("backburner_loop_lag_seconds_count")
    assert beats is not None and beats > seconds / watchdog.config.heartbeat_interval_s / 2


async def test_start_and_stop_leave_no_thread_behind() -> None:
    before = set(threading.enumerate())
    callbacks_before = list(gc.callbacks)
    registry = CollectorRegistry()
    watchdog = Watchdog(asyncio.get_running_loop(), config(), WatchdogMetrics(registry))

    def beats() -> float:
        return registry.get_sample_value("backburner_loop_lag_seconds_count") or 0.0

    watchdog.start()
    watchdog.start()  # idempotent
    assert [t.name for t in set(threading.enumerate()) - before] == ["backburner-watchdog"]
    await wait_until(lambda: beats() >= 2)
    watchdog.stop()
    watchdog.stop()

    assert set(threading.enumerate()) == before
    assert gc.callbacks == callbacks_before
    assert watchdog.state()["status"] == "stopped"
    stopped_at = beats()
    await asyncio.sleep(watchdog.config.heartbeat_interval_s * 4)  # time for beats that must not come
    assert beats() == stopped_at

    # Restartable, and the async context manager form cleans up the same way.
    async with watchdog:
        assert watchdog.running
    assert set(threading.enumerate()) == before


async def test_disabled_watchdog_starts_nothing() -> None:
    before = set(threading.enumerate())
    async with Watchdog(asyncio.get_running_loop(), config(enabled=False)) as watchdog:
        assert set(threading.enumerate()) == before
        assert watchdog.state()["status"] == "disabled"
        assert watchdog.state()["healthy"] is True


class AlertReceiver:
    """A real HTTP endpoint on localhost that records the alerts posted to it."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, object]] = []
        self.received = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.alerts.append(json.loads(body))
                receiver.received.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AlertReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(DEADLINE_S)


async def test_consecutive_hangs_post_an_alert(watchdog_log: WatchdogLog) -> None:
    with AlertReceiver() as receiver:
        fast = config(
            stall_threshold_s=0.1,
            heartbeat_interval_s=0.02,
            hang_threshold_s=0.4,
            recovery_s=30.0,  # no recovery between the two hangs: they are consecutive
            alert_after_hangs=2,
            alert_webhook_url=receiver.url,
        )
        async with Watchdog(asyncio.get_running_loop(), fast) as watchdog:
            time.sleep(0.6)  # noqa: ASYNC251
            await wait_until(lambda: not watchdog.state()["stalled"])
            assert not receiver.received.is_set()  # one hang is not enough
            time.sleep(0.6)  # noqa: ASYNC251
            assert await asyncio.to_thread(receiver.received.wait, DEADLINE_S)

    (alert,) = receiver.alerts
    assert alert["event"] == "loop.hung"
    assert alert["consecutive_hangs"] == 2
    stall = alert["stall"]
    assert isinstance(stall, dict)
    assert stall["culprit"]["function"] == "test_consecutive_hangs_post_an_alert"
    assert watchdog.snapshot()["counts"]["alerts_sent"] == 1  # type: ignore[index]
    assert len(watchdog_log.events("loop.alert_sent")) == 1


async def test_a_failing_webhook_is_logged_not_raised(watchdog_log: WatchdogLog) -> None:
    with AlertReceiver() as receiver:
        url = receiver.url  # closed on exit: nothing listens there any more
    fast = config(
        stall_threshold_s=0.1,
        heartbeat_interval_s=0.02,
        hang_threshold_s=0.3,
        alert_after_hangs=1,
        alert_webhook_url=url,
    )
    async with Watchdog(asyncio.get_running_loop(), fast) as watchdog:
        time.sleep(0.5)  # noqa: ASYNC251
        ((_, failure),) = await asyncio.to_thread(watchdog_log.wait_for, "loop.alert_failed")
        assert watchdog.running

    assert failure.levelno == logging.ERROR
    assert watchdog.snapshot()["counts"]["alerts_failed"] == 1  # type: ignore[index]


async def test_metrics_expose_lag_stalls_and_tasks() -> None:
    registry = CollectorRegistry()
    metrics = WatchdogMetrics(registry)
    async with Watchdog(asyncio.get_running_loop(), config(), metrics) as watchdog:
        time.sleep(0.4)  # noqa: ASYNC251
        await wait_until(lambda: not watchdog.state()["stalled"])
        text = generate_latest(registry).decode()

    families = {family.name: family for family in text_string_to_metric_families(text)}
    lag = {sample.name: sample for sample in families["backburner_loop_lag_seconds"].samples}
    assert lag["backburner_loop_lag_seconds_count"].value >= 1
    assert lag["backburner_loop_lag_seconds_sum"].value >= 0.1  # the beat that came after the block
    stalls = {
        sample.labels["cause"]: sample.value
        for sample in families["backburner_loop_stalls"].samples
        if sample.name == "backburner_loop_stalls_total"
    }
    assert stalls == {"blocking": 1, "gc": 0, "starved": 0}
    assert families["backburner_loop_tasks"].samples[0].value >= 1  # this test's own task
    # Stopped: the gauges no longer hold on to the loop.
    assert registry.get_sample_value("backburner_loop_tasks") == 0
