"""Benchmark of user schedules: fire lag, missed and repeated fires, and the leader's CPU.

Starts a webhook receiver (its own process: an asyncio HTTP/1.1 server that writes down each
request's idempotency key and arrival time) and three `backburner serve` processes (each with
its own data directory) on a fresh PostgreSQL database, then stores 10,000 schedules firing
every 60 s and 1,000 firing every 10 s, all delivering to the receiver (`overlap: allow`, so a
fire caught up after a failover is never skipped as an overlap). Their first fire times are
spread evenly over their interval: a workload of 267 fires a second, as many schedules made at
different moments give. It runs for 3 minutes; fires whose time falls in that window are
counted. With `--kill-leader` the leader gets SIGKILL once a minute and a new process takes its
place.

The lag of a fire is its first arrival at the receiver minus its fire time: what the user waits
for, end to end. `missed` counts fire times of the window that never arrived, `duplicate_keys`
idempotency keys that arrived more than once. `leader_cpu_percent` is the CPU time of whichever
process leads (sampled every second) over the time it led. Prints one JSON object:

    {"fires", "fire_lag_ms": {"p50", "p99", "max"}, "missed", "duplicate_keys",
     "leader_cpu_percent", "config"}

Goals: `fire_lag_ms.p99` <= 1000, `missed` 0, `duplicate_keys` 0, `leader_cpu_percent` <= 50;
with `--kill-leader`: `missed` 0 and `fire_lag_ms.max` <= the lease + 2 s.

Run: .venv/bin/python bench/schedules.py [--kill-leader] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import harness
from sqlalchemy import insert

from backburner.db.engine import create_engine
from backburner.schedules.allowlist import AllowList
from backburner.schedules.models import ScheduleCreate
from backburner.schedules.service import Rules, new_schedule
from backburner.schedules.store import schedule_values
from backburner.schedules.tables import schedules
from backburner.settings_loader import load_settings

ELECTION = "backburner-scheduler"
INSERT_CHUNK = 1000
SAMPLE_INTERVAL_S = 1.0
START_DELAY_S = 8.0  # schedules are stored this long before their first fire


# --- the receiver (run as `bench/schedules.py --receiver OUT`) -----------------------------------


async def serve_receiver(out_path: Path) -> None:
    out = out_path.open("a", buffering=1 << 16)
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                length, key = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    lowered = name.strip().lower()
                    if lowered == b"content-length":
                        length = int(value)
                    elif lowered == b"idempotency-key":
                        key = value.strip().decode()
                await reader.readexactly(length)
                out.write(f"{key}\t{arrived}\n")
                writer.write(ok)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    out.close()


# --- the cluster --------------------------------------------------------------------------------


@dataclass
class Plan:
    slow_count: int
    slow_interval_s: float
    fast_count: int
    fast_interval_s: float
    seconds: float
    instances: int
    lease_s: float
    kill_every_s: float | None


class Cluster:
    """`backburner serve` processes on one database, with the product's defaults but for the
    lease and the receiver's place on the allow-list; each has its own data directory."""

    def __init__(self, url: str, workdir: Path, receiver_prefix: str, lease_s: float) -> None:
        self.settings = {
            "database_url": url,
            "log_format": "json",
            "leader_lease_seconds": str(lease_s),
            "schedule_webhook_allowed_urls": receiver_prefix,
            "shutdown_timeout_seconds": "5",
        }
        self.workdir = workdir
        self.servers: list[harness.Server] = []

    def start_one(self) -> harness.Server:
        number = len(self.servers) + 1
        server = harness.start_backburner(
            self.settings,
            data_dir=self.workdir / f"data-{number}",
            log_path=self.workdir / f"instance-{number}.log",
        )
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


async def leader_pid(db: asyncpg.Connection) -> int | None:
    holder = await db.fetchval(
        "SELECT holder FROM leader_epochs WHERE name = $1 AND released_at IS NULL", ELECTION
    )
    return int(str(holder).rsplit("-", 2)[1]) if holder else None  # instance ids are host-pid-random


async def store_schedules(
    url: str, prefix: str, plan: Plan, first_fire: datetime
) -> list[tuple[datetime, float]]:
    """Insert the schedules (as the API would make them); returns each one's (start, interval)."""
    settings = load_settings(flags={"database_url": url}, environ={}).settings
    engine = create_engine(settings)
    rules = Rules(allow_list=AllowList([prefix]), handler_names=frozenset(), payload_max_bytes=65536)
    now = datetime.now(UTC)
    timings: list[tuple[datetime, float]] = []
    rows = []
    for count, interval_s in (
        (plan.slow_count, plan.slow_interval_s),
        (plan.fast_count, plan.fast_interval_s),
    ):
        for i in range(count):
            start = first_fire + timedelta(seconds=interval_s * i / count)
            body = ScheduleCreate(
                name=f"bench-{interval_s:g}s-{i}",
                interval_seconds=interval_s,
                start_at=start,
                webhook_url=f"{prefix}agent/{i}",
                payload={"message": "wake up", "n": i},
                overlap="allow",
            )
            record = new_schedule(
                body,
                organization_id="org-default",
                schedule_id=f"sched-{uuid.uuid4().hex}",
                secret="bbs_bench",
                now=now,
                rules=rules,
            )
            rows.append(schedule_values(record))
            timings.append((start, interval_s))
    try:
        async with engine.begin() as conn:
            for at in range(0, len(rows), INSERT_CHUNK):
                await conn.execute(insert(schedules), rows[at : at + INSERT_CHUNK])
    finally:
        await engine.dispose()
    return timings


def expected_fires(timings: list[tuple[datetime, float]], start: datetime, end: datetime) -> int:
    total = 0
    for first, interval_s in timings:
        if first > end:
            continue
        low = max(0, math.ceil((start - first).total_seconds() / interval_s))
        high = math.floor((end - first).total_seconds() / interval_s)
        total += max(0, high - low + 1)
    return total


def read_arrivals(path: Path) -> dict[str, list[float]]:
    arrivals: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        key, _, arrived = line.partition("\t")
        if key:
            arrivals.setdefault(key, []).append(float(arrived))
    return arrivals


def fire_time_of(key: str) -> datetime:
    return datetime.fromisoformat(key.split(":", 1)[1].replace("Z", "+00:00"))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def start_receiver(out_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The receiver process and the URL prefix it answers on."""
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receiver", str(out_path)], stdout=subprocess.PIPE
    )
    assert receiver.stdout is not None
    return receiver, f"http://127.0.0.1:{int(receiver.stdout.readline())}/"


async def run(plan: Plan, workdir: Path) -> dict[str, Any]:
    url = await harness.create_database("bench_schedules", migrated=True)
    out_path = workdir / "received.tsv"
    receiver, prefix = await asyncio.to_thread(start_receiver, out_path)
    cluster = Cluster(url, workdir, prefix, plan.lease_s)
    db = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    kills = 0
    leader_cpu_s = led_s = 0.0
    try:
        for _ in range(plan.instances):
            await asyncio.to_thread(cluster.start_one)
        deadline = time.monotonic() + 60
        while await leader_pid(db) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no leader within 60 s")
            await asyncio.sleep(0.2)
        first_fire = datetime.now(UTC) + timedelta(seconds=START_DELAY_S)
        harness.log(f"storing {plan.slow_count + plan.fast_count} schedules")
        timings = await store_schedules(url, prefix, plan, first_fire)
        window_end = first_fire + timedelta(seconds=plan.seconds)
        await asyncio.sleep(max(0.0, (first_fire - datetime.now(UTC)).total_seconds()))
        harness.log(f"measuring for {plan.seconds:g} s")
        last_kill = time.monotonic()
        replacements: list[asyncio.Task[harness.Server]] = []
        sample: tuple[int, float, float] | None = None  # the leader's pid, its CPU seconds, when
        while datetime.now(UTC) < window_end:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            pid = await leader_pid(db)
            now = time.monotonic()
            if pid is None:
                sample = None
                continue
            cpu = harness.tree_cpu_s(pid)
            if sample is not None and sample[0] == pid:
                leader_cpu_s += cpu - sample[1]
                led_s += now - sample[2]
            sample = (pid, cpu, now)
            if plan.kill_every_s is not None and now - last_kill >= plan.kill_every_s:
                os.kill(pid, signal.SIGKILL)
                kills += 1
                last_kill, sample = now, None
                # Another instance takes the killed one's place (started off the loop: it takes seconds).
                replacements.append(asyncio.create_task(asyncio.to_thread(cluster.start_one)))
                harness.log(f"killed the leader (pid {pid})")
        tail_s = 5.0 + (plan.lease_s if plan.kill_every_s else 0.0)
        harness.log(f"waiting {tail_s:g} s for the last fires")
        await asyncio.sleep(tail_s)
        await asyncio.gather(*replacements)
    finally:
        cluster.stop_all()
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
        await db.close()
        await harness.drop_database(url)

    arrivals = read_arrivals(out_path)
    in_window = {
        key: times for key, times in arrivals.items() if first_fire <= fire_time_of(key) <= window_end
    }
    lags_ms = [(min(times) - fire_time_of(key).timestamp()) * 1000 for key, times in in_window.items()]
    expected = expected_fires(timings, first_fire, window_end)
    return {
        "fires": len(in_window),
        "fire_lag_ms": {
            "p50": round(statistics.median(lags_ms), 1) if lags_ms else None,
            "p99": round(percentile(lags_ms, 0.99), 1) if lags_ms else None,
            "max": round(max(lags_ms), 1) if lags_ms else None,
        },
        "missed": expected - len(in_window),
        "duplicate_keys": sum(1 for times in arrivals.values() if len(times) > 1),
        "leader_cpu_percent": round(100 * leader_cpu_s / led_s, 1) if led_s else None,
        "config": {
            "schedules": {
                f"{plan.slow_interval_s:g}s": plan.slow_count,
                f"{plan.fast_interval_s:g}s": plan.fast_count,
            },
            "seconds": plan.seconds,
            "instances": plan.instances,
            "lease_seconds": plan.lease_s,
            "kill_leader_every_s": plan.kill_every_s,
            "kills": kills,
            "expected_fires": expected,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receiver", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--kill-leader", action="store_true", help="SIGKILL the leader once a minute")
    parser.add_argument("--quick", action="store_true", help="a scaled-down run of about 30 s")
    parser.add_argument("--slow-schedules", type=int, default=10_000, help="schedules firing every 60 s")
    parser.add_argument("--fast-schedules", type=int, default=1_000, help="schedules firing every 10 s")
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the measured window")
    parser.add_argument("--lease-seconds", type=float, default=10.0, help="leader_lease_seconds (default 10)")
    args = parser.parse_args()
    if args.receiver is not None:
        asyncio.run(serve_receiver(args.receiver))
        return
    if args.quick:  # 100 fires a second for 12 s; with --kill-leader one kill, 7 s in
        plan = Plan(
            500, 10.0, 50, 1.0, 12.0, 3 if args.kill_leader else 1, 3.0, 7.0 if args.kill_leader else None
        )
    else:
        plan = Plan(
            args.slow_schedules,
            60.0,
            args.fast_schedules,
            10.0,
            args.seconds,
            3,
            args.lease_seconds,
            60.0 if args.kill_leader else None,
        )
    with tempfile.TemporaryDirectory(prefix="bb-schedules-") as workdir:
        harness.emit(asyncio.run(run(plan, Path(workdir))))


if __name__ == "__main__":
    main()
