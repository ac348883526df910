"""The PostgreSQL elector: a session-level advisory lock on a dedicated connection, with a lease.

Followers block in `pg_advisory_lock` (mode `wait`) so they take over the moment the lock is
freed, or try it every `poll_lock_retry_interval_seconds` (mode `poll`). The leader heartbeats
its lock session and steps down before the server could end that session and free the lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock
from backburner.leader import pg_lock
from backburner.leader.base import Leadership
from backburner.leader.config import ElectionConfig
from backburner.leader.lease import (
    FOLLOWER_WAIT_SLICE_S,
    Backoff,
    LeaseTiming,
    application_name,
    lock_key,
)
from backburner.leader.term import ElectedLeadership, end_term
from backburner.logs import describe_error, log_event
from backburner.tasks import wait_event

log = logging.getLogger("backburner.leader")

RECONNECT_START_S = 1.0
RELEASE_TIMEOUT_S = 2.0


class PostgresElector:
    backend = "postgres"

    def __init__(self, *, engine: AsyncEngine, dsn: str, config: ElectionConfig, clock: Clock) -> None:
        self.mode: str = config.mode
        self.lease_seconds = config.lease_s
        self.state = "starting"  # connecting | waiting | leading | retrying
        self._engine = engine
        self._dsn = dsn
        self._config = config
        self._clock = clock
        self._key = lock_key(config.election)
        self._timing = LeaseTiming(config.lease_s)
        self._backoff = Backoff(RECONNECT_START_S, config.retry_interval_s)
        self._waiting_for: pg_lock.LockHolder | None = None
        self._waiting_logged = False

    async def aclose(self) -> None:
        """Nothing to do: `terms()` releases the lock when it is closed."""

    async def terms(self) -> AsyncGenerator[Leadership, None]:
        while True:
            conn = await self._connect()
            try:
                won = await self._compete(conn)
            except asyncio.CancelledError:
                conn.terminate()
                raise
            except Exception as exc:
                conn.terminate()
                await self._retry_later("compete", exc)
                continue
            if won is None:  # mode `poll` and the lock is taken: try again after the poll interval
                await self._close(conn)
                self.state = "waiting"
                await asyncio.sleep(self._config.retry_interval_s)
                continue
            leadership, proven_at = won
            self._backoff.reset()
            self.state = "leading"
            keeper = _LockKeeper(conn, leadership, self._timing, proven_at)
            task = asyncio.create_task(keeper.run(), name="leader.heartbeat")
            try:
                yield leadership
            finally:
                await self._end_term(conn, leadership, keeper, task)

    # --- competing ----------------------------------------------------------------------------

    async def _connect(self) -> asyncpg.Connection:
        self.state = "connecting"
        settings = self._timing.server_settings(application_name(self._config.instance_id))
        while True:
            try:
                conn: asyncpg.Connection = await asyncpg.connect(
                    self._dsn, timeout=self._timing.connect_timeout_s, server_settings=settings
                )
                return conn
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, unreachable, bad credentials: all retried
                await self._retry_later("connect", exc)

    async def _retry_later(self, stage: str, exc: BaseException) -> None:
        self.state = "retrying"
        delay = self._backoff.next_delay_s()
        log_event(
            log,
            logging.WARNING,
            "leader.connection_failed",
            stage=stage,
            error=describe_error(exc),
            retry_in_s=delay,
        )
        await asyncio.sleep(delay)
        self.state = "connecting"

    async def _compete(self, conn: asyncpg.Connection) -> tuple[ElectedLeadership, float] | None:
        query_timeout_s = self._timing.connect_timeout_s
        if not await pg_lock.try_lock(conn, self._key, query_timeout_s):
            self.state = "waiting"
            self._log_waiting(await pg_lock.find_holder(conn, self._key, query_timeout_s))
            if self.mode == "poll":
                return None
            # The server cuts each wait into slices (lock_timeout); a client-side deadline a little
            # longer catches a connection that died silently.
            while not await pg_lock.wait_lock(conn, self._key, FOLLOWER_WAIT_SLICE_S + query_timeout_s):
                self._log_waiting(await pg_lock.find_holder(conn, self._key, query_timeout_s))
        async with asyncio.timeout(max(2 * self._config.lease_s, 10.0)):
            term, proven_at, ended = await pg_lock.start_term(
                conn, self._config.election, self._config.instance_id, self._clock
            )
        if ended:
            log_event(log, logging.WARNING, "leader.ended_old_term_transactions", count=ended)
        self._waiting_logged = False
        log_event(
            log,
            logging.INFO,
            "leader.acquired",
            election=term.election,
            epoch=term.epoch,
            instance_id=term.instance_id,
            backend=self.backend,
            lock_pid=conn.get_server_pid(),
        )
        return ElectedLeadership(self._engine, term, idle_timeout_s=self._config.lease_s), proven_at

    def _log_waiting(self, holder: pg_lock.LockHolder | None) -> None:
        """Log once per wait, and again when the holder changes."""
        if self._waiting_logged and holder == self._waiting_for:
            return
        self._waiting_logged = True
        self._waiting_for = holder
        log_event(
            log,
            logging.INFO if holder is None or holder.is_backburner else logging.WARNING,
            "leader.waiting",
            election=self._config.election,
            mode=self.mode,
            holder_pid=holder.pid if holder else None,
            holder_application=holder.application_name if holder else None,
            foreign_holder=bool(holder and not holder.is_backburner),
        )

    # --- ending a term ------------------------------------------------------------------------

    async def _end_term(
        self,
        conn: asyncpg.Connection,
        leadership: ElectedLeadership,
        keeper: _LockKeeper,
        task: asyncio.Task[None],
    ) -> None:
        async def release(graceful: bool) -> None:
            if graceful:
                await pg_lock.unlock_all(conn, RELEASE_TIMEOUT_S)
                await conn.close(timeout=RELEASE_TIMEOUT_S)
            else:
                conn.terminate()

        try:
            keeper.stop()
            await task
            await end_term(leadership, self._clock, release=release)
        except Exception as exc:
            log_event(log, logging.WARNING, "leader.release_failed", error=describe_error(exc))
        finally:
            if not conn.is_closed():
                conn.terminate()
            self.state = "connecting"

    async def _close(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.close(timeout=RELEASE_TIMEOUT_S)
        except Exception:
            conn.terminate()


class _LockKeeper:
    """Heartbeats the lock session of one term and ends the term when the lock may be gone."""

    def __init__(
        self, conn: asyncpg.Connection, leadership: ElectedLeadership, timing: LeaseTiming, proven_at: float
    ) -> None:
        self._conn = conn
        self._leadership = leadership
        self._timing = timing
        self._last_proof = proven_at  # when the last successful query was sent (monotonic)
        self._wake = asyncio.Event()
        self._stopping = False
        self._terminated = False
        leadership.on_lost(lambda _reason: self._wake.set())

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _on_terminated(self, _conn: object) -> None:
        self._terminated = True
        self._wake.set()

    async def run(self) -> None:
        self._conn.add_termination_listener(self._on_terminated)
        try:
            await self._beat()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must end the term, not leave it unwatched
            self._lose("monitor_failed", exc)
        finally:
            self._conn.remove_termination_listener(self._on_terminated)

    async def _beat(self) -> None:
        next_beat = self._last_proof + self._timing.heartbeat_interval_s
        while True:
            self._wake.clear()
            if self._stopping:
                return
            if self._leadership.lost.is_set():  # fenced out: give the lock up at once
                self._conn.terminate()
                return
            if self._terminated:
                self._lose("connection_lost", None)
                return
            now = time.monotonic()
            deadline = self._last_proof + self._timing.step_down_after_s
            if now >= deadline:
                self._lose("heartbeat_deadline", None)
                return
            if now >= next_beat:
                try:
                    await pg_lock.heartbeat(self._conn, min(self._timing.heartbeat_timeout_s, deadline - now))
                    self._last_proof = now
                except TimeoutError:
                    log_event(
                        log,
                        logging.WARNING,
                        "leader.heartbeat_slow",
                        silent_for_s=round(time.monotonic() - self._last_proof, 3),
                    )
                except Exception as exc:
                    self._lose("connection_lost", exc)
                    return
                next_beat = now + self._timing.heartbeat_interval_s
                continue
            await wait_event(self._wake, min(next_beat, deadline) - now)

    def _lose(self, reason: str, exc: BaseException | None) -> None:
        if self._leadership.step_down(reason):
            log_event(
                log,
                logging.WARNING,
                "leader.lost",
                reason=reason,
                epoch=self._leadership.term.epoch,
                silent_for_s=round(time.monotonic() - self._last_proof, 3),
                error=describe_error(exc) if exc else None,
            )
        # Closing the socket makes the server free the lock now if it still holds it.
        self._conn.terminate()
