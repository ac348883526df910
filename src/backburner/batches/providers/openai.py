"""OpenAI Batch through the official `openai` SDK: a JSONL input file, then the batch.

Our batch id travels in the batch's metadata, so a submission interrupted by a crash can be found
again by listing recent batches. Results are the output and error files, streamed line by line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

from openai import AsyncOpenAI
from openai.types import Batch

from backburner.batches.domain import (
    BatchRequest,
    ItemResult,
    ItemStatus,
    Provider,
    ProviderBatch,
    ProviderCounts,
)
from backburner.batches.providers.errors import translated_errors
from backburner.batches.validation import OPENAI_ENDPOINT, encode_request

METADATA_KEY = "backburner_batch_id"
LIST_PAGE_SIZE = 100  # the most OpenAI returns per page
_ERROR_CODE_STATUS = {"batch_expired": ItemStatus.EXPIRED, "batch_cancelled": ItemStatus.CANCELED}


class OpenAIProvider:
    name: Provider = "openai"

    def __init__(self, *, api_key: str, base_url: str, timeout_s: float) -> None:
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)

    @property
    def can_find_submissions(self) -> bool:
        return True

    async def create(self, *, batch_id: str, model: str, requests: Sequence[BatchRequest]) -> ProviderBatch:
        body = b"".join(encode_request(self.name, model, r) + b"\n" for r in requests)
        with translated_errors(self.name):
            uploaded = await self._client.files.create(
                file=(f"{batch_id}.jsonl", body, "application/jsonl"), purpose="batch"
            )
            batch = await self._client.batches.create(
                input_file_id=uploaded.id,
                endpoint=OPENAI_ENDPOINT,
                completion_window="24h",
                metadata={METADATA_KEY: batch_id},
            )
        return snapshot(batch)

    async def retrieve(self, provider_batch_id: str) -> ProviderBatch:
        with translated_errors(self.name):
            return snapshot(await self._client.batches.retrieve(provider_batch_id))

    async def cancel(self, provider_batch_id: str) -> ProviderBatch:
        with translated_errors(self.name):
            return snapshot(await self._client.batches.cancel(provider_batch_id))

    async def results(self, snapshot: ProviderBatch) -> AsyncIterator[ItemResult]:
        for file_id in (snapshot.output_file_id, snapshot.error_file_id):
            if file_id is None:
                continue
            with translated_errors(self.name):
                async with self._client.files.with_streaming_response.content(file_id) as response:
                    async for line in response.iter_lines():
                        if line.strip():
                            yield item_result(line)

    async def list_recent(self, created_after: datetime) -> AsyncGenerator[ProviderBatch, None]:
        oldest_s = created_after.timestamp()
        with translated_errors(self.name):
            async for batch in self._client.batches.list(limit=LIST_PAGE_SIZE):
                if batch.created_at < oldest_s:
                    return
                yield snapshot(batch)

    async def find_submission(self, batch_id: str, created_after: datetime) -> ProviderBatch | None:
        """Walk recent batches, newest first, for the one whose metadata names `batch_id`."""
        async with aclosing(self.list_recent(created_after)) as recent:
            async for batch in recent:
                if dict(batch.metadata).get(METADATA_KEY) == batch_id:
                    return batch
        return None

    async def aclose(self) -> None:
        await self._client.close()


def snapshot(batch: Batch) -> ProviderBatch:
    counts = batch.request_counts
    total = counts.total if counts else 0
    succeeded = counts.completed if counts else 0
    errored = counts.failed if counts else 0
    rest = max(total - succeeded - errored, 0)
    return ProviderBatch(
        provider="openai",
        provider_batch_id=batch.id,
        status=batch.status,
        counts=ProviderCounts(
            processing=rest if batch.status not in ("expired", "cancelled") else 0,
            succeeded=succeeded,
            errored=errored,
            canceled=rest if batch.status == "cancelled" else 0,
            expired=rest if batch.status == "expired" else 0,
        ),
        created_at=datetime.fromtimestamp(batch.created_at, UTC),
        cancel_initiated=batch.cancelling_at is not None,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        errors=tuple(f"{e.code or 'error'}: {e.message or ''}".strip() for e in (batch.errors.data or []))
        if batch.errors
        else (),
        metadata=tuple(sorted((batch.metadata or {}).items())),
    )


def item_result(line: str) -> ItemResult:
    """One line of an output or error file: `{id, custom_id, response: {status_code, body}, error}`."""
    entry: dict[str, Any] = json.loads(line)
    custom_id = str(entry["custom_id"])
    response = entry.get("response") or {}
    error = entry.get("error")
    status_code = response.get("status_code")
    if error is None and isinstance(status_code, int) and 200 <= status_code < 300:
        return ItemResult(custom_id, ItemStatus.SUCCEEDED, line)
    if isinstance(error, dict):
        code = str(error.get("code") or "error")
        return ItemResult(
            custom_id,
            _ERROR_CODE_STATUS.get(code, ItemStatus.ERRORED),
            line,
            f"{code}: {error.get('message')}",
        )
    body = response.get("body")
    body_error = body.get("error") if isinstance(body, dict) else None
    message = body_error.get("message") if isinstance(body_error, dict) else None
    return ItemResult(
        custom_id, ItemStatus.ERRORED, line, f"HTTP {status_code}: {message or 'request failed'}"
    )
