"""The batch-provider boundary: what the service and the poller need from a provider."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from backburner.batches.domain import ItemResult, Provider, ProviderBatch, ProviderKind
from backburner.retry_after import retry_after_s

MAX_RETRY_AFTER_S = 24 * 3600.0


class ProviderError(Exception):
    """A provider request that failed: an HTTP status, a dropped connection or a timeout.

    `status_code` is None when no answer came. `retry_after_s` is the provider's `retry-after`.
    `definitive` is True when the provider answered that it did not do what was asked (a 4xx or
    5xx answer); False when the outcome is unknown (the request may have been applied).
    """

    def __init__(
        self,
        provider: Provider,
        message: str,
        *,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        sent: bool = True,
        base_url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.message = message
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.sent = sent  # False: the connection was refused, nothing reached the provider
        self.base_url = base_url

    @property
    def definitive(self) -> bool:
        return self.status_code is not None

    @property
    def label(self) -> str:
        """The status code as a metric label; `connection` when nothing answered."""
        return str(self.status_code) if self.status_code is not None else "connection"

    def __str__(self) -> str:
        code = f"HTTP {self.status_code}" if self.status_code is not None else "no answer"
        return f"{self.provider} {code}: {self.message}"


class BatchProvider(Protocol):
    name: Provider
    kind: ProviderKind

    async def create(self, *, batch_id: str, body: bytes) -> ProviderBatch:
        """Submit a batch whose requests `body` holds in the provider's own encoding
        (`encoding.assemble`); `batch_id` is ours, given to the provider where it keeps metadata."""
        ...

    async def retrieve(self, provider_batch_id: str) -> ProviderBatch: ...

    async def cancel(self, provider_batch_id: str) -> ProviderBatch: ...

    def results(self, snapshot: ProviderBatch) -> AsyncIterator[ItemResult]:
        """Stream the item results of an ended batch; raises `ProviderError` if the stream breaks."""
        ...

    def list_recent(self, created_after: datetime) -> AsyncGenerator[ProviderBatch, None]:
        """Every batch of the account, newest first, down to `created_after` (one request per page)."""
        ...

    async def find_submission(
        self, batch_id: str, created_after: datetime, request_count: int
    ) -> list[ProviderBatch]:
        """The provider's batches that our submission `batch_id` may have created: OpenAI's carry
        our id in their metadata; Anthropic's are matched by their requests (count and time)."""
        ...

    async def delete_resources(self, provider_batch_id: str, file_ids: Sequence[str]) -> None:
        """Delete what an ended batch left at the provider (OpenAI's files, Anthropic's batch and
        results); what is already gone counts as deleted."""
        ...

    async def aclose(self) -> None: ...


def parse_retry_after(headers: Mapping[str, str], now_s: float | None = None) -> float | None:
    """The server's `retry-after-ms` or `retry-after`, within [0, MAX_RETRY_AFTER_S]."""
    seconds = retry_after_s(headers, now_s)
    return None if seconds is None else _bounded(seconds)


def _bounded(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
