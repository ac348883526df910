"""Lease arithmetic, lock keys, the pooler warning and the lock-file path: pure functions."""

from __future__ import annotations

from pathlib import Path

from backburner.leader.filelock import lock_file_path
from backburner.leader.lease import Backoff, LeaseTiming, application_name, lock_key, lock_key_parts
from backburner.leader.pg_lock import asyncpg_dsn, looks_like_transaction_pooler
from backburner.scheduler.runs import RunRecord, overlapping_runs


def test_the_leader_steps_down_well_before_the_server_ends_its_session() -> None:
    timing = LeaseTiming(10.0)
    assert timing.heartbeat_interval_s == 2.0
    assert timing.step_down_after_s == 6.0
    # a heartbeat sent at the last proof + its deadline still leaves margin before the lease
    assert timing.step_down_after_s + timing.heartbeat_timeout_s < timing.lease_s
    settings = timing.server_settings(application_name("host-1-abc"))
    assert settings["idle_session_timeout"] == "10000"
    assert settings["tcp_user_timeout"] == "10000"
    assert settings["application_name"] == "backburner-leader:host-1-abc"
    idle, interval, count = (
        int(settings[k]) for k in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
    )
    assert idle + interval * count <= 10


def test_short_leases_keep_valid_keepalive_settings() -> None:
    settings = LeaseTiming(2.0).server_settings("x")
    assert all(int(settings[k]) >= 1 for k in ("tcp_keepalives_idle", "tcp_keepalives_interval"))


def test_lock_keys_are_stable_signed_64_bit_and_distinct() -> None:
    key = lock_key("backburner-scheduler")
    assert key == lock_key("backburner-scheduler")
    assert -(2**63) <= key < 2**63
    assert key != lock_key("other")
    high, low = lock_key_parts(-1)
    assert (high, low) == (0xFFFF_FFFF, 0xFFFF_FFFF)


def test_backoff_doubles_from_one_second_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.next_delay_s() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay_s() == 1.0
    assert Backoff(1.0, 0.5).next_delay_s() == 0.5


def test_pgbouncer_looking_urls_are_recognised() -> None:
    assert looks_like_transaction_pooler("postgresql+asyncpg://u@db:6432/app")
    assert looks_like_transaction_pooler("postgresql+asyncpg://u@pgbouncer.internal/app")
    assert not looks_like_transaction_pooler("postgresql+asyncpg://u@db:5432/app")


def test_the_lock_session_gets_a_libpq_dsn_with_its_password() -> None:
    assert asyncpg_dsn("postgresql+asyncpg://u:secret@db:5432/app") == "postgresql://u:secret@db:5432/app"


def test_the_lock_file_sits_beside_the_database_file(tmp_path: Path) -> None:
    db = tmp_path / "data" / "bb.db"
    assert lock_file_path(f"sqlite+aiosqlite:///{db}", tmp_path, "a/b c") == db.with_name(
        "bb.db.a_b_c.leader.lock"
    )
    assert lock_file_path("sqlite+aiosqlite://", tmp_path, "e").parent == tmp_path


def _run(epoch: int, start: int, end: int | None, election: str = "e") -> RunRecord:
    from datetime import UTC, datetime, timedelta

    base = datetime(2026, 1, 1, tzinfo=UTC)
    return RunRecord(
        job_id="j",
        election=election,
        fire_time=base + timedelta(seconds=start),
        started_at=base + timedelta(seconds=start),
        finished_at=None if end is None else base + timedelta(seconds=end),
        outcome="succeeded",
        error=None,
        duration_s=None,
        epoch=epoch,
        instance_id="i",
    )


def test_overlap_counts_only_runs_of_different_terms_of_one_election() -> None:
    assert overlapping_runs([_run(1, 0, 2), _run(1, 1, 3)]) == []  # same term
    assert overlapping_runs([_run(1, 0, 2), _run(2, 2, 3)]) == []  # back to back
    assert len(overlapping_runs([_run(1, 0, 2), _run(2, 1, 3)])) == 1
    assert len(overlapping_runs([_run(1, 0, None), _run(2, 5, 6)])) == 1  # never finished
    assert overlapping_runs([_run(1, 0, 2, "a"), _run(2, 1, 3, "b")]) == []
