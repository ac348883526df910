"""The file elector (SQLite): an exclusive `flock` on a file beside the database file.

One host only: the kernel releases the lock when its holder exits, however it exits, so a
follower polling the lock takes over within one poll interval. `flock` locks belong to an open
file description, so two electors in one process exclude each other too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
from collections.abc import AsyncGenerator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock
from backburner.leader.base import Leadership
from backburner.leader.config import ElectionConfig
from backburner.leader.fencing import start_term
from backburner.leader.lease import Backoff
from backburner.leader.term import ElectedLeadership, end_term
from backburner.logs import describe_error, log_event

log = logging.getLogger("backburner.leader")

LOCK_POLL_INTERVAL_S = 0.1
RETRY_START_S = 1.0


def lock_file_path(database_url: str, data_dir: Path, election: str) -> Path:
    """`<database file>.<election>.leader.lock`; in `data_dir` for an in-memory database."""
    database = make_url(database_url).database
    base = Path(database) if database and database != ":memory:" else data_dir / "backburner.db"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", election)[:100]
    return base.with_name(f"{base.name}.{safe}.leader.lock")


class FileElector:
    backend = "file"

    def __init__(self, *, engine: AsyncEngine, path: Path, config: ElectionConfig, clock: Clock) -> None:
        self.mode = "wait"
        self.lease_seconds = config.lease_s
        self.state = "starting"
        self.path = path
        self._engine = engine
        self._config = config
        self._clock = clock
        self._backoff = Backoff(RETRY_START_S, config.retry_interval_s)

    async def aclose(self) -> None:
        """Nothing to do: `terms()` releases the lock when it is closed."""

    async def terms(self) -> AsyncGenerator[Leadership, None]:
        while True:
            lock = await self._acquire()
            try:
                leadership = await self._begin()
            except BaseException:
                lock.release()
                raise
            self.state = "leading"
            try:
                yield leadership
            finally:
                await self._end_term(lock, leadership)

    async def _acquire(self) -> _LockFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = _LockFile(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644))
        try:
            logged = False
            while not lock.try_lock():
                if not logged:
                    self.state = "waiting"
                    log_event(
                        log,
                        logging.INFO,
                        "leader.waiting",
                        election=self._config.election,
                        mode=self.mode,
                        lock_file=str(self.path),
                        holder=lock.read_holder(),
                    )
                    logged = True
                await asyncio.sleep(LOCK_POLL_INTERVAL_S)
            lock.write_holder(f"{self._config.instance_id} pid={os.getpid()}")
            return lock
        except BaseException:
            lock.release()
            raise

    async def _begin(self) -> ElectedLeadership:
        """Start the term in the database; retried with backoff while the database fails."""
        while True:
            try:
                async with self._engine.begin() as conn:
                    term = await start_term(
                        conn, self._config.election, self._config.instance_id, self._clock
                    )
                break
            except Exception as exc:
                delay = self._backoff.next_delay_s()
                log_event(
                    log,
                    logging.WARNING,
                    "leader.connection_failed",
                    stage="start_term",
                    error=describe_error(exc),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
        self._backoff.reset()
        log_event(
            log,
            logging.INFO,
            "leader.acquired",
            election=term.election,
            epoch=term.epoch,
            instance_id=term.instance_id,
            backend=self.backend,
            lock_file=str(self.path),
        )
        return ElectedLeadership(self._engine, term)

    async def _end_term(self, lock: _LockFile, leadership: ElectedLeadership) -> None:
        async def release(graceful: bool) -> None:
            lock.release()

        try:
            await end_term(leadership, self._clock, release=release)
        finally:
            lock.release()
            self.state = "starting"


class _LockFile:
    """One open descriptor of the lock file; closing it drops the flock (exactly once)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def try_lock(self) -> bool:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def write_holder(self, text: str) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (text + "\n").encode(), 0)

    def read_holder(self) -> str:
        assert self._fd is not None
        with contextlib.suppress(OSError):
            return os.pread(self._fd, 200, 0).decode(errors="replace").strip()
        return ""

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
