"""Backburner's provider adapters, through the official SDKs, against the emulator."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from backburner.batches.domain import BatchRequest, ItemStatus
from backburner.batches.encoding import encode_requests
from backburner.batches.providers.anthropic import AnthropicProvider
from backburner.batches.providers.base import ProviderError
from backburner.batches.providers.openai import OpenAIProvider
from tests.emulator_support import fixtures
from tests.support import batch_env as _support
from tests.support.processes import free_port

admin = fixtures.admin

shared_emulator = _support.shared_emulator  # fixtures of the batch tests
emulator = _support.emulator

REQUESTS = [
    BatchRequest(cid, {"max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]})
    for cid in ("p-1", "p-2", "p-error-3", "p-4")
]


def body(provider, model: str, requests: list[BatchRequest]) -> bytes:
    return encode_requests(provider.kind, model, requests)[0]


@pytest.fixture
async def anthropic_provider(emulator):
    provider = AnthropicProvider(api_key="k", base_url=emulator.anthropic_base_url, timeout_s=10)
    yield provider
    await provider.aclose()


@pytest.fixture
async def openai_provider(emulator):
    provider = OpenAIProvider(api_key="k", base_url=emulator.openai_base_url, timeout_s=10)
    yield provider
    await provider.aclose()


async def test_anthropic_create_retrieve_cancel_results(anthropic_provider, admin):
    created = await anthropic_provider.create(
        batch_id="ours-1", body=body(anthropic_provider, "claude-test", REQUESTS)
    )
    assert (created.status, created.counts.processing) == ("in_progress", 4)
    assert (await anthropic_provider.retrieve(created.provider_batch_id)).status == "in_progress"

    canceling = await anthropic_provider.cancel(created.provider_batch_id)
    assert (canceling.status, canceling.cancel_initiated) == ("canceling", True)
    await admin.end_batch(created.provider_batch_id)
    ended = await anthropic_provider.retrieve(created.provider_batch_id)
    assert ended.status == "ended" and ended.counts.total == 4

    results = [r async for r in anthropic_provider.results(ended)]
    assert sorted(r.custom_id for r in results) == ["p-1", "p-2", "p-4", "p-error-3"]
    assert {r.status for r in results} <= {ItemStatus.SUCCEEDED, ItemStatus.ERRORED, ItemStatus.CANCELED}


async def test_anthropic_results_of_every_kind(anthropic_provider, admin):
    created = await anthropic_provider.create(
        batch_id="ours-2", body=body(anthropic_provider, "claude-test", REQUESTS)
    )
    await admin.end_batch(created.provider_batch_id)
    ended = await anthropic_provider.retrieve(created.provider_batch_id)
    by_id = {r.custom_id: r async for r in anthropic_provider.results(ended)}
    assert by_id["p-1"].status is ItemStatus.SUCCEEDED and '"type":"succeeded"' in by_id["p-1"].result_json
    assert by_id["p-error-3"].status is ItemStatus.ERRORED
    assert by_id["p-error-3"].error == "invalid_request_error: Emulated error for this request."


async def test_openai_create_retrieve_cancel_results(openai_provider, admin):
    created = await openai_provider.create(
        batch_id="ours-3", body=body(openai_provider, "gpt-test", REQUESTS)
    )
    assert created.status in ("validating", "in_progress")
    assert dict(created.metadata) == {"backburner_batch_id": "ours-3"}
    await admin.end_batch(created.provider_batch_id)
    ended = await openai_provider.retrieve(created.provider_batch_id)
    assert (ended.status, ended.counts.succeeded, ended.counts.errored) == ("completed", 3, 1)
    assert ended.output_file_id and ended.error_file_id

    results = [r async for r in openai_provider.results(ended)]
    assert Counter(r.status for r in results) == {ItemStatus.SUCCEEDED: 3, ItemStatus.ERRORED: 1}
    assert (
        next(r for r in results if r.custom_id == "p-error-3").error
        == "HTTP 400: Emulated error for this request."
    )

    other = await openai_provider.create(batch_id="ours-4", body=body(openai_provider, "gpt-test", REQUESTS))
    cancelling = await openai_provider.cancel(other.provider_batch_id)
    assert (cancelling.status, cancelling.cancel_initiated) == ("cancelling", True)


async def test_openai_finds_a_submission_by_metadata_across_pages(openai_provider, admin):
    start = datetime.now(UTC) - timedelta(minutes=1)
    ours = await openai_provider.create(
        batch_id="ours-5", body=body(openai_provider, "gpt-test", REQUESTS[:1])
    )
    await admin.seed("openai", batches=150)  # newer batches push ours to the second page
    [found] = await openai_provider.find_submission("ours-5", start, 1)
    assert found.provider_batch_id == ours.provider_batch_id
    assert await openai_provider.find_submission("never-submitted", start, 1) == []


async def test_anthropic_finds_a_submission_by_its_requests(anthropic_provider, admin):
    start = datetime.now(UTC) - timedelta(minutes=1)
    ours = await anthropic_provider.create(batch_id="x", body=body(anthropic_provider, "m", REQUESTS[:3]))
    await anthropic_provider.create(batch_id="y", body=body(anthropic_provider, "m", REQUESTS[:2]))
    found = await anthropic_provider.find_submission("x", start, 3)
    assert [b.provider_batch_id for b in found] == [ours.provider_batch_id]
    assert await anthropic_provider.find_submission("x", datetime.now(UTC) + timedelta(hours=1), 3) == []


async def test_refused_connection_is_known_to_have_sent_nothing(anthropic_provider):
    unreachable = AnthropicProvider(api_key="k", base_url=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    try:
        with pytest.raises(ProviderError) as caught:
            await unreachable.create(batch_id="z", body=body(unreachable, "m", REQUESTS[:1]))
        assert (caught.value.sent, caught.value.definitive) == (False, False)
        assert caught.value.base_url is not None and caught.value.base_url.startswith("http://127.0.0.1:")
    finally:
        await unreachable.aclose()


async def test_sdk_listing_paginates_for_both_providers(emulator, anthropic_provider, openai_provider):
    anthropic_ids = [
        (
            await anthropic_provider.create(
                batch_id=f"a{i}", body=body(anthropic_provider, "m", REQUESTS[:1])
            )
        ).provider_batch_id
        for i in range(5)
    ]
    openai_ids = [
        (
            await openai_provider.create(batch_id=f"o{i}", body=body(openai_provider, "m", REQUESTS[:1]))
        ).provider_batch_id
        for i in range(5)
    ]
    async with AsyncAnthropic(api_key="k", base_url=emulator.anthropic_base_url, max_retries=0) as client:
        first = await client.messages.batches.list(limit=2)
        assert first.has_more and [b.id for b in first.data] == anthropic_ids[::-1][:2]
        assert [b.id async for b in client.messages.batches.list(limit=2)] == anthropic_ids[::-1]
    async with AsyncOpenAI(api_key="k", base_url=emulator.openai_base_url, max_retries=0) as client:
        assert [b.id async for b in client.batches.list(limit=2)] == openai_ids[::-1]


async def test_errors_carry_status_and_retry_after(anthropic_provider, openai_provider, admin):
    with pytest.raises(ProviderError) as caught:
        await anthropic_provider.retrieve("msgbatch_nope")
    assert (caught.value.status_code, caught.value.definitive) == (404, True)

    await admin.add_fault(route="openai.batches.retrieve", kind="rate_limit", retry_after_s=42)
    with pytest.raises(ProviderError) as caught:
        await openai_provider.retrieve("batch_anything")
    assert (caught.value.status_code, caught.value.retry_after_s, caught.value.label) == (429, 42.0, "429")

    unreachable = AnthropicProvider(api_key="k", base_url=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    try:
        with pytest.raises(ProviderError) as caught:
            await unreachable.retrieve("msgbatch_x")
        assert (caught.value.status_code, caught.value.definitive, caught.value.label) == (
            None,
            False,
            "connection",
        )
    finally:
        await unreachable.aclose()
