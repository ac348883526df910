"""OpenAI Batch through the official `openai` SDK: a JSONL input file, then the batch.

Our batch id travels in the batch's metadata, so a submission interrupted by a crash can be found
again by listing recent batches. Results are the output and error files, streamed line by line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

from openai import AsyncOpenAI, NotFoundError
from openai.types import Batch

from backburner.batches.domain import (
    ItemResult,
    ItemStatus,
    Provider,
    ProviderBatch,
    ProviderCounts,
    ProviderKind,
    Usage,
)
from backburner.batches.encoding import OPENAI_ENDPOINT
from backburner.batches.providers.base import ProviderError
from backburner.batches.providers.errors import translated_errors
from backburner.logs import log_event

log = logging.getLogger("backburner.batches.providers.openai")

METADATA_KEY = "backburner_batch_id"
LIST_PAGE_SIZE = 100  # the most OpenAI returns per page
_ERROR_CODE_STATUS = {"batch_expired": ItemStatus.EXPIRED, "batch_cancelled": ItemStatus.CANCELED}


class OpenAIProvider:
    kind: ProviderKind = "openai"

    def __init__(self, *, api_key: str, base_url: str, timeout_s: float, name: Provider = "openai") -> None:
        self.name = name
        self.base_url = base_url
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)

    async def create(self, *, batch_id: str, body: bytes) -> ProviderBatch:
        with translated_errors(self.name, self.base_url):
            uploaded = await self._client.files.create(
                file=(f"{batch_id}.jsonl", body, "application/jsonl"), purpose="batch"
            )
        try:
            with translated_errors(self.name, self.base_url):
                batch = await self._client.batches.create(
                    input_file_id=uploaded.id,
                    endpoint=OPENAI_ENDPOINT,
                    completion_window="24h",
                    metadata={METADATA_KEY: batch_id},
                )
        except ProviderError as exc:
            if exc.status_code is not None:  # refused: the uploaded file would only take quota
                await self._delete_file_quietly(uploaded.id)
            raise
        return snapshot(batch, self.name)

    async def retrieve(self, provider_batch_id: str) -> ProviderBatch:
        with translated_errors(self.name, self.base_url):
            return snapshot(await self._client.batches.retrieve(provider_batch_id), self.name)

    async def cancel(self, provider_batch_id: str) -> ProviderBatch:
        with translated_errors(self.name, self.base_url):
            return snapshot(await self._client.batches.cancel(provider_batch_id), self.name)

    async def results(self, snapshot: ProviderBatch) -> AsyncIterator[ItemResult]:
        for file_id in (snapshot.output_file_id, snapshot.error_file_id):
            if file_id is None:
                continue
            with translated_errors(self.name, self.base_url):
                async with self._client.files.with_streaming_response.content(file_id) as response:
                    async for line in response.iter_lines():
                        if line.strip():
                            yield item_result(line)

    async def list_recent(self, created_after: datetime) -> AsyncGenerator[ProviderBatch, None]:
        oldest_s = created_after.timestamp()
        with translated_errors(self.name, self.base_url):
            async for batch in self._client.batches.list(limit=LIST_PAGE_SIZE):
                if batch.created_at < oldest_s:
                    return
                yield snapshot(batch, self.name)

    async def find_submission(
        self, batch_id: str, created_after: datetime, request_count: int
    ) -> list[ProviderBatch]:
        """Walk recent batches, newest first, for the one whose metadata names `batch_id`."""
        async with aclosing(self.list_recent(created_after)) as recent:
            async for batch in recent:
                if dict(batch.metadata).get(METADATA_KEY) == batch_id:
                    return [batch]
        return []

    async def delete_resources(self, provider_batch_id: str, file_ids: Sequence[str]) -> None:
        for file_id in file_ids:
            with translated_errors(self.name, self.base_url):
                try:
                    await self._client.files.delete(file_id)
                except NotFoundError:
                    continue

    async def _delete_file_quietly(self, file_id: str) -> None:
        try:
            await self.delete_resources("", [file_id])
        except ProviderError as exc:
            log_event(log, logging.WARNING, "batch.file_delete_failed", file_id=file_id, error=str(exc))

    async def aclose(self) -> None:
        await self._client.close()


def build(config: Any, timeout_s: float) -> OpenAIProvider:
    return OpenAIProvider(
        api_key=config.api_key, base_url=config.base_url, timeout_s=timeout_s, name=config.name
    )


def snapshot(batch: Batch, name: Provider = "openai") -> ProviderBatch:
    counts = batch.request_counts
    total = counts.total if counts else 0
    succeeded = counts.completed if counts else 0
    errored = counts.failed if counts else 0
    rest = max(total - succeeded - errored, 0)
    errors = batch.errors.data or [] if batch.errors else []
    return ProviderBatch(
        provider=name,
        kind="openai",
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
        input_file_id=batch.input_file_id,
        errors=tuple(f"{e.code or 'error'}: {e.message or ''}".strip() for e in errors),
        error_codes=tuple(e.code for e in errors if e.code),
        metadata=tuple(sorted((batch.metadata or {}).items())),
    )


def item_result(line: str) -> ItemResult:
    """One line of an output or error file: `{id, custom_id, response: {status_code, body}, error}`."""
    entry: dict[str, Any] = json.loads(line)
    custom_id = str(entry["custom_id"])
    response = entry.get("response") or {}
    error = entry.get("error")
    status_code = response.get("status_code")
    body = response.get("body")
    if error is None and isinstance(status_code, int) and 200 <= status_code < 300:
        usage = _usage(body.get("usage") if isinstance(body, dict) else None)
        return ItemResult(custom_id, ItemStatus.SUCCEEDED, line, usage=usage)
    if isinstance(error, dict):
        code = str(error.get("code") or "error")
        return ItemResult(
            custom_id,
            _ERROR_CODE_STATUS.get(code, ItemStatus.ERRORED),
            line,
            f"{code}: {error.get('message')}",
        )
    body_error = body.get("error") if isinstance(body, dict) else None
    message = body_error.get("message") if isinstance(body_error, dict) else None
    return ItemResult(
        custom_id, ItemStatus.ERRORED, line, f"HTTP {status_code}: {message or 'request failed'}"
    )


def _usage(raw: Any) -> Usage | None:
    """OpenAI counts cached input inside `prompt_tokens`; ours keeps the two apart."""
    if not isinstance(raw, dict):
        return None
    prompt = _int(raw.get("prompt_tokens"))
    details = raw.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(
        input_tokens=max(prompt - cached, 0),
        output_tokens=_int(raw.get("completion_tokens")),
        cache_read_tokens=cached,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
