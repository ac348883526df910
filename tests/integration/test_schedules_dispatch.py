"""The leader's dispatcher on both databases: fire times of each spec kind for a year, catch-up
after an outage, overlap against a slow receiver, retries with backoff, signatures and the
allow-list, pause, resume and trigger, and a new term taking over from a fenced old one.

Each test holds its own terms of leadership (see `tests/support/schedules.py`) and moves a fake
clock; deliveries are real HTTP requests to a receiver on 127.0.0.1, or real handler calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from backburner.db.tables import organizations
from backburner.leader.base import NotLeader
from backburner.schedules.delivery import fire_time_text, idempotency_key
from backburner.schedules.models import ScheduleCreate
from backburner.schedules.specs import compile_cron, next_fire_times
from backburner.settings import Settings
from tests.conftest import MakeSettings
from tests.support import schedules as support
from tests.support.batch_env import FakeClock
from tests.support.receiver import Gate, Received, Receiver, running_receiver, signature_valid, statuses
from tests.support.schedules import Harness, dispatch_harness, finished

T0 = datetime(2025, 6, 2, 12, tzinfo=UTC)
HANDLERS = {"record": "tests.support.schedules:record_fire"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


def dispatch_settings(make_settings: MakeSettings, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "schedule_handlers": HANDLERS,
        "schedule_poll_interval_seconds": 0.2,
        "schedule_run_retention_days": 10_000,
        **overrides,
    }
    return make_settings(**values).settings


@pytest.fixture
async def harness(
    make_settings: MakeSettings, database_url: str, receiver: Receiver
) -> AsyncIterator[Harness]:
    support.HANDLED.clear()
    settings = dispatch_settings(make_settings, database_url, schedule_webhook_allowed_urls=[receiver.prefix])
    async with dispatch_harness(settings, FakeClock(T0)) as harness:
        yield harness


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


async def advance_to(harness: Harness, moment: datetime) -> None:
    harness.clock.current = moment
    harness.component.dispatcher.wake()


def fire_times(runs: list[Any]) -> list[datetime]:
    return [run.fire_time for run in runs]


# --- spec kinds ---------------------------------------------------------------------------------


async def test_each_spec_kind_fires_at_the_library_times_for_a_year(harness: Harness) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    year_later = datetime(2026, 1, 1, tzinfo=UTC)
    harness.clock.current = start
    common: dict[str, Any] = {
        "handler": "record",
        "catch_up": "all",
        "catch_up_limit": 1000,
        "misfire_grace_seconds": 0,
        "overlap": "allow",
    }
    berlin = await harness.create(name="berlin", cron="30 2 * * *", timezone="Europe/Berlin", **common)
    new_york = await harness.create(
        name="new-york", cron="0 9 * * 1-5", timezone="America/New_York", **common
    )
    interval = await harness.create(
        name="interval", interval_seconds=9 * 3600, start_at="2025-01-01T00:00:00Z", **common
    )
    once = await harness.create(name="once", at="2025-12-08T09:00", timezone="Europe/Berlin", **common)

    # The leader was away all year: one pass catches up every fire time (`all`, limit 1000).
    harness.clock.current = year_later
    await harness.start_term()
    expected = {
        berlin.id: next_fire_times(compile_cron("30 2 * * *", "Europe/Berlin"), start, 365),
        new_york.id: next_fire_times(compile_cron("0 9 * * 1-5", "America/New_York"), start, 261),
        interval.id: [start + timedelta(hours=9 * k) for k in range(1, 974)],  # after its creation
        once.id: [datetime(2025, 12, 8, 8, tzinfo=UTC)],
    }
    for schedule_id, moments in expected.items():
        runs = await harness.wait_runs(schedule_id, finished(len(moments)), f"{len(moments)} runs", 60)
        assert fire_times(runs) == moments
        assert {run.outcome for run in runs} == {"succeeded"}

    # The library agrees on every ordinary day; on the two days the clocks change, 02:30 fires
    # once: at 03:00 CEST when it does not exist, at its first occurrence when it happens twice.
    berlin_zone = ZoneInfo("Europe/Berlin")
    library = CronTrigger(minute="30", hour="2", timezone="Europe/Berlin")
    runs = await harness.runs(berlin.id)
    clock_changes = {datetime(2025, 3, 30).date(), datetime(2025, 10, 26).date()}
    for run in runs:
        local = run.fire_time.astimezone(berlin_zone)
        if local.date() not in clock_changes:
            asked = library.get_next_fire_time(None, run.fire_time - timedelta(microseconds=1))
            assert asked == run.fire_time
    by_day = {run.fire_time.astimezone(berlin_zone).date(): run.fire_time for run in runs}
    assert by_day[datetime(2025, 3, 30).date()] == datetime(2025, 3, 30, 1, 0, tzinfo=UTC)
    assert by_day[datetime(2025, 10, 26).date()] == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)
    every_nine_hours = IntervalTrigger(hours=9, start_date=start, timezone=UTC)
    previous = start  # the creation: fires come after it
    for run in await harness.runs(interval.id):
        assert every_nine_hours.get_next_fire_time(previous, previous) == run.fire_time
        previous = run.fire_time
    assert (await harness.schedule(once.id)).next_fire_at is None  # fired once, done
    assert len(support.HANDLED) == sum(len(m) for m in expected.values())


# --- catch-up -----------------------------------------------------------------------------------


async def test_catch_up_policies_after_the_leader_was_down_for_five_fire_times(
    harness: Harness, receiver: Receiver
) -> None:
    made = {
        policy: await harness.create(
            name=policy,
            interval_seconds=10,
            start_at=seconds(10).isoformat(),
            webhook_url=receiver.prefix + policy,
            catch_up=policy,
            misfire_grace_seconds=5,
            overlap="allow",
        )
        for policy in ("skip", "latest", "all")
    }
    first = await harness.start_term()
    await advance_to(harness, seconds(10))
    for schedule in made.values():
        await harness.wait_runs(schedule.id, finished(1), "the first fire")
    await first.end()  # the leader goes away for five fire times (20 .. 60 s)

    harness.clock.current = seconds(66)
    await harness.start_term()
    expected = {
        "skip": [seconds(10)],
        "latest": [seconds(10), seconds(60)],
        "all": [seconds(s) for s in (10, 20, 30, 40, 50, 60)],
    }
    missed = {"skip": 5, "latest": 4, "all": 0}
    for policy, moments in expected.items():
        schedule = made[policy]
        runs = await harness.wait_runs(schedule.id, finished(len(moments)), f"{policy} catch-up")
        await asyncio.sleep(0.3)  # a wrong extra run would have appeared by now
        runs = await harness.runs(schedule.id)
        assert fire_times(runs) == moments, policy
        record = await harness.schedule(schedule.id)
        assert record.missed_fires == missed[policy] and record.next_fire_at == seconds(70)
        keys = [k for k in receiver.idempotency_keys() if k.startswith(schedule.id)]
        assert sorted(keys) == sorted(idempotency_key(schedule.id, m) for m in moments)


# --- overlap ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overlap", "delivered_while_slow", "outcomes"),
    [
        ("skip", 1, ["succeeded", "skipped", "skipped"]),
        ("buffer_one", 1, ["succeeded", "succeeded", "skipped"]),
        ("allow", 3, ["succeeded", "succeeded", "succeeded"]),
    ],
)
async def test_overlap_policies_against_a_slow_receiver(
    harness: Harness, receiver: Receiver, overlap: str, delivered_while_slow: int, outcomes: list[str]
) -> None:
    gate = Gate()
    receiver.answer = gate
    schedule = await harness.create(
        name="slow",
        interval_seconds=1,
        start_at=seconds(1).isoformat(),
        webhook_url=receiver.prefix,
        overlap=overlap,
    )
    await harness.start_term()
    for n in (1, 2, 3):
        await advance_to(harness, seconds(n))
        await harness.wait_runs(schedule.id, lambda runs, n=n: len(runs) == n, f"fire {n} to be claimed")
    await asyncio.sleep(0.3)
    assert receiver.count() == delivered_while_slow  # the slow receiver holds them all
    gate.opened.set()
    runs = await harness.wait_runs(schedule.id, finished(3), "every run to end")
    assert [run.outcome for run in runs] == outcomes
    received = sorted(datetime.fromisoformat(r.headers["backburner-fire-time"]) for r in receiver.received)
    assert received == [
        seconds(n) for n, outcome in zip((1, 2, 3), outcomes, strict=True) if outcome == "succeeded"
    ]
    if overlap == "buffer_one":  # the buffered fire went out only after the first one ended
        assert runs[1].started_at is not None and runs[0].finished_at is not None
        assert receiver.received[1].at >= receiver.received[0].at
        assert runs[2].error == "an earlier run was still delivering"


# --- retries ------------------------------------------------------------------------------------


async def test_retries_with_backoff_against_a_receiver_that_fails_twice(
    harness: Harness, receiver: Receiver
) -> None:
    receiver.answer = statuses(500, 503)
    schedule = await harness.create(
        name="flaky", at=seconds(1).isoformat(), webhook_url=receiver.prefix, payload={"n": 1}
    )
    await harness.start_term()
    await advance_to(harness, seconds(1))
    [run] = await harness.wait_runs(
        schedule.id, lambda r: bool(r) and r[0].outcome == "queued", "a retry queued"
    )
    assert run.attempts == 1 and run.http_status == 500
    assert run.next_attempt_at is not None and run.next_attempt_at >= seconds(1 + 1)

    await advance_to(harness, run.next_attempt_at)  # backoff 1 s
    [run] = await harness.wait_runs(
        schedule.id, lambda r: r[0].attempts == 2 and r[0].outcome == "queued", "try 2"
    )
    assert run.http_status == 503 and run.next_attempt_at is not None
    second_failed_at = harness.clock.current
    assert run.next_attempt_at - second_failed_at == timedelta(seconds=2)  # doubled

    await advance_to(harness, seconds(0.5) + timedelta(seconds=3))  # not yet due
    await asyncio.sleep(0.4)
    assert receiver.count() == 2
    await advance_to(harness, run.next_attempt_at)
    [run] = await harness.wait_runs(schedule.id, finished(1), "the third attempt")
    assert (run.outcome, run.attempts, run.http_status, run.error) == ("succeeded", 3, 200, None)
    history = [json.loads(line) for line in (run.attempt_log or "").splitlines()]
    assert [h["http_status"] for h in history] == [500, 503, 200]
    assert [h["attempt"] for h in history] == [1, 2, 3]
    assert receiver.idempotency_keys() == [idempotency_key(schedule.id, seconds(1))] * 3


async def test_a_run_fails_after_its_last_attempt(
    make_settings: MakeSettings, database_url: str, receiver: Receiver
) -> None:
    receiver.answer = statuses(500, 500, 500)
    settings = dispatch_settings(
        make_settings,
        database_url,
        schedule_webhook_allowed_urls=[receiver.prefix],
        schedule_max_attempts=2,
        schedule_retry_backoff_seconds=0.5,
    )
    async with dispatch_harness(settings, FakeClock(T0)) as harness:
        schedule = await harness.create(name="doomed", at=seconds(1).isoformat(), webhook_url=receiver.prefix)
        await harness.start_term()
        await advance_to(harness, seconds(1))
        await harness.wait_runs(schedule.id, lambda r: bool(r) and r[0].outcome == "queued", "a retry")
        await advance_to(harness, seconds(2))
        [run] = await harness.wait_runs(schedule.id, finished(1), "the run to fail")
        assert (run.outcome, run.attempts, run.http_status) == ("failed", 2, 500)
        assert "HTTP 500" in (run.error or "")
        assert receiver.count() == 2


# --- signatures, the allow-list and handlers --------------------------------------------------------


async def test_webhooks_are_signed_with_the_schedule_secret(harness: Harness, receiver: Receiver) -> None:
    payload = {"messages": [{"role": "user", "content": "Good morning"}]}
    schedule = await harness.create(
        name="signed", at=seconds(1).isoformat(), webhook_url=receiver.prefix + "agent", payload=payload
    )
    await harness.start_term()
    await advance_to(harness, seconds(1))
    await harness.wait_runs(schedule.id, finished(1), "the delivery")
    [request] = receiver.received
    assert request.path == "/hooks/agent"
    assert json.loads(request.body) == payload
    assert request.headers["idempotency-key"] == f"{schedule.id}:2025-06-02T12:00:01Z"
    assert request.headers["backburner-schedule-id"] == schedule.id
    assert request.headers["backburner-fire-time"] == "2025-06-02T12:00:01Z"
    assert request.headers["backburner-attempt"] == "1"
    assert request.headers["content-type"] == "application/json"
    assert signature_valid(schedule.signing_secret, request)
    tampered = Received(request.at, request.path, request.headers, request.body + b" ")
    assert not signature_valid(schedule.signing_secret, tampered)
    assert not signature_valid("bbs_another-schedules-secret", request)


async def test_the_allow_list_is_checked_again_at_delivery(
    make_settings: MakeSettings, database_url: str, receiver: Receiver, harness: Harness
) -> None:
    schedule = await harness.create(
        name="later-refused", at=seconds(1).isoformat(), webhook_url=receiver.prefix
    )
    # The operator narrows the allow-list; the leader's next start delivers nothing there.
    narrowed = dispatch_settings(
        make_settings, database_url, schedule_webhook_allowed_urls=["https://hooks.example.com/"]
    )
    async with dispatch_harness(narrowed, FakeClock(seconds(1))) as other:
        await other.start_term()
        [run] = await other.wait_runs(schedule.id, finished(1), "the refused delivery")
    assert (run.outcome, run.attempts) == ("failed", 1)  # not retried: it cannot succeed
    assert "schedule_webhook_allowed_urls" in (run.error or "")
    assert receiver.count() == 0


async def test_handlers_receive_the_fire(harness: Harness) -> None:
    schedule = await harness.create(
        name="embedded", at=seconds(1).isoformat(), handler="record", payload={"x": 1}
    )
    await harness.start_term()
    await advance_to(harness, seconds(1))
    [run] = await harness.wait_runs(schedule.id, finished(1), "the handler call")
    assert run.outcome == "succeeded"
    [fire] = support.HANDLED
    assert (fire.schedule_id, fire.payload, fire.attempt, fire.trigger) == (
        schedule.id,
        {"x": 1},
        1,
        "scheduled",
    )
    assert fire.idempotency_key == idempotency_key(schedule.id, seconds(1))


# --- pause, resume, trigger ---------------------------------------------------------------------


async def test_pause_resume_and_trigger(harness: Harness, receiver: Receiver) -> None:
    schedule = await harness.create(
        name="minutely", interval_seconds=60, start_at=seconds(60).isoformat(), webhook_url=receiver.prefix
    )
    service = harness.component.service
    await harness.start_term()
    await advance_to(harness, seconds(60))
    await harness.wait_runs(schedule.id, finished(1), "the first fire")

    paused = await service.pause(support.ORG, schedule.id, "maintenance")
    assert paused.paused and paused.note == "maintenance" and paused.next_fire_at is None
    await advance_to(harness, seconds(250))
    await asyncio.sleep(0.4)
    assert len(await harness.runs(schedule.id)) == 1  # nothing fires while paused

    triggered = await service.trigger(support.ORG, schedule.id)  # even while paused
    assert triggered.trigger_at == seconds(250)
    runs = await harness.wait_runs(schedule.id, finished(2), "the manual fire")
    assert (runs[1].fire_time, runs[1].trigger) == (seconds(250), "manual")
    assert (await harness.schedule(schedule.id)).trigger_at is None

    resumed = await service.resume(support.ORG, schedule.id)
    assert not resumed.paused and resumed.next_fire_at == seconds(300)  # no catch-up of the pause
    await advance_to(harness, seconds(300))
    runs = await harness.wait_runs(schedule.id, finished(3), "the fire after resuming")
    assert [(r.fire_time, r.trigger) for r in runs] == [
        (seconds(60), "scheduled"),
        (seconds(250), "manual"),
        (seconds(300), "scheduled"),
    ]
    assert (await harness.schedule(schedule.id)).missed_fires == 0


# --- a new term -----------------------------------------------------------------------------------


async def test_a_new_term_takes_over_what_the_fenced_one_left_delivering(
    harness: Harness, receiver: Receiver
) -> None:
    first_request = Gate()
    calls = 0

    def answer(request: Received) -> tuple[int, float]:
        nonlocal calls
        calls += 1
        return first_request(request) if calls == 1 else (200, 0.0)

    receiver.answer = answer
    schedule = await harness.create(
        name="handover", interval_seconds=10, start_at=seconds(10).isoformat(), webhook_url=receiver.prefix
    )
    old = await harness.start_term("old-leader")
    await advance_to(harness, seconds(10))
    await harness.wait_runs(schedule.id, lambda r: bool(r) and r[0].outcome == "delivering", "the claim")
    await asyncio.sleep(0.2)
    assert receiver.count() == 1  # the old leader's attempt hangs at the receiver

    new = await harness.start_term("new-leader")  # a new epoch: the old term is fenced out
    [run] = await harness.wait_runs(schedule.id, finished(1), "the take-over")
    assert (run.outcome, run.attempts, run.epoch, run.attempt_epoch) == (
        "succeeded",
        2,
        old.leadership.term.epoch,
        new.leadership.term.epoch,
    )
    first_request.opened.set()  # the old attempt ends; its term can no longer record it
    await asyncio.wait_for(old.task, 10)
    with pytest.raises(NotLeader):
        async with old.leadership.fenced():
            pass
    [run] = await harness.runs(schedule.id)
    assert run.attempts == 2 and run.outcome == "succeeded"
    # The receiver saw the key twice, and the record shows the fire was attempted twice.
    assert receiver.idempotency_keys() == [idempotency_key(schedule.id, seconds(10))] * 2

    # Later fires belong to the new term alone.
    await advance_to(harness, seconds(20))
    runs = await harness.wait_runs(schedule.id, finished(2), "the next fire")
    assert runs[1].epoch == new.leadership.term.epoch and runs[1].instance_id == "new-leader"


async def test_a_graceful_step_down_records_what_is_in_flight_so_nothing_is_repeated(
    harness: Harness, receiver: Receiver
) -> None:
    receiver.answer = lambda request: (200, 0.5)  # a receiver that takes half a second
    schedule = await harness.create(
        name="drained", interval_seconds=10, start_at=seconds(10).isoformat(), webhook_url=receiver.prefix
    )
    old = await harness.start_term("old-leader")
    await advance_to(harness, seconds(10))
    await harness.wait_runs(schedule.id, lambda r: bool(r) and r[0].outcome == "delivering", "the claim")

    assert await harness.component.dispatcher.drain(10) is True  # the delivery ended and was recorded
    [run] = await harness.runs(schedule.id)
    assert (run.outcome, run.attempts) == ("succeeded", 1)
    await advance_to(harness, seconds(20))  # a draining dispatcher claims nothing more
    await asyncio.sleep(0.4)
    assert len(await harness.runs(schedule.id)) == 1
    await old.end()

    harness.component.dispatcher.draining.clear()
    await harness.start_term("new-leader")  # nothing is left to take over
    runs = await harness.wait_runs(schedule.id, finished(2), "the next fire under the new term")
    assert [r.attempts for r in runs] == [1, 1]
    assert receiver.idempotency_keys() == [idempotency_key(schedule.id, seconds(s)) for s in (10, 20)]


async def test_deliveries_in_flight_are_bounded_by_the_concurrency(
    make_settings: MakeSettings, database_url: str, receiver: Receiver
) -> None:
    gate = Gate()
    receiver.answer = gate
    settings = dispatch_settings(
        make_settings,
        database_url,
        schedule_webhook_allowed_urls=[receiver.prefix],
        schedule_delivery_concurrency=3,
    )
    async with dispatch_harness(settings, FakeClock(T0)) as harness:
        made = [
            await harness.create(name=f"s{n}", at=seconds(1).isoformat(), webhook_url=receiver.prefix)
            for n in range(5)
        ]
        await harness.start_term()
        await advance_to(harness, seconds(1))
        for schedule in made:
            await harness.wait_runs(schedule.id, lambda r: bool(r), "the claim")
        await asyncio.sleep(0.5)
        # Five claimed, two at the receiver (one organization holds all but one of the three
        # slots), three waiting their turn.
        assert receiver.count() == 2
        gate.opened.set()
        for schedule in made:
            await harness.wait_runs(schedule.id, finished(1), "every delivery")
        assert receiver.count() == 5


async def test_a_tenant_whose_webhook_hangs_delays_only_its_own_fires(
    make_settings: MakeSettings, database_url: str, receiver: Receiver
) -> None:
    """Another organization's twelve schedules hang at their webhook, more than the leader holds
    in flight (8, with 2 slots): this organization's schedule is still claimed and delivered at
    each fire, and the hanging ones never take the last slot."""
    support.HANDLED.clear()
    gate = Gate()
    receiver.answer = lambda request: gate(request) if request.path.endswith("/hang") else (200, 0.0)
    settings = dispatch_settings(
        make_settings,
        database_url,
        schedule_webhook_allowed_urls=[receiver.prefix],
        schedule_delivery_concurrency=2,
        schedule_delivery_timeout_seconds=60,
    )
    async with dispatch_harness(settings, FakeClock(T0)) as harness:
        async with harness.engine.begin() as conn:
            await conn.execute(organizations.insert().values(id="org-hostile", name="hostile", created_at=T0))
        for n in range(12):
            spec = ScheduleCreate(
                name=f"hang-{n}",
                interval_seconds=1,
                start_at=seconds(1).isoformat(),
                webhook_url=receiver.prefix + "hang",
                overlap="allow",
            )
            await harness.component.service.create("org-hostile", spec)
        ours = await harness.create(
            name="ours", interval_seconds=1, start_at=seconds(1).isoformat(), handler="record"
        )
        await harness.start_term()
        for n in (1, 2, 3):
            await advance_to(harness, seconds(n))
            await harness.wait_runs(ours.id, finished(n), f"our fire {n} to be delivered")
        assert [fire.fire_time for fire in support.HANDLED] == [fire_time_text(seconds(n)) for n in (1, 2, 3)]
        assert receiver.count() == 1  # the hanging organization holds one of the two slots
        gate.opened.set()
