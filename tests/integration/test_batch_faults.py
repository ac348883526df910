"""The poller under provider faults, on SQLite and PostgreSQL, against the emulator.

The poller's clock is a `FakeClock` the test moves, so backoff and `retry-after` are checked
without waiting; the emulator keeps real time and ends batches when told to.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from backburner.batches.domain import BatchStatus
from backburner.leader.base import NotLeader
from backburner.leader.static import StaticLeadership
from tests.support import batch_env as _support
from tests.support import batch_handlers
from tests.support.batch_env import TEST_ELECTION, FakeClock, runtime_env

shared_emulator = _support.shared_emulator  # fixtures of the batch tests
emulator = _support.emulator

INTERVAL_S = 60  # the poll interval, hence the backoff base


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def env_for(make_settings, database_url, emulator, clock, **overrides):
    overrides.setdefault("poll_running_llm_batches_interval_seconds", INTERVAL_S)
    return runtime_env(make_settings, database_url, emulator, clock, **overrides)


async def test_retry_after_is_honoured(make_settings, database_url, emulator, clock):
    async with env_for(make_settings, database_url, emulator, clock, batch_poll_concurrency=1) as env:
        first = await env.submit("anthropic", ["a-1"])
        clock.advance(1)  # created later, so polled second
        second = await env.submit("anthropic", ["b-1"])
        await env.admin.add_fault(route="anthropic.batches.retrieve", kind="rate_limit", retry_after_s=120)
        before = await env.admin.request_count("anthropic.batches.retrieve")

        report = await env.poll()
        # One 429 and the provider is left alone for the rest of the cycle.
        assert report.errors == 1
        assert await env.admin.request_count("anthropic.batches.retrieve") == before + 1
        throttled = await env.batch(first["id"])
        assert throttled.consecutive_errors == 0  # throttling never fails a batch
        assert "429" in (throttled.last_error or "")
        assert throttled.next_poll_at == clock.now() + timedelta(seconds=120)

        clock.advance(60)  # the other batch is polled; the throttled one is not due yet
        await env.poll()
        assert (await env.batch(second["id"])).last_polled_at == clock.now()
        assert (await env.batch(first["id"])).last_polled_at != clock.now()

        clock.advance(61)  # past the retry-after
        await env.poll()
        polled = await env.batch(first["id"])
        assert polled.last_polled_at == clock.now() and polled.last_error is None


async def test_server_errors_back_off_then_fail_the_batch(make_settings, database_url, emulator, clock):
    async with env_for(
        make_settings, database_url, emulator, clock, batch_poll_max_consecutive_errors=4
    ) as env:
        created = await env.submit("openai", ["x-1", "x-2"])
        await env.admin.add_fault(route="openai.batches.retrieve", kind="server_error", count=None)
        retrieves = await env.admin.request_count("openai.batches.retrieve")
        expected_delays_s = [0, INTERVAL_S, 3 * INTERVAL_S]  # after errors 1, 2, 3
        for errors, delay_s in enumerate(expected_delays_s, start=1):
            await env.poll()
            retrieves += 1
            batch = await env.batch(created["id"])
            assert batch.consecutive_errors == errors
            assert (batch.next_poll_at - clock.now()).total_seconds() == delay_s
            if delay_s:
                clock.advance(delay_s - 1)  # not due yet: the provider is not asked
                await env.poll()
                assert await env.admin.request_count("openai.batches.retrieve") == retrieves
                clock.advance(1)
        await env.poll()  # the fourth consecutive error fails it, with the reason
        failed = await env.batch(created["id"])
        assert failed.status == BatchStatus.FAILED
        assert "4 times in a row" in (failed.failure_reason or "") and "500" in (failed.failure_reason or "")
        assert [c.status for c in batch_handlers.CALLS] == ["failed"]


async def test_errors_reset_after_a_good_poll(make_settings, database_url, emulator, clock):
    async with env_for(make_settings, database_url, emulator, clock) as env:
        created = await env.submit("anthropic", ["r-1"])
        await env.admin.add_fault(route="anthropic.batches.retrieve", kind="overloaded", count=2)
        await env.poll()
        await env.poll()
        assert (await env.batch(created["id"])).consecutive_errors == 2
        clock.advance(INTERVAL_S)
        await env.poll()
        recovered = await env.batch(created["id"])
        assert (recovered.consecutive_errors, recovered.last_error, recovered.status) == (0, None, "running")


@pytest.mark.parametrize(
    ("provider", "route"), [("anthropic", "anthropic.batches.results"), ("openai", "openai.files.content")]
)
async def test_cut_stream_resumes_without_loss_or_duplicates(
    make_settings,
    database_url,
    emulator,
    clock,
    provider,
    route,
):
    custom_ids = [f"c-{i:03d}" for i in range(100)]
    async with env_for(make_settings, database_url, emulator, clock, batch_results_chunk_size=10) as env:
        created = await env.submit(provider, custom_ids)
        await env.admin.end_batch(created["provider_batch_id"])
        await env.admin.add_fault(route=route, kind="cut_stream", after_lines=35)

        report = await env.poll()
        assert report.errors == 1 and report.completed == 0
        cut = await env.batch(created["id"])
        assert cut.status == BatchStatus.INGESTING  # not terminal: items are still missing
        stored = Counter(status for _, status in await env.item_rows(created["id"]))
        assert stored["succeeded"] == 30 and stored["pending"] == 70  # three whole chunks written
        assert batch_handlers.CALLS == []

        report = await env.poll()
        assert report.completed == 1
        rows = await env.item_rows(created["id"])
        assert sorted(cid for cid, _ in rows) == custom_ids  # each exactly once
        assert {status for _, status in rows} == {"succeeded"}
        done = await env.batch(created["id"])
        assert (done.status, done.succeeded_count, done.consecutive_errors) == ("completed", 100, 0)
        assert len(batch_handlers.CALLS) == 1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_expired_batch_keeps_partial_results(make_settings, database_url, emulator, clock, provider):
    custom_ids = [f"e-{i}" for i in range(10)]
    async with env_for(make_settings, database_url, emulator, clock) as env:
        await env.admin.set_scenario(expire_after_items=4)
        created = await env.submit(provider, custom_ids)
        await env.admin.end_batch(created["provider_batch_id"])
        await env.poll()
        batch = await env.batch(created["id"])
        assert batch.status == BatchStatus.EXPIRED
        assert (batch.succeeded_count, batch.expired_count, batch.missing_count) == (4, 6, 0)
        results = {line["custom_id"]: line for line in await env.results(created["id"])}
        assert results["e-0"]["status"] == "succeeded" and results["e-0"]["result"]
        assert results["e-9"]["status"] == "expired"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_missing_custom_ids_are_flagged(make_settings, database_url, emulator, clock, provider):
    custom_ids = ["m-1", "m-2", "m-3", "m-4"]
    async with env_for(make_settings, database_url, emulator, clock) as env:
        await env.admin.set_scenario(missing_custom_ids=["m-2", "m-4"])
        created = await env.submit(provider, custom_ids)
        await env.admin.end_batch(created["provider_batch_id"])
        await env.poll()
        batch = await env.batch(created["id"])
        assert (batch.status, batch.succeeded_count, batch.missing_count) == ("completed", 2, 2)
        assert dict(await env.item_rows(created["id"])) == {
            "m-1": "succeeded",
            "m-2": "missing",
            "m-3": "succeeded",
            "m-4": "missing",
        }
        assert batch_handlers.CALLS[0].counts["missing"] == 2


async def test_openai_completed_without_output_file_waits_for_it(
    make_settings, database_url, emulator, clock
):
    async with env_for(make_settings, database_url, emulator, clock, batch_missing_output_max_polls=5) as env:
        await env.admin.set_scenario(output_file_delay_polls=2)
        created = await env.submit("openai", ["o-1", "o-2"])
        await env.admin.end_batch(created["provider_batch_id"])
        for polls in (1, 2):
            await env.poll()
            waiting = await env.batch(created["id"])
            assert (waiting.status, waiting.provider_status, waiting.missing_output_polls) == (
                "running",
                "completed",
                polls,
            )
        await env.poll()
        done = await env.batch(created["id"])
        assert (done.status, done.succeeded_count) == ("completed", 2)


async def test_openai_completed_without_output_file_fails_after_the_limit(
    make_settings,
    database_url,
    emulator,
    clock,
):
    async with env_for(make_settings, database_url, emulator, clock, batch_missing_output_max_polls=3) as env:
        await env.admin.set_scenario(output_file_delay_polls=50)
        created = await env.submit("openai", ["o-1"])
        await env.admin.end_batch(created["provider_batch_id"])
        for _ in range(3):
            await env.poll()
        failed = await env.batch(created["id"])
        assert failed.status == BatchStatus.FAILED
        assert "no results file in 3 polls" in (failed.failure_reason or "")


async def test_anthropic_canceling_is_still_running_then_cancelled_with_partial_results(
    make_settings,
    database_url,
    emulator,
    clock,
):
    async with env_for(make_settings, database_url, emulator, clock) as env:
        created = await env.submit("anthropic", [f"k-{i}" for i in range(6)])
        cancelled = await env.component.service.cancel("org-default", created["id"])
        assert cancelled.provider_status == "canceling" and cancelled.cancel_requested_at is not None
        await env.poll()
        still = await env.batch(created["id"])
        assert (still.status, still.provider_status) == ("running", "canceling")
        await env.admin.end_batch(created["provider_batch_id"])
        await env.poll()
        done = await env.batch(created["id"])
        assert done.status == BatchStatus.CANCELLED
        assert done.canceled_count + done.succeeded_count == 6 and done.missing_count == 0


async def test_raising_handler_is_retried_until_delivered(make_settings, database_url, emulator, clock):
    batch_handlers.reset(failures=2)
    async with env_for(make_settings, database_url, emulator, clock) as env:
        created = await env.submit("anthropic", ["h-1"])
        await env.admin.end_batch(created["provider_batch_id"])
        await env.poll()  # ends the batch; the first delivery attempt raises
        [delivery] = await env.component.store.deliveries(created["id"])
        assert (delivery.status, delivery.attempts) == ("pending", 1)
        assert "failing on purpose" in (delivery.last_error or "")

        assert await env.component.handoff.deliver_due(env.leadership) == 0  # not due before its backoff
        clock.advance(5)
        assert await env.component.handoff.deliver_due(env.leadership) == 0  # raises again
        clock.advance(10)
        assert await env.component.handoff.deliver_due(env.leadership) == 1
        [delivery] = await env.component.store.deliveries(created["id"])
        assert (delivery.status, delivery.attempts) == ("delivered", 3)
        assert [c.batch_id for c in batch_handlers.CALLS] == [created["id"]]


async def test_abandoned_submissions_are_reconciled(make_settings, database_url, emulator, clock):
    from backburner.batches.domain import BatchRequest
    from backburner.batches.encoding import encode_requests
    from backburner.batches.store import claim_unit
    from tests.support.batch_records import create_record

    async with env_for(make_settings, database_url, emulator, clock) as env:
        store = env.component.store
        requests = [
            BatchRequest(f"s-{n}", {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            for n in range(3)
        ]

        async def left_submitting(batch_id: str, provider: str) -> None:
            batch = await create_record(
                store, batch_id=batch_id, provider=provider, requests=requests, now=clock.now()
            )
            assert batch is not None
            async with store.engine.begin() as conn:
                assert await claim_unit(conn, batch, clock.now(), token_limit=None)

        async def created_at_provider(batch_id: str, provider: str) -> str:
            adapter = env.component.providers.get(provider)
            body, _ = encode_requests(adapter.kind, "m", requests)
            return (await adapter.create(batch_id=batch_id, body=body)).provider_batch_id

        # Crashes after the provider created the batch: found (OpenAI by our id in its metadata,
        # Anthropic by a recent batch with as many requests) and adopted.
        await left_submitting("batch-openai-created", "openai")
        openai_id = await created_at_provider("batch-openai-created", "openai")
        await left_submitting("batch-anthropic-created", "anthropic")
        anthropic_id = await created_at_provider("batch-anthropic-created", "anthropic")
        await env.poll()  # within the grace period: nothing is decided
        assert (await env.batch("batch-openai-created")).status == "submitting"

        clock.advance(env.component.policy.submit_grace_s + 1)
        await env.poll()
        for batch_id, provider_batch_id in (
            ("batch-openai-created", openai_id),
            ("batch-anthropic-created", anthropic_id),
        ):
            adopted = await env.batch(batch_id)
            assert (adopted.status, adopted.provider_batch_id) == ("running", provider_batch_id)

        # Crashes before the provider was called: nothing found, so each is sent again.
        await left_submitting("batch-openai-lost", "openai")
        await left_submitting("batch-anthropic-lost", "anthropic")
        before = await env.provider_requests()
        clock.advance(env.component.policy.submit_grace_s + 1)
        await env.poll()
        for batch_id in ("batch-openai-lost", "batch-anthropic-lost"):
            resent = await env.batch(batch_id)
            assert resent.status == "running" and resent.provider_batch_id not in (
                None,
                openai_id,
                anthropic_id,
            )
        assert await env.provider_requests() > before


async def test_a_new_submission_is_left_to_its_sender_and_sent_by_the_leader_if_the_sender_dies(
    make_settings, database_url, emulator, clock
):
    """A submission is written held for the process that sends it; should that process die, the
    leader sends the first part once its short hold is over, and the other parts only once an
    unconfirmed send of the first could have ended."""
    from backburner.batches.domain import BatchRequest
    from backburner.batches.service import SENDER_CLAIM
    from backburner.batches.store.submission import SenderHold
    from backburner.batches.validation import Target
    from tests.support.batch_records import create_record

    async with env_for(make_settings, database_url, emulator, clock) as env:
        claim_s, grace_s = SENDER_CLAIM.total_seconds(), env.component.policy.submit_grace_s
        hold = SenderHold(clock.now() + SENDER_CLAIM, clock.now() + timedelta(seconds=grace_s))
        params = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        # Written as the API writes a submission, before it sends the submission itself.
        await create_record(
            env.component.store,
            batch_id="batch-held",
            requests=[BatchRequest("h-1", params)],
            now=clock.now(),
            hold=hold,
        )
        split = Target("anthropic", "anthropic", max_requests=1, max_bytes=10**9)
        await create_record(
            env.component.store,
            batch_id="batch-held-parts",
            requests=[BatchRequest("p-1", params), BatchRequest("p-2", params)],
            now=clock.now(),
            target=split,
            hold=hold,
        )
        before = await env.provider_requests()
        await env.poll()  # the leader's cycle runs between the write and the send
        assert (await env.batch("batch-held")).status == "queued"
        assert await env.provider_requests() == before

        clock.advance(claim_s + 1)  # the sender died: the first parts are sent
        await env.poll()
        sent = await env.batch("batch-held")
        assert sent.status == "running" and sent.provider_batch_id is not None
        parts = {part.part_index: part.status for part in await env.component.store.parts("batch-held-parts")}
        assert parts == {0: "running", 1: "queued"}

        clock.advance(grace_s)  # and the rest once the first could have had its answer
        await env.poll()
        parts = {part.part_index: part.status for part in await env.component.store.parts("batch-held-parts")}
        assert parts == {0: "running", 1: "running"}


async def test_a_stale_leader_cannot_write(make_settings, database_url, emulator, clock):
    async with env_for(make_settings, database_url, emulator, clock) as env:
        created = await env.submit("anthropic", ["f-1"])
        await env.admin.end_batch(created["provider_batch_id"])
        # Another instance takes over: the old term's epoch is no longer current.
        await StaticLeadership.claim(env.runtime.engine, TEST_ELECTION, "another-instance")
        with pytest.raises(NotLeader):
            await env.poll()
        untouched = await env.batch(created["id"])
        assert (untouched.status, untouched.last_polled_at) == ("running", None)
        assert {status for _, status in await env.item_rows(created["id"])} == {"pending"}


async def test_many_due_batches_are_learned_from_one_listing(make_settings, database_url, emulator, clock):
    async with env_for(make_settings, database_url, emulator, clock) as env:
        env.component.poller.list_min_batches = 3
        anthropic = [await env.submit("anthropic", [f"a{i}-1", f"a{i}-2"]) for i in range(3)]
        openai = [await env.submit("openai", [f"o{i}-1"]) for i in range(3)]
        await env.admin.end_batch(anthropic[0]["provider_batch_id"])
        await env.admin.end_batch(openai[0]["provider_batch_id"])
        before = (await env.admin.stats())["requests"]

        report = await env.poll()
        after = (await env.admin.stats())["requests"]
        assert (report.polled, report.listed, report.completed, report.errors) == (6, 6, 2, 0)
        assert after.get("anthropic.batches.list", 0) - before.get("anthropic.batches.list", 0) == 1
        assert after.get("openai.batches.list", 0) - before.get("openai.batches.list", 0) == 1
        # No status was retrieved one by one (Anthropic's results call retrieves once itself).
        assert after.get("openai.batches.retrieve", 0) == before.get("openai.batches.retrieve", 0)
        assert after.get("anthropic.batches.retrieve", 0) - before.get("anthropic.batches.retrieve", 0) == 1
        assert (await env.batch(anthropic[0]["id"])).status == "completed"
        assert (await env.batch(openai[0]["id"])).status == "completed"
        running = {(await env.batch(b["id"])).provider_status for b in openai[1:]}
        assert running <= {"in_progress", "validating"}


async def test_a_failed_listing_falls_back_to_retrieves(make_settings, database_url, emulator, clock):
    async with env_for(make_settings, database_url, emulator, clock) as env:
        env.component.poller.list_min_batches = 2
        created = [await env.submit("openai", [f"l{i}"]) for i in range(2)]
        await env.admin.add_fault(route="openai.batches.list", kind="server_error")
        report = await env.poll()
        assert (report.polled, report.listed, report.errors) == (2, 0, 1)
        assert [(await env.batch(b["id"])).last_polled_at for b in created] == [clock.now()] * 2

        await env.admin.add_fault(route="openai.batches.list", kind="rate_limit", retry_after_s=30)
        clock.advance(INTERVAL_S)
        report = await env.poll()  # throttled: nothing more is asked of OpenAI this cycle
        assert (report.polled, report.errors) == (0, 1)
        assert report.throttled["openai"] > 0
