"""Every injectable fault, observed through the official SDKs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import httpx
import httpx2
import openai
import pytest

from backburner.emulator import EmulatorAdmin, EmulatorConfig, FaultRule, Scenario
from backburner.emulator.testing import RunningEmulator, running_emulator
from tests.emulator_support import fixtures
from tests.emulator_support.sdk import (
    anthropic_client,
    jsonl,
    message_requests,
    openai_client,
    upload_and_create,
)

admin = fixtures.admin
claude = fixtures.claude
gpt = fixtures.gpt

STREAM_CUT = (httpx2.TransportError, anthropic.APIConnectionError, openai.APIConnectionError)
"""What a client sees when the connection drops mid-body, depending on how it reads."""


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(complete_after_s=3600)) as running:
        yield running


async def test_rate_limit_answers_429_with_retry_after(
    claude: anthropic.AsyncAnthropic, admin: EmulatorAdmin
) -> None:
    await admin.add_fault(route="anthropic.batches.list", kind="rate_limit", retry_after_s=7)

    with pytest.raises(anthropic.RateLimitError) as limited:
        await claude.messages.batches.list()

    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert (await claude.messages.batches.list()).data == []  # the fault was used up


async def test_sdk_retries_honour_retry_after(emulator: RunningEmulator, admin: EmulatorAdmin) -> None:
    [batch_id] = await admin.seed("anthropic")
    await admin.add_fault(route="anthropic.batches.retrieve", kind="rate_limit", retry_after_s=0.2, count=2)

    started = time.monotonic()
    async with anthropic_client(emulator, max_retries=2) as retrying:
        batch = await retrying.messages.batches.retrieve(batch_id)

    assert batch.id == batch_id
    assert time.monotonic() - started >= 0.4
    stats = await admin.stats()
    assert stats["requests"]["anthropic.batches.retrieve"] == 3
    assert stats["faults_applied"]["anthropic.batches.retrieve"] == 2


async def test_server_errors_500_and_529(
    claude: anthropic.AsyncAnthropic, gpt: openai.AsyncOpenAI, admin: EmulatorAdmin
) -> None:
    await admin.add_fault(route="openai.batches.list", kind="server_error")
    await admin.add_fault(route="anthropic.batches.list", kind="overloaded")

    with pytest.raises(openai.InternalServerError) as failed:
        await gpt.batches.list()
    assert failed.value.status_code == 500
    assert failed.value.body["type"] == "server_error"  # type: ignore[index]
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await claude.messages.batches.list()
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_slow_answer_trips_the_client_timeout(emulator: RunningEmulator, admin: EmulatorAdmin) -> None:
    [batch_id] = await admin.seed("openai")
    await admin.add_fault(route="openai.batches.retrieve", kind="delay", delay_s=2.0)

    async with openai_client(emulator, timeout=0.3) as impatient:
        with pytest.raises(openai.APITimeoutError):
            await impatient.batches.retrieve(batch_id)
        assert (await impatient.batches.retrieve(batch_id)).id == batch_id


async def test_delay_then_answer_normally(gpt: openai.AsyncOpenAI, admin: EmulatorAdmin) -> None:
    [batch_id] = await admin.seed("openai")
    await admin.add_fault(route="openai.batches.retrieve", kind="delay", delay_s=0.3)

    started = time.monotonic()
    batch = await gpt.batches.retrieve(batch_id)

    assert batch.id == batch_id
    assert time.monotonic() - started >= 0.3


async def test_anthropic_results_stream_cut_mid_body(
    claude: anthropic.AsyncAnthropic, admin: EmulatorAdmin
) -> None:
    created = await claude.messages.batches.create(requests=message_requests([f"r{i}" for i in range(50)]))
    await admin.end_batch(created.id)
    await admin.add_fault(route="anthropic.batches.results", kind="cut_stream", after_lines=20)

    received: list[str] = []
    with pytest.raises(STREAM_CUT):
        async for line in await claude.messages.batches.results(created.id):
            received.append(line.custom_id)

    assert 0 < len(received) <= 20
    assert received == [f"r{i}" for i in range(len(received))]
    complete = [line.custom_id async for line in await claude.messages.batches.results(created.id)]
    assert complete == [f"r{i}" for i in range(50)]


async def test_openai_file_content_cut_mid_body(gpt: openai.AsyncOpenAI, admin: EmulatorAdmin) -> None:
    [batch_id] = await admin.seed("openai", items_per_batch=50)
    await admin.end_batch(batch_id)
    batch = await gpt.batches.retrieve(batch_id)
    assert batch.output_file_id is not None
    await admin.add_fault(route="openai.files.content", kind="cut_stream", after_lines=20, count=2)

    received: list[str] = []
    with pytest.raises(STREAM_CUT):
        async with gpt.files.with_streaming_response.content(batch.output_file_id) as response:
            async for line in response.iter_lines():
                received.append(line)
    assert len(received) == 20
    with pytest.raises(STREAM_CUT):
        await gpt.files.content(batch.output_file_id)

    assert len(jsonl((await gpt.files.content(batch.output_file_id)).text)) == 50


async def test_new_batches_404_for_their_first_polls(
    claude: anthropic.AsyncAnthropic, gpt: openai.AsyncOpenAI, admin: EmulatorAdmin
) -> None:
    await admin.set_scenario(not_found_polls=2)
    message_batch = await claude.messages.batches.create(requests=message_requests(["a"]))
    openai_batch = await upload_and_create(gpt, ["a"])

    for _ in range(2):
        with pytest.raises(anthropic.NotFoundError):
            await claude.messages.batches.retrieve(message_batch.id)
        with pytest.raises(openai.NotFoundError):
            await gpt.batches.retrieve(openai_batch.id)
    assert (await claude.messages.batches.retrieve(message_batch.id)).id == message_batch.id
    assert (await gpt.batches.retrieve(openai_batch.id)).id == openai_batch.id


async def test_not_found_fault_can_target_one_batch(gpt: openai.AsyncOpenAI, admin: EmulatorAdmin) -> None:
    target, other = await admin.seed("openai", batches=2)
    await admin.add_fault(route="openai.batches.retrieve", kind="not_found", resource_id=target, count=None)

    assert (await gpt.batches.retrieve(other)).id == other
    for _ in range(3):
        with pytest.raises(openai.NotFoundError):
            await gpt.batches.retrieve(target)
    await admin.clear_faults()
    assert (await gpt.batches.retrieve(target)).id == target


async def test_completed_batch_without_output_file_for_a_while(
    gpt: openai.AsyncOpenAI, admin: EmulatorAdmin
) -> None:
    await admin.set_scenario(output_file_delay_polls=2)
    created = await upload_and_create(gpt, ["a", "b"])
    await gpt.batches.retrieve(created.id)  # polls before the end do not count
    await admin.end_batch(created.id)

    early = [await gpt.batches.retrieve(created.id) for _ in range(2)]
    assert [(batch.status, batch.output_file_id) for batch in early] == [("completed", None)] * 2
    late = await gpt.batches.retrieve(created.id)
    assert late.status == "completed" and late.output_file_id is not None


async def test_results_miss_some_custom_ids(claude: anthropic.AsyncAnthropic, admin: EmulatorAdmin) -> None:
    await admin.set_scenario(missing_every=10, missing_custom_ids=["r3"])
    ids = [f"r{i}" for i in range(30)] + ["lost-missing-item"]
    created = await claude.messages.batches.create(requests=message_requests(ids))
    ended = await admin.end_batch(created.id)

    returned = {line.custom_id async for line in await claude.messages.batches.results(created.id)}

    assert set(ids) - returned == {"r3", "r9", "r19", "r29", "lost-missing-item"}
    assert ended["request_counts"]["succeeded"] == len(ids)  # the counts still claim every item


async def test_expiry_keeps_partial_results(
    claude: anthropic.AsyncAnthropic, gpt: openai.AsyncOpenAI, admin: EmulatorAdmin
) -> None:
    await admin.set_scenario(expire_after_items=4)
    ids = [f"r{i}" for i in range(10)]
    message_batch = await claude.messages.batches.create(requests=message_requests(ids))
    openai_batch = await upload_and_create(gpt, ids)
    await admin.end_batch(message_batch.id)
    await admin.end_batch(openai_batch.id)

    ended = await claude.messages.batches.retrieve(message_batch.id)
    assert (ended.request_counts.succeeded, ended.request_counts.expired) == (4, 6)
    lines = [line async for line in await claude.messages.batches.results(message_batch.id)]
    assert [line.result.type for line in lines] == ["succeeded"] * 4 + ["expired"] * 6

    expired = await gpt.batches.retrieve(openai_batch.id)
    assert expired.status == "expired" and expired.expired_at is not None
    assert expired.output_file_id is not None and expired.error_file_id is not None
    assert len(jsonl((await gpt.files.content(expired.output_file_id)).text)) == 4
    errors = jsonl((await gpt.files.content(expired.error_file_id)).text)
    assert [line["error"]["code"] for line in errors] == ["batch_expired"] * 6


async def test_scenario_of_one_existing_batch_can_change(
    claude: anthropic.AsyncAnthropic, admin: EmulatorAdmin
) -> None:
    created = await claude.messages.batches.create(requests=message_requests(["a", "b", "c"]))
    await admin.set_batch_scenario(created.id, outcomes={"b": "errored"}, error_every=3)
    ended = await admin.end_batch(created.id)
    assert (ended["request_counts"]["succeeded"], ended["request_counts"]["errored"]) == (1, 2)


async def test_faults_configured_at_start_and_restored_by_reset() -> None:
    config = EmulatorConfig(
        faults=[FaultRule(route="*", kind="server_error")], scenario=Scenario(error_every=1)
    )
    with running_emulator(config) as emulator:
        async with anthropic_client(emulator) as claude, EmulatorAdmin(emulator.base_url) as admin:
            with pytest.raises(anthropic.InternalServerError):
                await claude.messages.batches.list()
            created = await claude.messages.batches.create(requests=message_requests(["a"]))
            assert (await admin.end_batch(created.id))["request_counts"]["errored"] == 1

            await admin.reset()
            assert len(await admin.faults()) == 1
            with pytest.raises(anthropic.InternalServerError):
                await claude.messages.batches.list()
            assert (await claude.messages.batches.list()).data == []
            assert (await admin.stats())["requests"] == {"anthropic.batches.list": 2}


async def test_admin_rejects_bad_faults_and_lists_active_ones(
    emulator: RunningEmulator, admin: EmulatorAdmin
) -> None:
    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=15) as http:
        wrong_route = await http.post("/_emulator/faults", json={"route": "nope", "kind": "server_error"})
        cut_on_json = await http.post(
            "/_emulator/faults", json={"route": "openai.batches.retrieve", "kind": "cut_stream"}
        )
    assert (wrong_route.status_code, cut_on_json.status_code) == (422, 422)

    kept = await admin.add_fault(route="openai.batches.list", kind="delay", delay_s=0.1, count=3)
    [active] = await admin.faults()
    assert (active.id, active.remaining, active.rule.kind) == (kept.id, 3, "delay")
    await admin.clear_faults()
    assert await admin.faults() == []
