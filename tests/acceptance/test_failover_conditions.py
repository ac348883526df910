"""Bad conditions get clear log lines and retries, never a crash: the database unreachable at
start, the lock connection refused, the lock held by a foreign session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from backburner.leader.lease import lock_key
from tests.support.cluster import START_DEADLINE_S, Probe, leader_env, start_members, wait_for_leader
from tests.support.processes import free_port, wait_until
from tests.support.tcpproxy import ThreadedTcpProxy

pytestmark = pytest.mark.acceptance


def via_port(url: str, port: int) -> str:
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


def test_database_unreachable_at_start_is_retried_until_it_answers(postgres_url: str, tmp_path: Path) -> None:
    proxy = ThreadedTcpProxy(free_port())  # nothing listens yet: connections are refused
    env = leader_env(via_port(postgres_url, proxy.proxy.listen_port), tmp_path / "data")
    [member] = start_members("worker", 1, env, tmp_path)
    try:
        wait_until(lambda: len(member.events("db.unavailable")) >= 2, START_DEADLINE_S, "two logged retries")
        assert member.alive()
        assert "refused" in member.events("db.unavailable")[0]["error"].lower()
        proxy.start()
        wait_for_leader(Probe(postgres_url), [member], 20)
    finally:
        member.stop()
        proxy.close()


def test_a_refused_lock_connection_is_logged_and_retried(postgres_url: str, tmp_path: Path) -> None:
    proxy = ThreadedTcpProxy(free_port())
    env = leader_env(
        postgres_url, tmp_path / "data", leader_database_url=via_port(postgres_url, proxy.proxy.listen_port)
    )
    [member] = start_members("worker", 1, env, tmp_path)
    try:
        wait_until(
            lambda: len(member.events("leader.connection_failed")) >= 2,
            START_DEADLINE_S,
            "two logged retries",
        )
        failure = member.events("leader.connection_failed")[0]
        assert failure["stage"] == "connect" and failure["retry_in_s"] == 1.0
        assert member.alive()
        assert Probe(postgres_url).election() is None
        proxy.start()
        wait_for_leader(Probe(postgres_url), [member], 10)
    finally:
        member.stop()
        proxy.close()


def test_a_foreign_session_holding_the_lock_is_named_and_waited_for(
    postgres_url: str, tmp_path: Path
) -> None:
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    foreign = subprocess.Popen(
        [
            "psql",
            dsn,
            "-q",
            "-c",
            f"SELECT pg_advisory_lock({lock_key('backburner-scheduler')})",
            "-c",
            "SELECT pg_sleep(120)",
        ],
        env={**os.environ, "PGAPPNAME": "someone-else"},
        stdout=subprocess.DEVNULL,
    )
    probe = Probe(postgres_url)
    members: list = []  # type: ignore[type-arg]
    try:
        wait_until(
            lambda: probe.rows(
                "SELECT 1 FROM pg_stat_activity "
                "WHERE application_name = 'someone-else' AND query LIKE '%pg_sleep%' "
                "AND datname = current_database()"
            ),
            10,
            "the foreign session to hold the lock",
        )
        members = start_members("worker", 1, leader_env(postgres_url, tmp_path / "data"), tmp_path)
        [member] = members
        waiting = wait_until(
            lambda: member.events("leader.waiting"), START_DEADLINE_S, "a leader.waiting line"
        )[0]
        assert waiting["level"] == "WARNING"
        assert waiting["holder_application"] == "someone-else" and waiting["foreign_holder"] is True
        assert probe.election() is None and member.alive()
        # An operator ends the foreign session; the lock is free and the instance takes it.
        assert probe.rows(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            "someone-else",
        )
        wait_for_leader(probe, members, 10)
    finally:
        foreign.kill()
        foreign.wait(5)
        for member in members:
            member.stop()
