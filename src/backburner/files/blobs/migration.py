"""`backburner blobs migrate --to database|s3`: every file's blob copied to another store.

Resumable and idempotent: a blob the target already holds with the file's size and SHA-256 is
skipped, and every copy is checked against the file's SHA-256 as it streams (a copy that does
not match is refused by the target and reported, never stored). Interrupted at any point, the
next run copies only what is left; each copy is whole or absent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from backburner.files.blobs.base import BlobChecksumMismatch, BlobNotFound, BlobStore
from backburner.files.blobs.references import BlobReference, BlobReferences
from backburner.files.blobs.verification import BlobProblem, ProgressCallback, ProgressMeter
from backburner.tasks import cancel_and_wait

DEFAULT_CONCURRENCY = 4


@dataclass
class MigrationReport:
    source: str
    target: str
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    problems: list[BlobProblem] = field(default_factory=list)


async def migrate_blobs(
    source: BlobStore,
    target: BlobStore,
    references: BlobReferences,
    progress: ProgressCallback = lambda _: None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> MigrationReport:
    report = MigrationReport(source.name, target.name)
    slots = asyncio.Semaphore(concurrency)

    async def one(ref: BlobReference) -> None:
        async with slots:
            await _copy_one(source, target, ref, progress, report)

    async for page in references.pages():
        tasks = [asyncio.create_task(one(ref), name=f"blobs.migrate:{ref.key}") for ref in page]
        try:
            await asyncio.gather(*tasks)
        finally:
            # The first failure (or an interruption) stops the run; copies under way are
            # cancelled, which leaves each one whole or absent.
            await cancel_and_wait(*tasks)
    return report


async def _copy_one(
    source: BlobStore,
    target: BlobStore,
    ref: BlobReference,
    progress: ProgressCallback,
    report: MigrationReport,
) -> None:
    meter = ProgressMeter(ref, progress)
    try:
        present = await target.stat(ref.key)
        if present is not None and (present.size, present.sha256) == (ref.size_bytes, ref.sha256):
            report.skipped += 1
            return
        await target.write_stream(ref.key, meter.counted(source.open(ref.key)), expected_sha256=ref.sha256)
        report.copied += 1
        report.bytes_copied += ref.size_bytes
    except BlobNotFound:
        report.problems.append(BlobProblem.of(ref, "missing", f"no blob under {source.describe(ref.key)}"))
    except BlobChecksumMismatch as exc:
        report.problems.append(
            BlobProblem.of(
                ref,
                "corrupt",
                f"not copied: the {source.name} store holds SHA-256 {exc.actual}, recorded {ref.sha256}",
            )
        )
    finally:
        meter.done()
