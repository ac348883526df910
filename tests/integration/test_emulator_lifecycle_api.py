"""The emulator's limits, expiry, usage, enqueued-token limits and retention, through the SDKs."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from backburner.emulator import EmulatorAdmin, EmulatorConfig
from backburner.emulator.testing import ManualClock, RunningEmulator, running_emulator
from tests.emulator_support import fixtures
from tests.emulator_support.sdk import chat_input_file, jsonl, message_requests, upload_and_create

admin = fixtures.admin
claude = fixtures.claude
gpt = fixtures.gpt

DAY_S = 24 * 3600.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[RunningEmulator]:
    config = EmulatorConfig(
        complete_after_s=60,
        validating_s=0,
        finalizing_s=0,
        anthropic_max_bytes=4096,
        openai_max_bytes=4096,
        openai_enqueued_token_limits={"gpt-test": 50},
    )
    with running_emulator(config, clock=clock) as running:
        yield running


async def test_limits_are_answered_as_each_provider_answers(
    claude: anthropic.AsyncAnthropic, gpt: openai.AsyncOpenAI, admin: EmulatorAdmin
) -> None:
    with pytest.raises(anthropic.APIStatusError) as too_large:
        await claude.messages.batches.create(requests=message_requests(f"r{i}" for i in range(100)))
    assert too_large.value.status_code == 413
    assert too_large.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_large_file:
        await gpt.files.create(
            file=("big.jsonl", chat_input_file(f"r{i}" for i in range(100))), purpose="batch"
        )
    assert "at most" in str(too_large_file.value)
    assert (await admin.stats())["batches"] == {"anthropic": 0, "openai": 0}


async def test_a_batch_outlasting_its_window_expires_with_partial_results(
    claude: anthropic.AsyncAnthropic, admin: EmulatorAdmin, clock: ManualClock
) -> None:
    await admin.set_scenario(complete_after_s=40 * 3600)
    batch = await claude.messages.batches.create(requests=message_requests(f"r{i}" for i in range(10)))
    clock.advance(DAY_S)
    ended = await claude.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.expired) == (6, 4)
    kinds = [r.result.type async for r in await claude.messages.batches.results(batch.id)]
    assert kinds == ["succeeded"] * 6 + ["expired"] * 4


async def test_every_result_reports_its_usage(
    claude: anthropic.AsyncAnthropic, gpt: openai.AsyncOpenAI, admin: EmulatorAdmin, clock: ManualClock
) -> None:
    await admin.set_scenario(cache_read_tokens=5)
    message_batch = await claude.messages.batches.create(requests=message_requests(["a-1"]))
    chat_batch = await upload_and_create(gpt, ["c-1"])
    clock.advance(61)
    [result] = [r async for r in await claude.messages.batches.results(message_batch.id)]
    assert result.result.type == "succeeded"
    usage = result.result.message.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens) == (13, 12, 5)
    assert usage.cache_creation_input_tokens == 0
    done = await gpt.batches.retrieve(chat_batch.id)
    assert done.output_file_id is not None
    [line] = jsonl((await gpt.files.content(done.output_file_id)).text)
    body = openai.types.chat.ChatCompletion.model_validate(line["response"]["body"])
    assert body.usage is not None and body.usage.prompt_tokens_details is not None
    assert (body.usage.prompt_tokens, body.usage.prompt_tokens_details.cached_tokens) == (18, 5)


async def test_a_batch_beyond_the_enqueued_token_limit_fails_until_earlier_ones_end(
    gpt: openai.AsyncOpenAI, clock: ManualClock
) -> None:
    first = await upload_and_create(gpt, ["t-1", "t-2"])
    assert first.status == "in_progress"
    refused = await upload_and_create(gpt, ["t-3", "t-4"])
    assert refused.status == "failed" and refused.errors is not None and refused.errors.data
    assert refused.errors.data[0].code == "token_limit_exceeded"
    clock.advance(61)  # the first ends and frees its tokens
    assert (await gpt.batches.retrieve(first.id)).status == "completed"
    assert (await upload_and_create(gpt, ["t-3", "t-4"])).status == "in_progress"


async def test_results_are_archived_and_files_expire(
    claude: anthropic.AsyncAnthropic, gpt: openai.AsyncOpenAI, clock: ManualClock
) -> None:
    message_batch = await claude.messages.batches.create(requests=message_requests(["a-1"]))
    chat_batch = await upload_and_create(gpt, ["c-1"])
    clock.advance(61)
    done = await gpt.batches.retrieve(chat_batch.id)
    assert done.output_file_id is not None
    output = await gpt.files.retrieve(done.output_file_id)
    assert output.expires_at == int(chat_batch.created_at + 30 * DAY_S)
    clock.advance(29 * DAY_S)
    archived = await claude.messages.batches.retrieve(message_batch.id)
    assert archived.archived_at is not None and archived.results_url is None
    with pytest.raises(anthropic.AnthropicError, match="results_url"):  # the SDK finds no results URL
        await claude.messages.batches.results(message_batch.id)
    clock.advance(DAY_S)
    with pytest.raises(openai.NotFoundError):
        await gpt.files.content(done.output_file_id)


async def test_a_new_batch_can_be_unknown_for_a_while(
    claude: anthropic.AsyncAnthropic, admin: EmulatorAdmin, clock: ManualClock
) -> None:
    await admin.set_scenario(not_found_for_s=30)
    batch = await claude.messages.batches.create(requests=message_requests(["n-1"]))
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.batches.retrieve(batch.id)
    clock.advance(30)
    assert (await claude.messages.batches.retrieve(batch.id)).id == batch.id
