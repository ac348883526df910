"""Several real `backburner` processes competing for leadership, and probes of their database.

Processes log JSON so that tests read their structured events; the probes read the election and
run history straight from the database (asyncpg for PostgreSQL, sqlite3 for SQLite).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from backburner.leader.lease import application_name
from backburner.leader.pg_lock import asyncpg_dsn
from backburner.scheduler.runs import RunRecord
from tests.support.processes import BackburnerProcess, free_port, wait_until

LEASE_S = 3.0
# How long a new process may take to log its first events on a busy machine (a deadline: the
# waits end as soon as the line is there).
START_DEADLINE_S = 60.0
ELECTION = "backburner-scheduler"


def leader_env(database_url: str, data_dir: Path, **overrides: object) -> dict[str, str]:
    """Settings for fast failover tests: a 3 s lease and a heartbeat job twice a second."""
    values: dict[str, object] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "log_format": "json",
        "leader_lease_seconds": LEASE_S,
        "scheduler_heartbeat_interval_seconds": 0.5,
        "instance_heartbeat_interval_seconds": 0.5,
        "poll_lock_retry_interval_seconds": 1,
        "shutdown_timeout_seconds": 5,
    }
    values.update(overrides)
    return {f"BACKBURNER_{k.upper()}": str(v) for k, v in values.items() if v is not None}


class Member:
    """One `backburner worker` or `serve` process of a cluster."""

    def __init__(self, kind: str, env: dict[str, str], workdir: Path, name: str) -> None:
        self.name = name
        if env.get("BACKBURNER_DATABASE_URL", "").startswith("postgresql"):
            # Members share the database and nothing else, as on separate hosts.
            env = {**env, "BACKBURNER_DATA_DIR": str(workdir / f"{name}-data")}
        port = free_port() if kind == "serve" else None
        args = [kind, "--port", str(port)] if kind == "serve" else [kind]
        self.process = BackburnerProcess(
            args, env=env, cwd=workdir, log_path=workdir / f"{name}.log", port=port
        )

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.process.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (name is None or record.get("event") == name):
                found.append(record)
        return found

    @property
    def instance_id(self) -> str:
        def started() -> str | None:
            records = self.events("runtime.starting")
            return str(records[0]["instance_id"]) if records else None

        return str(wait_until(started, START_DEADLINE_S, f"{self.name} to log its instance id"))

    def alive(self) -> bool:
        return self.process.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.process.popen.send_signal(sig)

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
        self.process.stop()


def start_members(kind: str, count: int, env: dict[str, str], workdir: Path) -> list[Member]:
    return [Member(kind, env, workdir, f"{kind}-{i}") for i in range(count)]


@dataclass(frozen=True)
class Election:
    holder: str
    epoch: int
    acquired_at: datetime
    released_at: datetime | None


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _run(row: Any) -> RunRecord:
    return RunRecord(
        job_id=row["job_id"],
        election=row["election"],
        fire_time=_aware(row["fire_time"]),  # type: ignore[arg-type]
        started_at=_aware(row["started_at"]),  # type: ignore[arg-type]
        finished_at=_aware(row["finished_at"]),
        outcome=row["outcome"],
        error=row["error"],
        duration_s=row["duration_s"],
        epoch=int(row["epoch"]),
        instance_id=row["instance_id"],
    )


class Probe:
    """Reads the election and run history of a database (either backend)."""

    def __init__(self, database_url: str) -> None:
        self._url = make_url(database_url)

    @property
    def is_postgres(self) -> bool:
        return self._url.get_backend_name() == "postgresql"

    def rows(self, sql: str, *args: Any) -> list[Any]:
        if self.is_postgres:

            async def fetch() -> list[Any]:
                conn = await asyncpg.connect(asyncpg_dsn(self._url.render_as_string(hide_password=False)))
                try:
                    return list(await conn.fetch(sql, *args))
                finally:
                    await conn.close()

            return asyncio.run(fetch())
        with sqlite3.connect(str(self._url.database), timeout=10) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql.replace("$1", "?").replace("$2", "?"), args).fetchall()

    def election(self, name: str = ELECTION) -> Election | None:
        rows = self.rows(
            "SELECT holder, epoch, acquired_at, released_at FROM leader_epochs WHERE name = $1", name
        )
        if not rows:
            return None
        row = rows[0]
        return Election(
            row["holder"], int(row["epoch"]), _aware(row["acquired_at"]), _aware(row["released_at"])
        )  # type: ignore[arg-type]

    def runs(self, job_id: str | None = None) -> list[RunRecord]:
        if job_id is None:
            rows = self.rows("SELECT * FROM job_runs ORDER BY started_at, id")
        else:
            rows = self.rows("SELECT * FROM job_runs WHERE job_id = $1 ORDER BY started_at, id", job_id)
        return [_run(r) for r in rows]

    def first_run_of_epoch_above(self, epoch: int) -> RunRecord | None:
        rows = self.rows("SELECT * FROM job_runs WHERE epoch > $1 ORDER BY started_at LIMIT 1", epoch)
        return _run(rows[0]) if rows else None

    def new_leader(self, old_epoch: int) -> Election | None:
        election = self.election()
        return election if election is not None and election.epoch > old_epoch else None

    def lock_sessions(self) -> list[Any]:
        return self.rows(
            "SELECT pid, application_name, wait_event_type FROM pg_stat_activity "
            "WHERE application_name LIKE 'backburner-leader:%' AND datname = current_database()"
        )

    def followers_waiting(self) -> int:
        return sum(1 for row in self.lock_sessions() if row["wait_event_type"] == "Lock")

    def wait_for_one_follower(self, what: str) -> None:
        """Until one instance waits on the leader's lock: both sides of the election are settled."""
        wait_until(lambda: self.followers_waiting() == 1, START_DEADLINE_S, what)

    def terminate_lock_session(self, instance_id: str) -> bool:
        rows = self.rows(
            "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            application_name(instance_id)[:63],
        )
        return any(row["done"] for row in rows)


def member_of(members: list[Member], instance_id: str) -> Member:
    for member in members:
        if member.alive() and member.instance_id == instance_id:
            return member
    raise AssertionError(f"no live member is {instance_id}")


def wait_for_leader(
    probe: Probe, members: list[Member], timeout_s: float, above_epoch: int = 0
) -> tuple[Member, Election]:
    """A live member holds a term above `above_epoch` and has recorded a run in it."""

    def found() -> tuple[Member, Election] | None:
        election = probe.new_leader(above_epoch)
        if election is None or election.released_at is not None:
            return None
        if not any(r.epoch == election.epoch for r in probe.runs("heartbeat")):
            return None
        return member_of(members, election.holder), election

    result: tuple[Member, Election] = wait_until(found, timeout_s, f"a leader above epoch {above_epoch}")
    return result
