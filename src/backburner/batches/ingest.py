"""Streaming one ended batch's item results into the database, in fenced chunks.

Memory holds one chunk at a time. Every chunk is an upsert by (batch, custom id), so a stream
cut at any point is simply read again from the start next cycle: rows already stored are
rewritten with the same values, nothing is lost and nothing is stored twice. A batch (or a part
of a split batch) becomes terminal only in the transaction after the last chunk, where custom
ids that never appeared are marked `missing` (`expired` when the batch expired).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from backburner.batches.dispatch import Transaction
from backburner.batches.domain import Batch, BatchStatus, ItemResult, ProviderBatch
from backburner.batches.providers.base import BatchProvider
from backburner.batches.store import begin_ingesting, finish_batch, upsert_items
from backburner.clock import Clock
from backburner.leader.base import Leadership


class Ingestor:
    def __init__(
        self,
        clock: Clock,
        chunk_size: int,
        channels: Callable[[], Sequence[str]],
        new_delivery_id: Callable[[], str],
        on_chunk: Callable[[str, int], None] = lambda provider, n: None,
    ) -> None:
        self._clock = clock
        self._chunk_size = chunk_size
        self._channels = channels
        self._new_delivery_id = new_delivery_id
        self._on_chunk = on_chunk

    async def ingest(
        self,
        leadership: Leadership,
        batch: Batch,
        snapshot: ProviderBatch,
        provider: BatchProvider,
        target: BatchStatus,
    ) -> tuple[int, bool]:
        """Store every result, then make the batch `target`. Returns (items stored, finished).

        Raises `ProviderError` when the stream breaks; the batch then stays `ingesting`.
        """
        async with leadership.fenced() as conn:
            if not await begin_ingesting(conn, batch.id, snapshot, self._clock.now()):
                return 0, False  # finished or failed by someone else meanwhile
        stored = 0
        chunk: list[ItemResult] = []
        async for item in provider.results(snapshot):
            chunk.append(item)
            if len(chunk) >= self._chunk_size:
                stored += await self._write(leadership, batch, chunk)
                chunk = []
        if chunk:
            stored += await self._write(leadership, batch, chunk)
        finished = await self.finish(leadership, batch.id, target)
        return stored, finished

    async def _write(self, leadership: Leadership, batch: Batch, chunk: list[ItemResult]) -> int:
        async with leadership.fenced() as conn:
            written = await upsert_items(
                conn, batch.organization_id, batch.items_batch_id, chunk, self._clock.now()
            )
        self._on_chunk(batch.provider, written)
        return written

    async def finish(
        self, leadership: Leadership, batch_id: str, status: BatchStatus, reason: str | None = None
    ) -> bool:
        """Make a batch terminal and queue its completion deliveries, atomically."""
        return await self.finish_in(leadership.fenced, batch_id, status, reason)

    async def finish_in(
        self,
        transaction: Transaction,
        batch_id: str,
        status: BatchStatus,
        reason: str | None = None,
        unsent: bool = False,
    ) -> bool:
        """`finish` in any transaction (the API cancels a batch never sent in its own)."""
        channels = tuple(self._channels())
        async with transaction() as conn:
            return await finish_batch(
                conn,
                batch_id,
                status,
                self._clock.now(),
                reason=reason,
                channels=channels,
                delivery_ids=[self._new_delivery_id() for _ in channels],
                unsent=unsent,
            )
