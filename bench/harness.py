"""What the benchmarks share: fresh PostgreSQL databases, free ports, server processes of their
own, process-tree CPU and memory, and the one JSON object each prints.

Every bench script runs from the repository root as `.venv/bin/python bench/<name>.py`; this
module sits beside them and is imported as `harness`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_BASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/"
REPO = Path(__file__).resolve().parent.parent
BACKBURNER = str(Path(sys.executable).with_name("backburner"))
START_TIMEOUT_S = 120.0


# --- databases --------------------------------------------------------------------------------


async def admin_execute(statement: str) -> None:
    """One statement on the server's admin database (CREATE DATABASE runs outside a transaction)."""
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(prefix: str, *, migrated: bool = False) -> str:
    """A new, empty PostgreSQL database; its SQLAlchemy URL. `migrated` applies the migrations."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await admin_execute(f'CREATE DATABASE "{name}"')
    url = PG_BASE_URL + name
    if migrated:
        from sqlalchemy.ext.asyncio import create_async_engine

        from backburner.db import migrate

        engine = create_async_engine(url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()
    return url


async def drop_database(url: str) -> None:
    await admin_execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_database(prefix: str, *, migrated: bool = False) -> Iterator[str]:
    """A fresh database for the `with` block, dropped afterwards (for synchronous benches)."""
    url = asyncio.run(create_database(prefix, migrated=migrated))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


async def checkpoint() -> None:
    """Write PostgreSQL's dirty pages now, so that the next run does not pay for this one's."""
    await admin_execute("CHECKPOINT")


async def overlapping_leader_runs(conn: asyncpg.Connection) -> int:
    """Runs of leader-only jobs in `job_runs` that overlap in time under different terms."""
    from backburner.scheduler.runs import RunRecord, overlapping_runs

    rows = await conn.fetch("SELECT * FROM job_runs")
    records = [
        RunRecord(
            job_id=r["job_id"],
            election=r["election"],
            fire_time=r["fire_time"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
            outcome=r["outcome"],
            error=r["error"],
            duration_s=r["duration_s"],
            epoch=int(r["epoch"]),
            instance_id=r["instance_id"],
        )
        for r in rows
    ]
    return len(overlapping_runs(records))


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(
    url: str, timeout_s: float = START_TIMEOUT_S, process: subprocess.Popen[Any] | None = None
) -> None:
    """Until `url` answers 200 (the process, if given, must not exit meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with status {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:g} s")


@dataclass
class Server:
    """A server process of the benchmark's own, stopped with SIGTERM at the end."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cpu_s(self) -> float:
        return tree_cpu_s(self.process.pid)

    def rss_mb(self) -> float:
        return tree_rss_mb(self.process.pid)


def start_server(
    argv: list[str], env: Mapping[str, str], *, port: int, log_path: Path, ready_path: str = "/readyz"
) -> Server:
    """Start `argv` with `env` added to this environment; returns once `ready_path` answers 200."""
    log = log_path.open("wb")
    process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_for_http(server.base_url + ready_path, process=process)
    except BaseException:
        server.stop()
        raise
    return server


def start_backburner(
    settings: Mapping[str, str],
    *,
    data_dir: Path,
    log_path: Path,
    command: str = "serve",
    executable: str = BACKBURNER,
) -> Server:
    """`backburner serve` with `BACKBURNER_` settings (names without the prefix), on a free port.

    `executable` may be another installation's `backburner`, to compare two versions side by side.
    """
    port = free_port()
    env = {f"BACKBURNER_{name.upper()}": value for name, value in settings.items()}
    env |= {"BACKBURNER_PORT": str(port), "BACKBURNER_DATA_DIR": str(data_dir)}
    return start_server([executable, command], env, port=port, log_path=log_path)


def start_emulator(log_path: Path, *extra: str) -> Server:
    port = free_port()
    return start_server(
        [BACKBURNER, "emulator", "--port", str(port), *extra],
        {},
        port=port,
        log_path=log_path,
        ready_path="/_emulator/health",
    )


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_s(pid: int) -> float:
    """User and system CPU of a process and its living descendants."""
    total = 0.0
    for process in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def tree_rss_mb(pid: int) -> float:
    """Memory of a process and its living descendants: the proportional set size, so that pages
    the pool processes share with their fork server count once."""
    total = 0
    for process in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_full_info().pss
    return total / 1e6


def machine_load() -> dict[str, float]:
    """The load averages, so that a figure can be read against how busy the machine was."""
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2), "cpus": os.cpu_count() or 0}


# --- results ----------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class HealthProbe(threading.Thread):
    """Asks a server's `/healthz` every `interval_s` until stopped: how long the loop keeps it waiting."""

    def __init__(self, base_url: str, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.interval_s = interval_s
        self.samples_ms: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                client.get("/healthz").raise_for_status()
                self.samples_ms.append((time.perf_counter() - started) * 1000)
                self.stop.wait(self.interval_s)


def emit(result: Mapping[str, Any]) -> None:
    """Print the benchmark's one JSON object."""
    print(json.dumps(result, indent=2))


def log(message: str) -> None:
    """Progress, on stderr (stdout holds only the JSON)."""
    print(message, file=sys.stderr, flush=True)


def retry_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(interval_s)
