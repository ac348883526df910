"""The official Anthropic SDK against the emulator: the Message Batches API end to end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import anthropic
import httpx
import pytest
from anthropic.types import Message

from backburner.emulator import EmulatorAdmin, EmulatorConfig
from backburner.emulator.testing import ManualClock, RunningEmulator, running_emulator
from tests.emulator_support import fixtures
from tests.emulator_support.sdk import anthropic_client, message_requests

admin = fixtures.admin
claude = fixtures.claude

HOUR_S = 3600.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[RunningEmulator]:
    config = EmulatorConfig(complete_after_s=HOUR_S, cancel_after_s=60)
    with running_emulator(config, clock=clock) as running:
        yield running


async def test_create_retrieve_end_and_stream_results(
    claude: anthropic.AsyncAnthropic, admin: EmulatorAdmin, emulator: RunningEmulator
) -> None:
    ids = ["ok-1", "ok-2", "item-error-1", "item-expire-1", "item-missing-1"]
    created = await claude.messages.batches.create(requests=message_requests(ids))

    assert created.id.startswith("msgbatch_")
    assert created.type == "message_batch"
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == len(ids)
    assert created.results_url is None and created.ended_at is None
    assert created.expires_at - created.created_at == timedelta(hours=24)
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        await claude.messages.batches.results(created.id)

    await admin.end_batch(created.id)
    ended = await claude.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at is not None
    assert ended.results_url == f"{emulator.base_url}/v1/messages/batches/{created.id}/results"
    counts = {"processing": 0, "succeeded": 3, "errored": 1, "expired": 1, "canceled": 0}
    assert ended.request_counts.model_dump() == counts

    lines = [line async for line in await claude.messages.batches.results(created.id)]
    outcomes = {line.custom_id: line.result.type for line in lines}
    # "missing" ids count as succeeded but their line is left out, like a lossy provider.
    assert outcomes == {
        "ok-1": "succeeded",
        "ok-2": "succeeded",
        "item-error-1": "errored",
        "item-expire-1": "expired",
    }
    for line in lines:
        if line.result.type == "succeeded":
            message = Message.model_validate(line.result.message.model_dump())
            assert message.model == "claude-test"
            assert message.role == "assistant"
            assert line.custom_id in message.content[0].text  # type: ignore[union-attr]
        elif line.result.type == "errored":
            assert line.result.error.error.type == "invalid_request_error"


async def test_batch_ends_on_the_emulator_clock(claude: anthropic.AsyncAnthropic, clock: ManualClock) -> None:
    created = await claude.messages.batches.create(requests=message_requests(["a", "b"]))

    clock.advance(HOUR_S - 1)
    assert (await claude.messages.batches.retrieve(created.id)).processing_status == "in_progress"
    clock.advance(1)
    ended = await claude.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 2


async def test_list_pages_newest_first_in_both_directions(claude: anthropic.AsyncAnthropic) -> None:
    created = [
        (await claude.messages.batches.create(requests=message_requests([f"r{i}"]))).id for i in range(5)
    ]
    newest_first = created[::-1]

    first = await claude.messages.batches.list(limit=2)
    assert [batch.id for batch in first.data] == newest_first[:2]
    assert first.has_more is True
    assert (first.first_id, first.last_id) == (newest_first[0], newest_first[1])

    assert [batch.id async for batch in claude.messages.batches.list(limit=2)] == newest_first

    # before_id walks towards newer batches, each page still newest first.
    newer = await claude.messages.batches.list(before_id=created[0], limit=2)
    assert [batch.id for batch in newer.data] == [created[2], created[1]]
    assert newer.has_more is True
    newest = await newer.get_next_page()
    assert [batch.id for batch in newest.data] == [created[4], created[3]]
    assert newest.has_more is False

    last = await claude.messages.batches.list(after_id=created[1], limit=20)
    assert [batch.id for batch in last.data] == [created[0]]
    assert last.has_more is False


async def test_cancel_is_canceling_until_it_ends_with_partial_results(
    claude: anthropic.AsyncAnthropic, clock: ManualClock
) -> None:
    ids = [f"req-{i}" for i in range(10)]
    created = await claude.messages.batches.create(requests=message_requests(ids))
    clock.advance(HOUR_S * 0.3)  # 30% of the way: three items are done when the cancel arrives

    canceling = await claude.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 10
    clock.advance(59)
    assert (await claude.messages.batches.retrieve(created.id)).processing_status == "canceling"

    clock.advance(1)  # cancel_after_s has passed
    ended = await claude.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (3, 7)
    lines = [line async for line in await claude.messages.batches.results(created.id)]
    assert [line.result.type for line in lines] == ["succeeded"] * 3 + ["canceled"] * 7

    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        await claude.messages.batches.cancel(created.id)


async def test_admin_end_finishes_a_canceling_batch_at_once(
    claude: anthropic.AsyncAnthropic, admin: EmulatorAdmin
) -> None:
    created = await claude.messages.batches.create(requests=message_requests(["x", "y"]))
    await claude.messages.batches.cancel(created.id)

    ended = await admin.end_batch(created.id)

    assert ended["processing_status"] == "ended"
    assert ended["request_counts"]["canceled"] == 2


async def test_delete_only_after_the_batch_ended(
    claude: anthropic.AsyncAnthropic, admin: EmulatorAdmin
) -> None:
    kept = await claude.messages.batches.create(requests=message_requests(["keep"]))
    doomed = await claude.messages.batches.create(requests=message_requests(["drop"]))
    with pytest.raises(anthropic.BadRequestError, match="still processing"):
        await claude.messages.batches.delete(doomed.id)

    await admin.end_batch(doomed.id)
    deleted = await claude.messages.batches.delete(doomed.id)

    assert (deleted.id, deleted.type) == (doomed.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError) as missing:
        await claude.messages.batches.retrieve(doomed.id)
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": f"No message batch with id {doomed.id!r}."},
        "request_id": missing.value.request_id,
    }
    assert [batch.id async for batch in claude.messages.batches.list()] == [kept.id]
    # A deleted batch still works as a cursor.
    assert [batch.id for batch in (await claude.messages.batches.list(after_id=doomed.id)).data] == [kept.id]


async def test_bearer_token_and_beta_paths_work(emulator: RunningEmulator, admin: EmulatorAdmin) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=emulator.base_url, auth_token="bearer-key", api_key=None, max_retries=0, timeout=15
    ) as client:
        created = await client.beta.messages.batches.create(requests=message_requests(["beta-1"]))
        assert (await client.beta.messages.batches.retrieve(created.id)).processing_status == "in_progress"
        assert [batch.id async for batch in client.beta.messages.batches.list()] == [created.id]
        await admin.end_batch(created.id)
        lines = [line async for line in await client.beta.messages.batches.results(created.id)]
    assert [line.custom_id for line in lines] == ["beta-1"]


async def test_missing_api_key_is_401_in_anthropic_shape(emulator: RunningEmulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=15) as http:
        response = await http.get("/v1/messages/batches", headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": "authentication_error", "message": "x-api-key header is required"}


async def test_bad_requests_are_refused_and_store_nothing(
    claude: anthropic.AsyncAnthropic, admin: EmulatorAdmin
) -> None:
    bad_batches = [
        (message_requests(["same", "same"]), "duplicate custom_id"),
        ([], "non-empty list"),
        (message_requests(["has space"]), "custom_id"),
        ([{"custom_id": "x", "params": "not an object"}], "params: must be an object"),
        ([{"custom_id": "x", "params": {"max_tokens": 1, "messages": []}}], "params.model"),
    ]
    for requests, problem in bad_batches:
        with pytest.raises(anthropic.BadRequestError, match=problem) as refused:
            await claude.messages.batches.create(requests=requests)
        assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        await claude.messages.batches.list(limit=0)

    assert (await admin.stats())["batches"]["anthropic"] == 0


async def test_request_limit_is_configurable() -> None:
    with running_emulator(EmulatorConfig(anthropic_max_requests=2)) as small:
        async with anthropic_client(small) as client:
            with pytest.raises(anthropic.BadRequestError, match="at most 2 requests"):
                await client.messages.batches.create(requests=message_requests(["a", "b", "c"]))
            created = await client.messages.batches.create(requests=message_requests(["a", "b"]))
    assert created.request_counts.processing == 2
