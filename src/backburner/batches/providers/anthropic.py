"""Anthropic Message Batches through the official `anthropic` SDK.

The SDK's own retries are off (`max_retries=0`): the poller decides when to ask again, honouring
`retry-after` and backing off per batch. A batch's body is sent as the bytes we built from the
stored params (the SDK's `post` with `content`), so 100,000 requests are never Python objects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from anthropic import AsyncAnthropic, NotFoundError
from anthropic.types.messages import MessageBatch

from backburner.batches.domain import (
    ItemResult,
    ItemStatus,
    Provider,
    ProviderBatch,
    ProviderCounts,
    ProviderKind,
    Usage,
)
from backburner.batches.providers.errors import translated_errors

LIST_PAGE_SIZE = 1000  # the most Anthropic returns per page
RESULTS_RETENTION = timedelta(days=29)  # results can be downloaded this long after creation
_ITEM_STATUS = {
    "succeeded": ItemStatus.SUCCEEDED,
    "errored": ItemStatus.ERRORED,
    "canceled": ItemStatus.CANCELED,
    "expired": ItemStatus.EXPIRED,
}
EXPIRED_REASON = "expired: the batch's 24-hour window ended before this request ran"


class AnthropicProvider:
    kind: ProviderKind = "anthropic"

    def __init__(
        self, *, api_key: str, base_url: str, timeout_s: float, name: Provider = "anthropic"
    ) -> None:
        self.name = name
        self.base_url = base_url
        self._client = AsyncAnthropic(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)

    async def create(self, *, batch_id: str, body: bytes) -> ProviderBatch:
        with translated_errors(self.name, self.base_url):
            batch = await self._client.post(
                "/v1/messages/batches",
                content=body,
                cast_to=MessageBatch,
                options={"headers": {"Content-Type": "application/json"}},
            )
        return snapshot(batch, self.name)

    async def retrieve(self, provider_batch_id: str) -> ProviderBatch:
        with translated_errors(self.name, self.base_url):
            return snapshot(await self._client.messages.batches.retrieve(provider_batch_id), self.name)

    async def cancel(self, provider_batch_id: str) -> ProviderBatch:
        with translated_errors(self.name, self.base_url):
            return snapshot(await self._client.messages.batches.cancel(provider_batch_id), self.name)

    async def results(self, snapshot: ProviderBatch) -> AsyncIterator[ItemResult]:
        """The SDK's results stream, read line by line: each result is kept as the provider wrote
        it, without building the SDK's models for 100,000 lines."""
        batches = self._client.messages.batches
        with translated_errors(self.name, self.base_url):
            async with batches.with_streaming_response.results(snapshot.provider_batch_id) as response:
                async for line in response.iter_lines():
                    if line.strip():
                        yield item_result(line)

    async def list_recent(self, created_after: datetime) -> AsyncGenerator[ProviderBatch, None]:
        with translated_errors(self.name, self.base_url):
            async for batch in self._client.messages.batches.list(limit=LIST_PAGE_SIZE):
                if batch.created_at < created_after:
                    return
                yield snapshot(batch, self.name)

    async def find_submission(
        self, batch_id: str, created_after: datetime, request_count: int
    ) -> list[ProviderBatch]:
        """Anthropic batches carry nothing of ours: recent ones with as many requests are candidates."""
        found: list[ProviderBatch] = []
        async for batch in self.list_recent(created_after):
            if batch.counts.total == request_count:
                found.append(batch)
        return found

    async def delete_resources(self, provider_batch_id: str, file_ids: Sequence[str]) -> None:
        """Deleting an ended batch deletes its results at Anthropic."""
        with translated_errors(self.name, self.base_url):
            try:
                await self._client.messages.batches.delete(provider_batch_id)
            except NotFoundError:
                return

    async def aclose(self) -> None:
        await self._client.close()


def build(config: Any, timeout_s: float) -> AnthropicProvider:
    return AnthropicProvider(
        api_key=config.api_key, base_url=config.base_url, timeout_s=timeout_s, name=config.name
    )


def snapshot(batch: MessageBatch, name: Provider = "anthropic") -> ProviderBatch:
    counts = batch.request_counts
    return ProviderBatch(
        provider=name,
        kind="anthropic",
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
    usage: Usage | None = None
    if kind == "errored":
        detail = (result.get("error") or {}).get("error") or {}
        error = f"{detail.get('type', 'error')}: {detail.get('message', '')}"
    elif kind == "expired":
        error = EXPIRED_REASON
    elif kind == "canceled":
        error = "canceled: the batch was canceled before this request ran"
    elif kind == "succeeded":
        usage = _usage((result.get("message") or {}).get("usage"))
    status = _ITEM_STATUS.get(kind, ItemStatus.ERRORED)
    return ItemResult(
        str(entry["custom_id"]), status, json.dumps(result, separators=(",", ":")), error, usage
    )


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        input_tokens=_int(raw.get("input_tokens")),
        output_tokens=_int(raw.get("output_tokens")),
        cache_read_tokens=_int(raw.get("cache_read_input_tokens")),
        cache_write_tokens=_int(raw.get("cache_creation_input_tokens")),
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
