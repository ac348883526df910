"""Anthropic Message Batches through the official `anthropic` SDK.

The SDK's own retries are off (`max_retries=0`): the poller decides when to ask again, honouring
`retry-after` and backing off per batch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime
from typing import Any, cast

from anthropic import AsyncAnthropic
from anthropic.types.messages import MessageBatch

from backburner.batches.domain import (
    BatchRequest,
    ItemResult,
    ItemStatus,
    Provider,
    ProviderBatch,
    ProviderCounts,
)
from backburner.batches.providers.errors import translated_errors
from backburner.batches.validation import request_params

LIST_PAGE_SIZE = 1000  # the most Anthropic returns per page
_ITEM_STATUS = {
    "succeeded": ItemStatus.SUCCEEDED,
    "errored": ItemStatus.ERRORED,
    "canceled": ItemStatus.CANCELED,
    "expired": ItemStatus.EXPIRED,
}


class AnthropicProvider:
    name: Provider = "anthropic"

    def __init__(self, *, api_key: str, base_url: str, timeout_s: float) -> None:
        self._client = AsyncAnthropic(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)

    @property
    def can_find_submissions(self) -> bool:
        return False  # Anthropic batches carry no metadata that could name our record

    async def create(self, *, batch_id: str, model: str, requests: Sequence[BatchRequest]) -> ProviderBatch:
        body = [{"custom_id": r.custom_id, "params": request_params(model, r)} for r in requests]
        with translated_errors(self.name):
            batch = await self._client.messages.batches.create(requests=cast(Any, body))
        return snapshot(batch)

    async def retrieve(self, provider_batch_id: str) -> ProviderBatch:
        with translated_errors(self.name):
            return snapshot(await self._client.messages.batches.retrieve(provider_batch_id))

    async def cancel(self, provider_batch_id: str) -> ProviderBatch:
        with translated_errors(self.name):
            return snapshot(await self._client.messages.batches.cancel(provider_batch_id))

    async def results(self, snapshot: ProviderBatch) -> AsyncIterator[ItemResult]:
        """The SDK's results stream, read line by line: each result is kept as the provider wrote
        it, without building the SDK's models for 100,000 lines."""
        batches = self._client.messages.batches
        with translated_errors(self.name):
            async with batches.with_streaming_response.results(snapshot.provider_batch_id) as response:
                async for line in response.iter_lines():
                    if line.strip():
                        yield item_result(line)

    async def list_recent(self, created_after: datetime) -> AsyncGenerator[ProviderBatch, None]:
        with translated_errors(self.name):
            async for batch in self._client.messages.batches.list(limit=LIST_PAGE_SIZE):
                if batch.created_at < created_after:
                    return
                yield snapshot(batch)

    async def find_submission(self, batch_id: str, created_after: datetime) -> ProviderBatch | None:
        return None

    async def aclose(self) -> None:
        await self._client.close()


def snapshot(batch: MessageBatch) -> ProviderBatch:
    counts = batch.request_counts
    return ProviderBatch(
        provider="anthropic",
        provider_batch_id=batch.id,
        status=batch.processing_status,
        counts=ProviderCounts(
            processing=counts.processing,
            succeeded=counts.succeeded,
            errored=counts.errored,
            canceled=counts.canceled,
            expired=counts.expired,
        ),
        created_at=batch.created_at,
        cancel_initiated=batch.cancel_initiated_at is not None,
    )


def item_result(line: str) -> ItemResult:
    """One results line: `{custom_id, result: {type: succeeded|errored|canceled|expired, ...}}`."""
    entry: dict[str, Any] = json.loads(line)
    result = entry["result"]
    kind = result.get("type")
    error: str | None = None
    if kind == "errored":
        detail = (result.get("error") or {}).get("error") or {}
        error = f"{detail.get('type', 'error')}: {detail.get('message', '')}"
    status = _ITEM_STATUS.get(kind, ItemStatus.ERRORED)
    return ItemResult(str(entry["custom_id"]), status, json.dumps(result, separators=(",", ":")), error)
