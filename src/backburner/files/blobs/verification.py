"""`backburner blobs verify`: every file's blob read back and checked against its SHA-256."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

from backburner.files.blobs.base import BlobNotFound, BlobStore
from backburner.files.blobs.references import BlobReference, BlobReferences

# Called with the bytes just read (or accounted for: a missing blob counts its whole size), so
# that a progress bar over the files' total size ends full.
ProgressCallback = Callable[[int], None]
ProblemKind = Literal["missing", "corrupt"]


def _ignore(_: int) -> None:
    return None


@dataclass(frozen=True)
class BlobProblem:
    file_id: str
    organization_id: str
    file_name: str
    key: str
    problem: ProblemKind
    detail: str

    @classmethod
    def of(cls, ref: BlobReference, problem: ProblemKind, detail: str) -> BlobProblem:
        return cls(ref.file_id, ref.organization_id, ref.file_name, ref.key, problem, detail)


@dataclass
class VerifyReport:
    store: str
    checked: int = 0
    bytes_read: int = 0
    problems: list[BlobProblem] = field(default_factory=list)


class ProgressMeter:
    """Reports the bytes of one blob as they pass, then tops up to its recorded size."""

    def __init__(self, ref: BlobReference, progress: ProgressCallback) -> None:
        self.ref = ref
        self.progress = progress
        self.seen = 0

    async def counted(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.seen += len(chunk)
            self.progress(len(chunk))
            yield chunk

    def done(self) -> None:
        if self.seen < self.ref.size_bytes:
            self.progress(self.ref.size_bytes - self.seen)


async def check_blob(
    store: BlobStore, ref: BlobReference, progress: ProgressCallback = _ignore
) -> BlobProblem | None:
    """Read the file's blob whole (as a stream) and compare it with its recorded size and hash."""
    meter = ProgressMeter(ref, progress)
    digest = hashlib.sha256()
    try:
        async for chunk in meter.counted(store.open(ref.key)):
            digest.update(chunk)
    except BlobNotFound:
        return BlobProblem.of(ref, "missing", f"no blob under {store.describe(ref.key)}")
    finally:
        meter.done()
    if meter.seen != ref.size_bytes or digest.hexdigest() != ref.sha256:
        return BlobProblem.of(
            ref,
            "corrupt",
            f"{meter.seen} bytes with SHA-256 {digest.hexdigest()}, "
            f"recorded {ref.size_bytes} bytes with SHA-256 {ref.sha256}",
        )
    return None


async def verify_blobs(
    store: BlobStore, references: BlobReferences, progress: ProgressCallback = _ignore
) -> VerifyReport:
    report = VerifyReport(store.name)
    async for page in references.pages():
        for ref in page:
            problem = await check_blob(store, ref, progress)
            report.checked += 1
            report.bytes_read += ref.size_bytes
            if problem is not None:
                report.problems.append(problem)
    return report
