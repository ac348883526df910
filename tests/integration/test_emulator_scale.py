"""Large batches and many polls: the emulator streams and answers without building big bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from backburner.emulator import EmulatorAdmin, EmulatorConfig
from backburner.emulator.testing import RunningEmulator, running_emulator
from tests.emulator_support import fixtures
from tests.emulator_support.sdk import anthropic_client, message_requests, openai_client

admin = fixtures.admin

ITEMS = 100_000
STREAM_DEADLINE_S = 90.0


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(complete_after_s=3600, openai_max_requests=ITEMS)) as running:
        yield running


async def test_hundred_thousand_item_message_batch_streams_completely(
    emulator: RunningEmulator, admin: EmulatorAdmin
) -> None:
    ids = [f"req-{i}" for i in range(ITEMS)]
    async with anthropic_client(emulator, timeout=STREAM_DEADLINE_S) as claude:
        created = await claude.messages.batches.create(requests=message_requests(ids))
        assert created.request_counts.processing == ITEMS
        await admin.end_batch(created.id)

        seen: set[str] = set()
        succeeded = 0
        async with asyncio.timeout(STREAM_DEADLINE_S):
            async for line in await claude.messages.batches.results(created.id):
                seen.add(line.custom_id)
                succeeded += line.result.type == "succeeded"

    assert len(seen) == ITEMS and succeeded == ITEMS


async def test_hundred_thousand_line_output_file_streams_completely(
    emulator: RunningEmulator, admin: EmulatorAdmin
) -> None:
    [batch_id] = await admin.seed("openai", items_per_batch=ITEMS, custom_id_prefix="row-")
    await admin.end_batch(batch_id)

    async with openai_client(emulator, timeout=STREAM_DEADLINE_S) as gpt:
        batch = await gpt.batches.retrieve(batch_id)
        assert batch.request_counts is not None and batch.request_counts.completed == ITEMS
        assert batch.output_file_id is not None
        lines = 0
        async with asyncio.timeout(STREAM_DEADLINE_S):
            async with gpt.files.with_streaming_response.content(batch.output_file_id) as response:
                async for _ in response.iter_lines():
                    lines += 1

    assert lines == ITEMS


async def test_a_poll_cycle_is_answered_and_counted(emulator: RunningEmulator, admin: EmulatorAdmin) -> None:
    polls = 2_000
    anthropic_ids = await admin.seed("anthropic", batches=polls // 2, items_per_batch=100)
    openai_ids = await admin.seed("openai", batches=polls // 2, items_per_batch=100)
    limit = asyncio.Semaphore(16)

    async with anthropic_client(emulator) as claude, openai_client(emulator) as gpt:

        async def poll_anthropic(batch_id: str) -> str:
            async with limit:
                return (await claude.messages.batches.retrieve(batch_id)).processing_status

        async def poll_openai(batch_id: str) -> str:
            async with limit:
                return (await gpt.batches.retrieve(batch_id)).status

        async with asyncio.timeout(60):
            statuses = await asyncio.gather(
                *(poll_anthropic(batch_id) for batch_id in anthropic_ids),
                *(poll_openai(batch_id) for batch_id in openai_ids),
            )

    assert set(statuses) <= {"validating", "in_progress"}
    stats = await admin.stats()
    assert stats["requests"]["anthropic.batches.retrieve"] == polls // 2
    assert stats["requests"]["openai.batches.retrieve"] == polls // 2
