"""The watchdog's pure parts: stack formatting, stall classification, config, GC timing."""

from __future__ import annotations

import gc
import sys
import sysconfig
from types import FrameType

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backburner.monitoring.gc_probe import GcTimer
from backburner.monitoring.stacks import (
    FrameInfo,
    find_culprit,
    is_idle_in_loop,
    is_library_file,
    walk_frames,
)
from backburner.monitoring.stall import StallSignals, classify
from backburner.monitoring.watchdog_config import WatchdogConfig
from backburner.monitoring.watchdog_metrics import WatchdogMetrics

STDLIB = sysconfig.get_paths()["stdlib"]
SITE = sysconfig.get_paths()["purelib"]


def _frame_from_missing_file() -> FrameType:
    """A frame whose source file does not exist: formatting must not need it."""
    namespace: dict[str, object] = {"sys": sys}
    code = compile("def where_am_i():\n    return sys._getframe()\n", "/nonexistent/app/jobs.py", "exec")
    exec(code, namespace)
    frame = namespace["where_am_i"]()  # type: ignore[operator]
    assert isinstance(frame, FrameType)
    return frame


def test_walk_frames_reads_code_objects_not_source_files() -> None:
    frames = walk_frames(_frame_from_missing_file())

    assert frames[0] == FrameInfo("/nonexistent/app/jobs.py", 2, "where_am_i")
    assert frames[1].function == "_frame_from_missing_file"
    assert str(frames[0]) == "/nonexistent/app/jobs.py:2 in where_am_i"


def test_walk_frames_stops_at_the_limit() -> None:
    assert len(walk_frames(sys._getframe(), limit=2)) == 2


def test_library_files_are_stdlib_site_packages_frozen_and_the_monitor_itself() -> None:
    assert is_library_file(f"{STDLIB}/asyncio/events.py")
    assert is_library_file(f"{SITE}/httpx/_client.py")
    assert is_library_file("<frozen importlib._bootstrap>")
    assert is_library_file(sys.modules[GcTimer.__module__].__file__ or "")
    assert not is_library_file(__file__)
    assert not is_library_file("/srv/app/jobs.py")


def test_culprit_is_the_innermost_application_frame() -> None:
    frames = [
        FrameInfo(f"{SITE}/sqlalchemy/engine.py", 10, "execute"),
        FrameInfo("/srv/app/jobs.py", 42, "poll_batches"),
        FrameInfo("/srv/app/main.py", 7, "main"),
        FrameInfo(f"{STDLIB}/asyncio/events.py", 80, "_run"),
    ]
    assert find_culprit(frames) == FrameInfo("/srv/app/jobs.py", 42, "poll_batches")


def test_the_program_entry_point_is_never_the_culprit() -> None:
    # An automatic collection in the loop's own code: nothing of the application is running.
    frames = [
        FrameInfo(f"{STDLIB}/asyncio/base_events.py", 1900, "_run_once"),
        FrameInfo(f"{STDLIB}/asyncio/base_events.py", 607, "run_forever"),
        FrameInfo(f"{STDLIB}/asyncio/runners.py", 118, "run"),
        FrameInfo("/srv/app/main.py", 7, "<module>"),
    ]
    assert find_culprit(frames) == frames[0]


def test_culprit_falls_back_to_the_innermost_frame() -> None:
    frames = [FrameInfo(f"{STDLIB}/json/decoder.py", 353, "raw_decode")]
    assert find_culprit(frames) == frames[0]
    assert find_culprit([]) is None


def test_a_loop_waiting_in_its_selector_is_idle() -> None:
    idle = [FrameInfo(f"{STDLIB}/selectors.py", 468, "select"), FrameInfo(f"{STDLIB}/asyncio/x.py", 1, "y")]
    busy = [FrameInfo("/srv/app/jobs.py", 42, "poll_batches")]
    user_selectors = [FrameInfo("/srv/app/selectors.py", 3, "select")]

    assert is_idle_in_loop(idle)
    assert not is_idle_in_loop(busy)
    assert not is_idle_in_loop(user_selectors)
    assert not is_idle_in_loop([])


def _signals(**overrides: object) -> StallSignals:
    values: dict[str, object] = {
        "window_s": 1.0,
        "gc_s": 0.0,
        "on_cpu_s": 0.95,
        "run_delay_s": 0.0,
        "watchdog_late_s": 0.0,
        "idle_in_loop": False,
    }
    values.update(overrides)
    return StallSignals(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "cause"),
    [
        ({}, "blocking"),  # CPU-bound code on the loop
        ({"on_cpu_s": 0.01}, "blocking"),  # time.sleep: off the CPU, not runnable, in app code
        ({"gc_s": 0.8}, "gc"),
        ({"gc_s": 0.3}, "blocking"),  # some GC, but mostly the code itself
        ({"gc_s": 0.9, "on_cpu_s": 0.2, "run_delay_s": 0.7}, "gc"),  # a GC slowed by a busy host
        ({"on_cpu_s": 0.05, "run_delay_s": 0.9}, "starved"),  # runnable, no CPU given
        ({"on_cpu_s": 0.05, "idle_in_loop": True}, "starved"),  # woke in the selector, could not run
        ({"on_cpu_s": 0.05, "watchdog_late_s": 0.9}, "starved"),  # the whole process was paused
        ({"on_cpu_s": 0.9, "idle_in_loop": True}, "blocking"),  # busy in the loop's own code
        ({"on_cpu_s": None, "run_delay_s": None}, "blocking"),  # nothing known: blame the code
    ],
)
def test_classify(overrides: dict[str, object], cause: str) -> None:
    assert classify(_signals(**overrides)) == cause


@pytest.mark.parametrize(
    "overrides",
    [
        {"stall_threshold_s": 0},
        {"hang_threshold_s": 0.2},  # not above the stall threshold
        {"heartbeat_interval_s": 0.5},  # not below the stall threshold
        {"check_interval_s": -1},
        {"recovery_s": -1},
        {"alert_after_hangs": 0},
        {"max_recent_stalls": 0},
    ],
)
def test_config_rejects_nonsense(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(overrides))):
        WatchdogConfig(**overrides)  # type: ignore[arg-type]


def test_config_defaults_keep_letta_meanings() -> None:
    config = WatchdogConfig()
    assert (config.check_interval_s, config.hang_threshold_s, config.stall_threshold_s) == (5.0, 15.0, 0.25)


def test_gc_timer_measures_collections_and_uninstalls() -> None:
    timer = GcTimer()
    before = len(gc.callbacks)
    timer.install()
    timer.install()  # idempotent
    assert len(gc.callbacks) == before + 1
    try:
        garbage: list[list[object]] = [[] for _ in range(50_000)]
        for item in garbage:
            item.append(item)
        del garbage, item
        gc.collect()
        assert timer.total_s() > 0
    finally:
        timer.uninstall()
    assert len(gc.callbacks) == before
    total = timer.total_s()
    gc.collect()
    assert timer.total_s() == total


def test_metrics_register_their_families_on_the_given_registry_only() -> None:
    registry = CollectorRegistry()
    metrics = WatchdogMetrics(registry)
    metrics.loop_lag.observe(0.002)
    metrics.watch(tasks=lambda: 7, healthy=lambda: False)

    families = {
        family.name: family for family in text_string_to_metric_families(generate_latest(registry).decode())
    }

    assert {
        "backburner_loop_lag_seconds",
        "backburner_loop_stalls",
        "backburner_loop_hangs",
        "backburner_loop_tasks",
        "backburner_watchdog_healthy",
    } <= families.keys()
    stalls = {
        s.labels["cause"]: s.value
        for s in families["backburner_loop_stalls"].samples
        if s.name.endswith("_total")
    }
    assert stalls == {"blocking": 0, "gc": 0, "starved": 0}
    assert families["backburner_loop_tasks"].samples[0].value == 7
    assert families["backburner_watchdog_healthy"].samples[0].value == 0
    # A second registry takes the same names without a clash: nothing went to the global one.
    WatchdogMetrics(CollectorRegistry())
