"""Three `backburner serve` processes on one PostgreSQL database fire a one-second schedule to a
receiver on 127.0.0.1 while the leader is killed (SIGKILL), then the next one frozen (SIGSTOP).

Every fire time of the window is delivered at least once; an idempotency key reaches the receiver
twice only for fires whose record shows more than one attempt; and each fire has one run record,
under one epoch.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from backburner.schedules.delivery import idempotency_key
from tests.support.cluster import LEASE_S, Member, Probe, leader_env, start_members, wait_for_leader
from tests.support.processes import wait_until
from tests.support.receiver import Receiver, running_receiver

pytestmark = pytest.mark.acceptance


def received_keys(receiver: Receiver) -> Counter[str]:
    return Counter(receiver.idempotency_keys())


def test_a_one_second_schedule_survives_sigkill_and_sigstop_of_the_leader(
    postgres_url: str, tmp_path: Path
) -> None:
    probe = Probe(postgres_url)
    with running_receiver() as receiver:
        env = leader_env(
            postgres_url,
            tmp_path / "data",
            schedule_webhook_allowed_urls=receiver.prefix,
            schedule_poll_interval_seconds=0.5,
        )
        members = start_members("serve", 3, env, tmp_path)
        stopped: Member | None = None
        try:
            for member in members:
                member.process.wait_ready(60)
            leader, election = wait_for_leader(probe, members, 20)
            created = httpx.post(
                leader.process.url + "/v1/schedules",
                json={
                    "name": "every second",
                    "interval_seconds": 1,
                    "webhook_url": receiver.prefix + "agent",
                    "catch_up": "all",
                    "catch_up_limit": 100,
                    "overlap": "allow",
                },
                timeout=10,
            ).json()
            schedule_id = created["id"]
            created_at = datetime.fromisoformat(created["created_at"])

            def fire_time(k: int) -> datetime:
                return created_at + timedelta(seconds=k)

            wait_until(lambda: receiver.count() >= 3, 20, "three fires delivered by the first leader")

            # SIGKILL: the lock's session dies with the process; another instance takes over.
            leader.signal(signal.SIGKILL)
            successor, second = wait_for_leader(probe, members, 15, above_epoch=election.epoch)
            delivered_before = receiver.count()
            wait_until(lambda: receiver.count() >= delivered_before + 3, 20, "fires from the second leader")

            # SIGSTOP: the frozen leader's lease runs out and the third instance takes over.
            successor.signal(signal.SIGSTOP)
            stopped = successor
            third, _ = wait_for_leader(probe, members, 5 * LEASE_S + 10, above_epoch=second.epoch)
            assert third is not successor and third is not leader
            frozen_for = time.monotonic()
            wait_until(lambda: time.monotonic() - frozen_for > 2, 5, "the third leader to deliver a while")
            successor.signal(signal.SIGCONT)  # it wakes up as a follower whose writes are fenced
            stopped = None

            window_end = datetime.now(UTC) + timedelta(seconds=3)
            last = int((window_end - created_at).total_seconds())
            expected = {idempotency_key(schedule_id, fire_time(k)) for k in range(1, last + 1)}

            def all_delivered() -> bool:
                return expected <= set(received_keys(receiver))

            wait_until(all_delivered, 30, "every fire time of the window to be delivered")
        finally:
            if stopped is not None:
                stopped.signal(signal.SIGCONT)
            for member in members:
                member.stop()

    keys = received_keys(receiver)
    missing = expected - set(keys)
    assert not missing, f"{len(missing)} fire times never delivered: {sorted(missing)[:5]}"
    runs = probe.rows(
        "SELECT fire_time, attempts, outcome, epoch, attempt_epoch FROM schedule_runs WHERE schedule_id = $1",
        schedule_id,
    )
    by_key = {idempotency_key(schedule_id, row["fire_time"]): row for row in runs}
    # A key seen twice belongs to a fire whose record shows it was attempted more than once.
    retried = {key for key, seen in keys.items() if seen > 1}
    for key in retried:
        assert by_key[key]["attempts"] > 1, (key, keys[key], dict(by_key[key]))
    # One record per fire time: no fire was claimed under two epochs.
    duplicates = probe.rows(
        "SELECT fire_time, count(*) AS n, count(DISTINCT epoch) AS epochs FROM schedule_runs "
        "WHERE schedule_id = $1 GROUP BY fire_time HAVING count(*) > 1",
        schedule_id,
    )
    assert duplicates == []
    epochs = {row["epoch"] for row in runs}
    assert len(epochs) >= 3, epochs  # each of the three leaders claimed fires
