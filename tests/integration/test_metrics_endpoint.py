"""`/metrics`: parses with prometheus_client's own parser and holds every family of the issues."""

from __future__ import annotations

import threading

from prometheus_client.parser import text_string_to_metric_families

from backburner.runtime import Runtime
from tests.conftest import MakeSettings
from tests.support.app import asgi_client, started_app

# Family names as the parser reports them (counters without their `_total` suffix).
EXPECTED_FAMILIES = {
    # event loop and thread pool
    "backburner_loop_lag_seconds",
    "backburner_loop_stalls",
    "backburner_loop_hangs",
    "backburner_loop_tasks",
    "backburner_threadpool_max_workers",
    "backburner_threadpool_active",
    "backburner_threadpool_queued",
    # leadership and jobs
    "backburner_leader",
    "backburner_leader_epoch",
    "backburner_leader_step_downs",
    "backburner_job_run_duration_seconds",
    "backburner_job_runs",
    # batches
    "backburner_batch_poll_cycle_duration_seconds",
    "backburner_batches",
    "backburner_batch_items_ingested",
    "backburner_batch_provider_errors",
    # files
    "backburner_files",
    "backburner_file_stage_seconds",
    "backburner_file_timeouts",
    "backburner_file_retries",
    # HTTP
    "backburner_http_requests",
    "backburner_http_request_duration_seconds",
}


async def test_metrics_parse_and_hold_every_family(make_settings: MakeSettings, database_url: str) -> None:
    async with (
        started_app(make_settings(database_url=database_url, enable_batch_job_polling=True)) as app,
        asgi_client(app) as client,
    ):
        await client.get("/healthz")
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    missing = EXPECTED_FAMILIES - set(families)
    assert not missing, f"missing metric families: {sorted(missing)}"
    requests = families["backburner_http_requests"]
    assert any(s.labels.get("route") == "/healthz" and s.value >= 1 for s in requests.samples)
    pool_size = next(s for s in families["backburner_threadpool_max_workers"].samples)
    assert pool_size.value == 43


async def test_watchdog_starts_and_stops_with_the_runtime(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    before = {thread.ident for thread in threading.enumerate()}
    async with Runtime(make_settings(database_url=sqlite_url), role="worker") as runtime:
        await runtime.wait_ready(30)
        assert runtime.watchdog is not None and runtime.watchdog.running
        checks = await runtime.readiness()
        assert checks["watchdog"].ok and checks["watchdog"].detail == "ok"
    assert not runtime.watchdog.running
    # The pool's threads end with the executor; the watchdog's own thread must be gone at once.
    left = [t for t in threading.enumerate() if t.ident not in before and "watchdog" in t.name.lower()]
    assert left == []


async def test_watchdog_can_be_switched_off(make_settings: MakeSettings, sqlite_url: str) -> None:
    async with Runtime(
        make_settings(database_url=sqlite_url, watchdog_enabled=False), role="worker"
    ) as runtime:
        await runtime.wait_ready(30)
        assert runtime.watchdog is not None and not runtime.watchdog.running
        assert (await runtime.readiness())["watchdog"].ok
