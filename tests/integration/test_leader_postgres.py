"""PostgreSQL elector faults: a killed lock session, a silent network, a foreign holder, polling,
a refused lock connection. Real PostgreSQL; the network faults go through a local TCP proxy."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.engine import create_engine
from backburner.leader.lease import lock_key
from backburner.leader.pg_lock import asyncpg_dsn
from backburner.settings_loader import LoadedSettings
from tests.support.databases import PostgresDatabases
from tests.support.electors import Candidate, make_elector
from tests.support.files import wait_for
from tests.support.processes import free_port
from tests.support.tcpproxy import TcpProxy

LEASE_S = 3.0


@pytest.fixture
async def pg_engine(postgres_url: str, make_settings) -> AsyncIterator[AsyncEngine]:  # type: ignore[no-untyped-def]
    loaded: LoadedSettings = make_settings(database_url=postgres_url)
    engine = create_engine(loaded.settings)
    yield engine
    await engine.dispose()


@pytest.fixture
def neighbour_url(postgres_databases: PostgresDatabases) -> Iterator[str]:
    """Another database on the same server, made from the same template: its tables have the
    same ids as ours."""
    url = postgres_databases.new()
    yield url
    postgres_databases.drop(url)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


async def test_a_terminated_lock_session_ends_the_term_and_a_follower_takes_over(
    pg_engine: AsyncEngine, postgres_url: str
) -> None:
    leader = Candidate(make_elector(pg_engine, postgres_url, lease_s=LEASE_S, instance_id="lead")).start()
    first = await leader.wait_leading(10)
    follower = Candidate(make_elector(pg_engine, postgres_url, lease_s=LEASE_S, instance_id="follow")).start()
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        await follower.wait_for(lambda: follower.elector.state == "waiting", 5, "the follower to wait")
        killed = await admin.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            "backburner-leader:lead",
        )
        assert killed
        started = time.monotonic()
        await leader.wait_for(lambda: first.lost.is_set(), LEASE_S, "the leader to step down")
        assert first.reason == "connection_lost"
        second = await follower.wait_leading(LEASE_S)
        assert time.monotonic() - started < LEASE_S
        assert second.term.epoch == first.term.epoch + 1
    finally:
        await admin.close()
        await leader.stop()
        await follower.stop()


async def test_a_silent_network_makes_the_leader_step_down_before_anyone_else_leads(
    pg_engine: AsyncEngine, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    proxy = TcpProxy(free_port())
    await proxy.start()
    lock_url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.listen_port}")
    leader = Candidate(make_elector(pg_engine, postgres_url, lease_s=LEASE_S, lock_url=lock_url)).start()
    follower: Candidate | None = None
    try:
        first = await leader.wait_leading(10)
        follower = Candidate(make_elector(pg_engine, postgres_url, lease_s=LEASE_S)).start()
        await follower.wait_for(lambda: follower.elector.state == "waiting", 5, "the follower to wait")
        frozen_at = time.monotonic()
        proxy.freeze()  # the leader's packets go nowhere; the server hears nothing from it
        second = await follower.wait_leading(LEASE_S + 3)
        assert first.lost.is_set() and first.reason == "heartbeat_deadline"
        stepped_down = leader.lost_at[first.term.epoch]
        # Stopped before the server could free the lock (one lease after its last query).
        assert stepped_down < follower.won_at[second.term.epoch]
        assert stepped_down - frozen_at <= LEASE_S * 0.6 + LEASE_S / 5 + 0.3
        assert events(caplog, "leader.lost")
    finally:
        await proxy.stop()
        await leader.stop()
        if follower is not None:
            await follower.stop()


async def test_a_foreign_session_holding_the_lock_is_waited_for_and_named(
    pg_engine: AsyncEngine, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    foreign = await asyncpg.connect(
        asyncpg_dsn(postgres_url), server_settings={"application_name": "intruder"}
    )
    await foreign.execute("SELECT pg_advisory_lock($1)", lock_key("test-election"))
    candidate = Candidate(make_elector(pg_engine, postgres_url, lease_s=LEASE_S)).start()
    try:
        await candidate.wait_for(lambda: events(caplog, "leader.waiting"), 5, "a leader.waiting line")
        waiting = events(caplog, "leader.waiting")[0]
        assert waiting.holder_application == "intruder"  # type: ignore[attr-defined]
        assert waiting.foreign_holder is True  # type: ignore[attr-defined]
        assert waiting.levelno == logging.WARNING
        assert candidate.leadership is None
        await foreign.execute("SELECT pg_advisory_unlock_all()")
        await candidate.wait_leading(2)
    finally:
        await foreign.close()
        await candidate.stop()


async def test_poll_mode_tries_the_lock_every_retry_interval(
    pg_engine: AsyncEngine, postgres_url: str
) -> None:
    leader = Candidate(make_elector(pg_engine, postgres_url, mode="poll")).start()
    await leader.wait_leading(10)
    poller = Candidate(make_elector(pg_engine, postgres_url, mode="poll", retry_interval_s=1.0)).start()
    try:
        await poller.wait_for(lambda: poller.elector.state == "waiting", 5, "the poller to wait")
        await leader.stop()
        released = time.monotonic()
        await poller.wait_leading(3)
        assert time.monotonic() - released <= 1.0 + 1.0  # one poll interval, plus slack
    finally:
        await poller.stop()


async def test_a_refused_lock_connection_is_retried_with_backoff_and_logged(
    pg_engine: AsyncEngine, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    proxy = TcpProxy(free_port())  # not listening yet: connections are refused
    lock_url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.listen_port}")
    candidate = Candidate(
        make_elector(pg_engine, postgres_url, lock_url=lock_url, retry_interval_s=2.0)
    ).start()
    try:
        await candidate.wait_for(
            lambda: len(events(caplog, "leader.connection_failed")) >= 2, 6, "two retries"
        )
        failures = events(caplog, "leader.connection_failed")
        assert [r.retry_in_s for r in failures[:2]] == [1.0, 2.0]  # type: ignore[attr-defined]
        assert "refused" in failures[0].error.lower() or "connect" in failures[0].error.lower()  # type: ignore[attr-defined]
        await proxy.start()
        await candidate.wait_leading(5)
    finally:
        await candidate.stop()
        await proxy.stop()


async def test_a_frozen_follower_granted_the_lock_delays_the_takeover_by_one_lease_at_most(
    pg_engine: AsyncEngine, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A frozen follower first in the queue is granted the lock but cannot use it; its session
    then sits idle and the server ends it after one lease, so the next follower leads."""
    caplog.set_level(logging.INFO)
    proxy = TcpProxy(free_port())
    await proxy.start()
    frozen_url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.listen_port}")
    leader = Candidate(make_elector(pg_engine, postgres_url, lease_s=LEASE_S)).start()
    frozen = Candidate(make_elector(pg_engine, postgres_url, lease_s=LEASE_S, lock_url=frozen_url))
    healthy = Candidate(make_elector(pg_engine, postgres_url, lease_s=LEASE_S))
    try:
        await leader.wait_leading(10)
        frozen.start()  # queued first
        await frozen.wait_for(lambda: frozen.elector.state == "waiting", 5, "the first follower to wait")
        healthy.start()
        await healthy.wait_for(lambda: healthy.elector.state == "waiting", 5, "the second follower to wait")
        proxy.freeze()
        await leader.stop()  # releases: the server grants the lock to the frozen follower
        released = time.monotonic()
        await healthy.wait_leading(LEASE_S + 3)
        assert LEASE_S - 0.5 <= time.monotonic() - released <= LEASE_S + 2
        proxy.thaw()
        # Thawed, it reads "granted" from a session the server has ended: it starts no term.
        await frozen.wait_for(
            lambda: any(
                getattr(r, "stage", None) == "compete" for r in events(caplog, "leader.connection_failed")
            ),
            5,
            "the thawed follower to find its session gone",
        )
        assert frozen.terms == []
    finally:
        await proxy.stop()
        for candidate in (leader, frozen, healthy):
            await candidate.stop()


async def test_an_old_term_transaction_that_never_ends_is_ended_by_the_next_term(
    pg_engine: AsyncEngine, postgres_url: str, neighbour_url: str
) -> None:
    """A leader frozen inside a fenced statement leaves its transaction `active`, where no idle
    timeout reaches it; the next leader ends it instead of waiting for the thaw, and ends no
    transaction of another database."""
    leader = Candidate(make_elector(pg_engine, postgres_url, lease_s=LEASE_S, instance_id="lead")).start()
    first = await leader.wait_leading(10)
    follower = Candidate(make_elector(pg_engine, postgres_url, lease_s=LEASE_S, instance_id="follow")).start()
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    stuck = await asyncpg.connect(asyncpg_dsn(postgres_url))
    stuck_pid = stuck.get_server_pid()
    neighbour = await asyncpg.connect(asyncpg_dsn(neighbour_url))
    try:
        await follower.wait_for(lambda: follower.elector.state == "waiting", 5, "the follower to wait")
        for session in (stuck, neighbour):
            await session.execute("BEGIN")
            await session.fetch("SELECT epoch FROM leader_epochs FOR SHARE")  # as a fenced transaction does
        epochs_id = "SELECT 'leader_epochs'::regclass::oid"
        assert await neighbour.fetchval(epochs_id) == await admin.fetchval(epochs_id)
        await admin.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            "backburner-leader:lead",
        )
        started = time.monotonic()
        second = await follower.wait_leading(LEASE_S)
        assert time.monotonic() - started < LEASE_S
        assert second.term.epoch == first.term.epoch + 1

        async def session_ended() -> bool:  # asked of the server: the client may not have seen it yet
            found = await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", stuck_pid)
            return bool(found == 0)

        await wait_for(session_ended, 10, "the old term's session to end")
        assert await neighbour.fetchval("SELECT 1") == 1  # its transaction was left alone
    finally:
        stuck.terminate()
        neighbour.terminate()
        await admin.close()
        await leader.stop()
        await follower.stop()
