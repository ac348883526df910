"""Benchmark of leader failover: time from a fault of the leader to the new leader's first job run.

Starts three `backburner worker` processes on a fresh PostgreSQL database and, for each fault,
``--rounds`` times: waits for a steady cluster (a leader that has run its jobs, the two others
queued on the lock), injects the fault into the leader, and measures the time from the fault to
the start of the first job run of the next term (the `started_at` of the run in `job_runs`,
written by the new leader; the processes share this host's clock).

Faults: ``sigkill`` (the process dies), ``sigstop`` (it freezes; thawed after the takeover),
``terminate_backend`` (its lock session is ended with `pg_terminate_backend`), ``sigterm``
(graceful shutdown). A killed or stopped process is replaced before the next round.

At the end every process is stopped and the whole run history is checked for runs of different
terms overlapping in time. Prints one JSON object:

    {"faults": {FAULT: {"rounds": n, "median_s": x, "max_s": y}}, "overlapping_leader_runs": k}

Goals: sigkill and sigterm median <= 1 s and max <= 2 s; sigstop and terminate_backend
<= lease + 2 s; no overlapping runs.

Run: .venv/bin/python bench/failover.py [--rounds 10] [--lease-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import harness

from backburner.leader.lease import application_name

FAULTS = ("sigkill", "sigstop", "terminate_backend", "sigterm")
INSTANCES = 3
ELECTION = "backburner-scheduler"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def wait_for(condition: Any, timeout_s: float, what: str, interval_s: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await condition()
        if value:
            return value
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


class Cluster:
    def __init__(self, url: str, workdir: Path, lease_s: float) -> None:
        self.url = url
        self.workdir = workdir
        self.lease_s = lease_s
        self.processes: list[subprocess.Popen[bytes]] = []
        self._count = 0
        self.db: asyncpg.Connection | None = None

    def env(self, number: int) -> dict[str, str]:
        settings = {
            "DATABASE_URL": self.url,
            "DATA_DIR": str(self.workdir / f"data-{number}"),  # as on separate hosts
            "LOG_FORMAT": "json",
            "LEADER_LEASE_SECONDS": str(self.lease_s),
            "SCHEDULER_HEARTBEAT_INTERVAL_SECONDS": "0.5",
            "INSTANCE_HEARTBEAT_INTERVAL_SECONDS": "1",
            "POLL_LOCK_RETRY_INTERVAL_SECONDS": "1",
            "SHUTDOWN_TIMEOUT_SECONDS": "5",
        }
        return {"PATH": os.environ.get("PATH", ""), **{f"BACKBURNER_{k}": v for k, v in settings.items()}}

    def start_one(self) -> None:
        self._count += 1
        log_file = (self.workdir / f"worker-{self._count}.log").open("ab")
        self.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "backburner", "worker"],
                env=self.env(self._count),
                stdout=log_file,
                stderr=log_file,
            )
        )

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def process_of(self, instance_id: str) -> subprocess.Popen[bytes]:
        pid = int(instance_id.rsplit("-", 2)[1])  # instance ids are host-pid-random
        return next(p for p in self.live() if p.pid == pid)

    async def current_term(self) -> tuple[int, str] | None:
        """The current epoch and holder, once that term has recorded a run."""
        assert self.db is not None
        row = await self.db.fetchrow(
            "SELECT e.epoch, e.holder FROM leader_epochs e WHERE e.name = $1 AND e.released_at IS NULL "
            "AND EXISTS (SELECT 1 FROM job_runs r WHERE r.election = e.name AND r.epoch = e.epoch)",
            ELECTION,
        )
        return (int(row["epoch"]), str(row["holder"])) if row else None

    async def waiting_followers(self) -> int:
        assert self.db is not None
        return int(
            await self.db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'backburner-leader:%' AND wait_event_type = 'Lock'"
            )
        )

    async def steady(self) -> tuple[int, str]:
        while len(self.live()) < INSTANCES:
            self.start_one()
        term = await wait_for(self.current_term, 60, "a leader that has run its jobs")

        async def queued() -> bool:
            return await self.waiting_followers() == INSTANCES - 1

        await wait_for(queued, 60, "every follower to queue on the lock")
        result: tuple[int, str] = await wait_for(self.current_term, 10, "the leader")
        return result if result[0] == term[0] else await self.steady()

    async def first_run_after(self, epoch: int) -> datetime | None:
        assert self.db is not None
        started: datetime | None = await self.db.fetchval(
            "SELECT min(started_at) FROM job_runs WHERE election = $1 AND epoch > $2", ELECTION, epoch
        )
        return started

    async def round(self, fault: str) -> float:
        epoch, holder = await self.steady()
        leader = self.process_of(holder)
        assert self.db is not None
        faulted_at = datetime.now(UTC)
        if fault == "sigkill":
            leader.send_signal(signal.SIGKILL)
        elif fault == "sigstop":
            leader.send_signal(signal.SIGSTOP)
        elif fault == "sigterm":
            leader.send_signal(signal.SIGTERM)
        else:
            ended = await self.db.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()) t",
                application_name(holder)[:63],
            )
            assert ended == 1, f"no lock session of {holder}"

        async def next_run() -> datetime | None:
            return await self.first_run_after(epoch)

        first_run: datetime = await wait_for(next_run, self.lease_s + 30, f"a run after the {fault}")
        if fault == "sigstop":
            leader.send_signal(signal.SIGCONT)  # it steps down and queues again
        elif fault in ("sigkill", "sigterm"):
            leader.wait(30)
        return (first_run - faulted_at).total_seconds()

    async def overlapping(self) -> int:
        assert self.db is not None
        return await harness.overlapping_leader_runs(self.db)

    def stop_all(self) -> None:
        for process in self.live():
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    url = await harness.create_database("bench_failover", migrated=True)
    results: dict[str, list[float]] = {fault: [] for fault in args.faults}
    cluster = Cluster(url, workdir, args.lease_seconds)
    cluster.db = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for fault in args.faults:
            for i in range(args.rounds):
                seconds = await cluster.round(fault)
                results[fault].append(seconds)
                log(f"{fault} round {i + 1}/{args.rounds}: {seconds:.3f} s")
        cluster.stop_all()
        overlapping = await cluster.overlapping()
    finally:
        cluster.stop_all()
        await cluster.db.close()
    await harness.drop_database(url)
    return {
        "faults": {
            fault: {
                "rounds": len(times),
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
            }
            for fault, times in results.items()
        },
        "overlapping_leader_runs": overlapping,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds per fault (default 10)")
    parser.add_argument("--lease-seconds", type=float, default=10.0, help="leader_lease_seconds (default 10)")
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--keep-logs", action="store_true", help="print the tail of every worker log")
    parser.add_argument("--quick", action="store_true", help="one SIGKILL round, in seconds (for tests)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.faults = 1, ["sigkill"]
    with tempfile.TemporaryDirectory(prefix="bb-failover-") as workdir:
        try:
            print(json.dumps(asyncio.run(run(args, Path(workdir)))))
        finally:
            if args.keep_logs:
                for path in sorted(Path(workdir).glob("*.log")):
                    log(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")


if __name__ == "__main__":
    main()
