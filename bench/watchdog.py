"""Benchmark of the event-loop watchdog: its overhead, how fast it sees a block, false alarms.

Prints one JSON object:

- ``overhead_ratio``: wall time of a loop-bound workload (small tasks plus HTTP requests to a
  FastAPI app served by uvicorn in this process, driven by an httpx.AsyncClient) with the
  watchdog on, divided by the same with it off. The workload is cut into slices; each slice
  runs on and off back to back in alternating order (on-off, off-on, ...), and the figure is
  the median of these pair ratios, so drift and neighbours' load fall on both sides.
- ``detection_ms``: for blocks of 0.3 s, 1 s and 5 s (``time.sleep`` on the loop, under light
  load, with the default stall threshold), the time from the block's start to the report;
  median over trials, each started at a random phase of the heartbeat.
- ``false_reports``: stall reports during ``--healthy-seconds`` of healthy load.

Run: .venv/bin/python bench/watchdog.py  (see --help for shorter runs)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from backburner.monitoring.watchdog import Watchdog, WatchdogConfig
from backburner.monitoring.watchdog_metrics import WatchdogMetrics

TASK_CHUNK = 500  # tasks gathered at once: small tasks, but never one huge loop iteration
GOALS = {"overhead_ratio_max": 1.02, "detection_ms_max": 350, "false_reports": 0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=200_000, help="small tasks in the workload")
    parser.add_argument("--requests", type=int, default=20_000, help="HTTP requests in the workload")
    parser.add_argument("--slices", type=int, default=80, help="slices of the workload: on/off pairs")
    parser.add_argument("--rounds", type=int, default=2, help="times the whole workload is run per side")
    parser.add_argument("--concurrency", type=int, default=2, help="concurrent HTTP clients")
    parser.add_argument("--blocks", default="0.3,1,5", help="injected block lengths, seconds")
    parser.add_argument("--detection-trials", type=int, default=5, help="trials per block length")
    parser.add_argument("--healthy-seconds", type=float, default=60.0, help="healthy load duration")
    parser.add_argument("--quick", action="store_true", help="a small workload, in seconds (for tests)")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.requests, args.slices, args.rounds = 2_000, 200, 4, 1
        args.blocks, args.detection_trials, args.healthy_seconds = "0.3", 1, 2.0
    return args


# -- the app and its load ------------------------------------------------------------------


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, object]:
        await asyncio.sleep(0)
        return {"id": item_id, "name": f"item-{item_id}", "tags": ["a", "b"]}

    return app


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """uvicorn on this loop, on a free local port; yields the base URL."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every response waits for a delayed ACK (about 40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Keep-alive beyond the longest injected block, or uvicorn closes idle client connections
    # just as the blocked loop resumes and the client reuses them.
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=120
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def tiny(n: int) -> int:
    await asyncio.sleep(0)
    return n


async def run_tasks(count: int) -> None:
    for start in range(0, count, TASK_CHUNK):
        await asyncio.gather(*(tiny(n) for n in range(start, min(count, start + TASK_CHUNK))))


async def run_requests(client: httpx.AsyncClient, count: int, concurrency: int) -> None:
    async def worker(share: int) -> None:
        for n in range(share):
            response = await client.get(f"/items/{n}")
            response.raise_for_status()

    shares = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]
    await asyncio.gather(*(worker(share) for share in shares))


async def workload(client: httpx.AsyncClient, tasks: int, requests: int, concurrency: int) -> None:
    await asyncio.gather(run_tasks(tasks), run_requests(client, requests, concurrency))


def new_watchdog(config: WatchdogConfig | None = None) -> Watchdog:
    """Default settings unless given, metrics included: the cost measured is the cost deployed."""
    return Watchdog(
        asyncio.get_running_loop(), config or WatchdogConfig(), WatchdogMetrics(CollectorRegistry())
    )


async def wait_until(predicate: Callable[[], bool], timeout_s: float) -> None:
    """Poll a condition the watchdog thread changes (it has no awaitable to wait on)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


# -- measurements --------------------------------------------------------------------------


@dataclass
class Slice:
    wall_s: float
    cpu_s: float
    stalls: int


async def timed_slice(run: Callable[[], Awaitable[None]], watchdog_on: bool) -> Slice:
    """One slice of the workload, with or without a watchdog; start and stop are not timed.

    A full collection first, so both sides of a pair start from the same GC state: otherwise
    whichever side happens to trigger an old-generation collection looks slower.
    """
    watchdog = new_watchdog() if watchdog_on else None
    gc.collect()
    if watchdog is not None:
        watchdog.start()
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        await run()
        wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        if watchdog is not None:
            watchdog.stop()
    return Slice(wall_s, cpu_s, len(watchdog.recent_stalls()) if watchdog is not None else 0)


async def measure_overhead(
    client: httpx.AsyncClient, args: argparse.Namespace
) -> tuple[float, dict[str, object]]:
    """The whole workload with the watchdog on and again off, in alternating slices.

    Each slice is run twice back to back, once on and once off, in alternating order (on-off,
    then off-on), and gives one pair. The machine's other load changes over seconds, so
    adjacent runs see nearly the same conditions; the median of many pair ratios is then
    robust to the bursts that hit one side only.
    """
    tasks_per_slice = max(1, args.tasks // args.slices)
    requests_per_slice = max(1, args.requests // args.slices)

    def run() -> Awaitable[None]:
        return workload(client, tasks_per_slice, requests_per_slice, args.concurrency)

    for _ in range(3):  # warm up: imports, connection pool, code paths
        await run()
    on: list[Slice] = []
    off: list[Slice] = []
    for pair in range(args.slices * args.rounds):
        order = (True, False) if pair % 2 == 0 else (False, True)
        for watchdog_on in order:
            (on if watchdog_on else off).append(await timed_slice(run, watchdog_on))
    wall_ratios = [a.wall_s / b.wall_s for a, b in zip(on, off, strict=True)]
    cpu_ratios = [a.cpu_s / b.cpu_s for a, b in zip(on, off, strict=True)]
    quartiles = statistics.quantiles(wall_ratios, n=4)
    return statistics.median(wall_ratios), {
        "pairs": len(wall_ratios),
        "pair_ratio_quartiles": [round(q, 4) for q in quartiles],
        "ratio_of_totals": round(sum(s.wall_s for s in on) / sum(s.wall_s for s in off), 4),
        "cpu_ratio": round(statistics.median(cpu_ratios), 4),
        "on_total_s": round(sum(s.wall_s for s in on), 2),
        "off_total_s": round(sum(s.wall_s for s in off), 2),
        "tasks_per_side": tasks_per_slice * len(on),
        "requests_per_side": requests_per_slice * len(on),
        "stalls_during_runs": sum(s.stalls for s in on),
    }


@dataclass
class Background:
    """Light, steady load that keeps the loop busy while blocks are injected."""

    client: httpx.AsyncClient
    running: bool = True

    async def run(self) -> None:
        while self.running:
            await asyncio.gather(run_tasks(200), run_requests(self.client, 20, 4))
            await asyncio.sleep(0.005)


async def measure_detection(client: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, object]:
    """Block the loop with ``time.sleep`` and time how soon the report comes, block by block."""
    blocks = [float(b) for b in args.blocks.split(",")]
    results: dict[str, list[float]] = {f"{block_s:g}": [] for block_s in blocks}
    background = Background(client)
    load = asyncio.create_task(background.run(), name="background-load")
    watchdog = new_watchdog(WatchdogConfig(report_min_interval_s=0.0))
    watchdog.start()
    missed = misattributed = 0
    try:
        for block_s in blocks:
            for _ in range(args.detection_trials):
                # A random phase against the heartbeat, so the trials cover its whole period.
                await asyncio.sleep(0.3 + random.uniform(0, watchdog.config.heartbeat_interval_s))
                last_id = max((report.id for report in watchdog.recent_stalls()), default=0)
                block_started = time.monotonic()
                time.sleep(block_s)  # noqa: ASYNC251 - the injected block
                await wait_until(lambda: not watchdog.state()["stalled"], timeout_s=10)
                new = [report for report in watchdog.recent_stalls() if report.id > last_id]
                if not new:
                    missed += 1
                    continue
                first = min(new, key=lambda report: report.id)
                results[f"{block_s:g}"].append((first.detected_at - block_started) * 1000)
                if first.culprit is None or first.culprit.function != "measure_detection":
                    misattributed += 1
    finally:
        watchdog.stop()
        background.running = False
        await asyncio.wait_for(load, 30)
    return {
        "median_ms": {key: round(statistics.median(v), 1) if v else None for key, v in results.items()},
        "max_ms": {key: round(max(v), 1) if v else None for key, v in results.items()},
        "all_ms": {key: [round(x, 1) for x in v] for key, v in results.items()},
        "missed": missed,
        "misattributed": misattributed,
    }


async def measure_false_reports(client: httpx.AsyncClient, seconds: float) -> dict[str, object]:
    registry = CollectorRegistry()
    watchdog = Watchdog(
        asyncio.get_running_loop(), WatchdogConfig(report_min_interval_s=0.0), WatchdogMetrics(registry)
    )
    watchdog.start()
    tasks = requests = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.gather(run_tasks(2_000), run_requests(client, 200, 16))
            tasks += 2_000
            requests += 200
    finally:
        watchdog.stop()
    beats = registry.get_sample_value("backburner_loop_lag_seconds_count") or 0.0

    def share_above(bound: str) -> float:
        at_most = registry.get_sample_value("backburner_loop_lag_seconds_bucket", {"le": bound}) or 0.0
        return round(1 - at_most / beats, 5) if beats else 0.0

    snapshot = watchdog.snapshot()
    counts = snapshot["counts"]
    assert isinstance(counts, dict)
    return {
        # Every report counts, a host starving the process included (its cause says so).
        "false_reports": counts["stalls"],
        "by_cause": counts["stalls_by_cause"],
        "reports": snapshot["recent_stalls"],
        "seconds": seconds,
        "tasks": tasks,
        "requests": requests,
        "beats": int(beats),
        "beats_later_than_25ms": share_above("0.025"),
        "beats_later_than_100ms": share_above("0.1"),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    async with serve(make_app()) as base_url:
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
            overhead_ratio, overhead = await measure_overhead(client, args)
            detection = await measure_detection(client, args)
            healthy = await measure_false_reports(client, args.healthy_seconds)
    return {
        "overhead_ratio": round(overhead_ratio, 4),
        "detection_ms": detection["median_ms"],
        "false_reports": healthy["false_reports"],
        "goals": GOALS,
        "overhead": overhead,
        "detection": detection,
        "healthy": healthy,
        "environment": {
            "python": platform.python_version(),
            "loop": type(asyncio.get_running_loop()).__name__,
            "cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
        },
    }


if __name__ == "__main__":
    arguments = parse_args()
    print(json.dumps(asyncio.run(main(arguments))))
    sys.stdout.flush()
