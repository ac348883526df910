"""The official OpenAI SDK against the emulator: Files and Batch APIs end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from backburner.emulator import EmulatorAdmin, EmulatorConfig
from backburner.emulator.testing import ManualClock, RunningEmulator, running_emulator
from tests.emulator_support import fixtures
from tests.emulator_support.sdk import chat_input_file, jsonl, upload_and_create

admin = fixtures.admin
gpt = fixtures.gpt

HOUR_S = 3600.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[RunningEmulator]:
    config = EmulatorConfig(complete_after_s=HOUR_S, cancel_after_s=60, validating_s=10, finalizing_s=10)
    with running_emulator(config, clock=clock) as running:
        yield running


async def test_upload_create_complete_and_download(gpt: openai.AsyncOpenAI, admin: EmulatorAdmin) -> None:
    ids = ["a-1", "a-2", "b-error-1", "c-expire-1"]
    content = chat_input_file(ids)
    uploaded = await gpt.files.create(file=("requests.jsonl", content), purpose="batch")
    assert (uploaded.purpose, uploaded.bytes, uploaded.filename) == ("batch", len(content), "requests.jsonl")
    assert (await gpt.files.retrieve(uploaded.id)).id == uploaded.id
    assert (await gpt.files.content(uploaded.id)).content == content

    created = await gpt.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"purpose": "test"},
    )
    assert created.id.startswith("batch_")
    assert created.status == "validating"
    assert created.request_counts is not None and created.request_counts.total == 4
    assert created.metadata == {"purpose": "test"}
    assert created.output_file_id is None

    await admin.end_batch(created.id)
    done = await gpt.batches.retrieve(created.id)
    assert done.status == "completed"
    assert done.completed_at is not None and done.in_progress_at is not None
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 2)
    assert done.output_file_id is not None and done.error_file_id is not None

    output = await gpt.files.content(done.output_file_id)
    successes = jsonl(output.text)
    assert [line["custom_id"] for line in successes] == ["a-1", "a-2"]
    for line in successes:
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.model == "gpt-test"
        assert line["custom_id"] in (completion.choices[0].message.content or "")
    output_file = await gpt.files.retrieve(done.output_file_id)
    assert (output_file.purpose, output_file.bytes) == ("batch_output", len(output.content))

    failures = {line["custom_id"]: line for line in jsonl((await gpt.files.content(done.error_file_id)).text)}
    assert failures["b-error-1"]["response"]["status_code"] == 400
    assert failures["b-error-1"]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert failures["c-expire-1"]["response"] is None
    assert failures["c-expire-1"]["error"]["code"] == "batch_expired"


async def test_statuses_follow_the_clock(gpt: openai.AsyncOpenAI, clock: ManualClock) -> None:
    created = await upload_and_create(gpt, ["one", "two"])
    seen = [created.status]
    for step in (10, HOUR_S - 20, 10):  # out of validating, into finalizing, to the end
        clock.advance(step)
        seen.append((await gpt.batches.retrieve(created.id)).status)
    assert seen == ["validating", "in_progress", "finalizing", "completed"]


async def test_list_pages_newest_first(gpt: openai.AsyncOpenAI, admin: EmulatorAdmin) -> None:
    created = await admin.seed("openai", batches=5, items_per_batch=2)
    newest_first = created[::-1]

    page = await gpt.batches.list(limit=2)
    assert [batch.id for batch in page.data] == newest_first[:2]
    assert page.has_more is True
    assert [batch.id async for batch in gpt.batches.list(limit=2)] == newest_first

    tail = await gpt.batches.list(after=created[1], limit=10)
    assert [batch.id for batch in tail.data] == [created[0]]
    assert tail.has_more is False


async def test_cancel_is_cancelling_until_it_ends_with_partial_results(
    gpt: openai.AsyncOpenAI, clock: ManualClock
) -> None:
    created = await upload_and_create(gpt, [f"req-{i}" for i in range(10)])
    clock.advance(HOUR_S / 2)  # half of the items are done when the cancel arrives

    cancelling = await gpt.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None

    clock.advance(60)
    cancelled = await gpt.batches.retrieve(created.id)
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None
    assert cancelled.request_counts is not None
    assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (5, 5)
    assert cancelled.output_file_id is not None and cancelled.error_file_id is not None
    assert len(jsonl((await gpt.files.content(cancelled.output_file_id)).text)) == 5
    errors = jsonl((await gpt.files.content(cancelled.error_file_id)).text)
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}

    with pytest.raises(openai.BadRequestError, match="Cannot cancel a batch with status 'cancelled'"):
        await gpt.batches.cancel(created.id)


async def test_invalid_input_file_fails_the_batch(gpt: openai.AsyncOpenAI) -> None:
    good = json.dumps(
        {"custom_id": "ok", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}
    )
    wrong_url = json.dumps(
        {"custom_id": "w", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}
    )
    content = "\n".join([good, good, wrong_url, "{not json"]).encode()
    uploaded = await gpt.files.create(file=("bad.jsonl", content), purpose="batch")

    batch = await gpt.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None and batch.errors.data is not None
    assert [(error.line, error.code) for error in batch.errors.data] == [
        (2, "duplicate_custom_id"),
        (3, "mismatched_endpoint"),
        (4, "invalid_json_line"),
    ]
    with pytest.raises(openai.BadRequestError, match="status 'failed'"):
        await gpt.batches.cancel(batch.id)


async def test_bad_create_requests_are_refused(gpt: openai.AsyncOpenAI) -> None:
    uploaded = await gpt.files.create(file=("in.jsonl", chat_input_file(["x"])), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="endpoint must be one of"):
        await gpt.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/videos",
            completion_window="24h",
        )
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        await gpt.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError) as missing:
        await gpt.batches.retrieve("batch_nope")
    assert missing.value.body == {
        "message": "No batch found with id 'batch_nope'.",
        "type": "invalid_request_error",
        "param": "batch_id",
        "code": None,
    }
    with pytest.raises(openai.BadRequestError, match="purpose"):
        await gpt.files.create(file=("in.jsonl", b"{}"), purpose="assistants")


async def test_embeddings_batches_return_embedding_bodies(
    gpt: openai.AsyncOpenAI, admin: EmulatorAdmin
) -> None:
    created = await upload_and_create(gpt, ["e-1", "e-2"], endpoint="/v1/embeddings")
    await admin.end_batch(created.id)
    done = await gpt.batches.retrieve(created.id)
    assert done.output_file_id is not None

    lines = jsonl((await gpt.files.content(done.output_file_id)).text)

    for line in lines:
        embedding = CreateEmbeddingResponse.model_validate(line["response"]["body"])
        assert len(embedding.data[0].embedding) == 4


async def test_files_can_be_deleted(gpt: openai.AsyncOpenAI) -> None:
    uploaded = await gpt.files.create(file=("in.jsonl", chat_input_file(["x"])), purpose="batch")

    deleted = await gpt.files.delete(uploaded.id)

    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        await gpt.files.retrieve(uploaded.id)


async def test_result_files_do_not_exist_before_the_batch_ends(
    gpt: openai.AsyncOpenAI, admin: EmulatorAdmin, emulator: RunningEmulator
) -> None:
    [batch_id] = await admin.seed("openai", items_per_batch=3)
    details = emulator.state.store.batch(batch_id)
    assert details is not None and details.openai is not None

    with pytest.raises(openai.NotFoundError):
        await gpt.files.retrieve(details.openai.output_file_id)
    await admin.end_batch(batch_id)
    assert (await gpt.files.retrieve(details.openai.output_file_id)).purpose == "batch_output"
    # Nothing failed, so there is no error file at all.
    assert (await gpt.batches.retrieve(batch_id)).error_file_id is None
    with pytest.raises(openai.NotFoundError):
        await gpt.files.retrieve(details.openai.error_file_id)


async def test_missing_api_key_is_401_in_openai_shape(emulator: RunningEmulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.openai_base_url, timeout=15) as http:
        response = await http.get("/batches")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
