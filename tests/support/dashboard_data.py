"""Bulk rows for the dashboard's tests and benchmark: many files and batches in every state.

Rows are written directly, as a long-running deployment would have accumulated them; batches
are given far-future poll times so that no poller contacts a provider about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.batches.tables import llm_batches
from backburner.db.tables import DEFAULT_ORGANIZATION_ID
from backburner.files.tables import files, sources

FILE_STATUSES = ("completed", "error", "embedding", "parsing", "pending")
BATCH_STATUSES = ("running", "completed", "failed", "cancelled")
CHUNK = 2000


@dataclass(frozen=True)
class Seeded:
    source_id: str
    in_progress_file_id: str
    error_file_id: str
    running_batch_id: str


async def seed(
    engine: AsyncEngine, *, n_files: int, n_batches: int, organization_id: str = DEFAULT_ORGANIZATION_ID
) -> Seeded:
    now = datetime.now(UTC)
    far = now + timedelta(days=365)
    source_id = "source-seeded"
    file_rows = []
    for i in range(n_files):
        status = FILE_STATUSES[i % len(FILE_STATUSES)]
        in_progress = status in ("embedding", "parsing")
        file_rows.append(
            {
                "id": f"file-seeded-{i:06d}",
                "organization_id": organization_id,
                "source_id": source_id,
                "file_name": f"document-{i:06d}.md",
                "content_type": "text/markdown",
                "size_bytes": 1000 + i,
                "sha256": f"{i:064x}",
                "blob_key": f"files/file-seeded-{i:06d}",
                "status": status,
                "error_message": f"parse failed: corrupt section {i}" if status == "error" else None,
                "attempts": 1,
                # A lease far in the future: no worker takes these over during a test.
                "lease_owner": "seed-worker" if in_progress else None,
                "lease_expires_at": far if in_progress else None,
                "heartbeat_at": now if in_progress else None,
                "last_progress_at": now,
                "total_chunks": 40 if status != "pending" else None,
                "chunks_embedded": 40 if status == "completed" else (i % 40 if status == "embedding" else 0),
                "created_at": now - timedelta(seconds=n_files - i),
                "updated_at": now - timedelta(seconds=n_files - i),
                "started_at": now if status != "pending" else None,
            }
        )
    batch_rows = [
        {
            "id": f"batch-seeded-{i:05d}",
            "organization_id": organization_id,
            "provider": ("anthropic", "openai")[i % 2],
            "model": "seed-model",
            "status": BATCH_STATUSES[i % len(BATCH_STATUSES)],
            "idempotency_key": f"seed-{i}",
            "request_count": 10,
            "provider_batch_id": f"seeded-{i}",
            "created_at": now - timedelta(seconds=n_batches - i),
            "updated_at": now,
            "last_polled_at": now,
            "next_poll_at": far,
            "consecutive_errors": 0,
        }
        for i in range(n_batches)
    ]
    async with engine.begin() as conn:
        await conn.execute(
            insert(sources).values(
                id=source_id, organization_id=organization_id, name="seeded", description=None, created_at=now
            )
        )
        for start in range(0, len(file_rows), CHUNK):
            await conn.execute(insert(files), file_rows[start : start + CHUNK])
        for start in range(0, len(batch_rows), CHUNK):
            await conn.execute(insert(llm_batches), batch_rows[start : start + CHUNK])
    return Seeded(
        source_id=source_id,
        in_progress_file_id=file_rows[2]["id"] if n_files > 2 else "",
        error_file_id=file_rows[1]["id"] if n_files > 1 else "",
        running_batch_id=batch_rows[0]["id"] if batch_rows else "",
    )
