"""The rows of file processing as values, and the errors its stores raise."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row

from backburner.files.states import FileStatus
from backburner.files.tables import files

_STATUS_BY_VALUE = {status.value: status for status in FileStatus}


class FileNotFound(LookupError):
    def __init__(self, file_id: str) -> None:
        self.file_id = file_id
        super().__init__(f"file {file_id} not found")

    def __reduce__(self) -> tuple[type[FileNotFound], tuple[str]]:  # it crosses from pool processes
        return FileNotFound, (self.file_id,)


class SourceNotFound(LookupError):
    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        super().__init__(f"source {source_id} not found")


class DuplicateSource(ValueError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a source named {name!r} already exists")


class SourceModelChanged(Exception):
    """The source switched embedding models while a file was starting to embed: choose again."""

    def __init__(self, source_id: str) -> None:
        super().__init__(f"source {source_id} switched embedding models")


@dataclass(frozen=True, slots=True)
class SourceModel:
    """A source's `embedding_model` as read (None: the deployment's configured model)."""

    name: str | None


class LeaseLost(Exception):
    """The worker no longer holds the file: reclaimed, finished elsewhere, timed out or deleted."""

    def __init__(self, file_id: str, owner: str) -> None:
        self.file_id = file_id
        self.owner = owner
        super().__init__(f"file {file_id}: lease {owner} is no longer held")

    def __reduce__(self) -> tuple[type[LeaseLost], tuple[str, str]]:  # it crosses from pool processes
        return LeaseLost, (self.file_id, self.owner)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    id: str
    organization_id: str
    name: str
    description: str | None
    created_at: datetime
    # Bumped with every write or delete of the source's passages.
    passages_version: int = 0
    # The model whose vectors search compares; None: the deployment's configured model.
    embedding_model: str | None = None
    # How many times re-embedding switched `embedding_model`.
    model_switches: int = 0


def queued_seconds(created_at: datetime, started_at: datetime | None) -> float | None:
    """From upload to the first claim; None before it."""
    if started_at is None:
        return None
    # A claim's `now` is read before its transaction waits for the insert's: clamp at zero.
    return max(0.0, (started_at - created_at).total_seconds())


@dataclass(slots=True)  # not frozen: a frozen dataclass is ten times slower to build, and
class FileRecord:  # listings build thousands; treat it as a value all the same
    id: str
    organization_id: str
    source_id: str
    file_name: str
    content_type: str | None
    size_bytes: int
    sha256: str
    blob_key: str
    status: FileStatus
    error_message: str | None
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    last_progress_at: datetime | None
    total_chunks: int | None
    chunks_embedded: int
    embedding_model: str | None
    parse_seconds: float | None
    chunk_seconds: float | None
    embed_seconds: float | None
    store_seconds: float | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    warnings: list[str] | None
    lineage_id: str | None  # None only on rows written before versions existed
    replaces_file_id: str | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> FileRecord:
        """From a row (or a driver record) of `FILE_COLUMNS`, which are in field order."""
        record = cls(*cast("tuple[Any, ...]", row))
        record.status = _STATUS_BY_VALUE[record.status]  # a dict beats calling the enum
        return record


FILE_COLUMNS = tuple(files.c[f.name] for f in fields(FileRecord))


@dataclass(frozen=True, slots=True)
class NewFile:
    id: str
    organization_id: str
    source_id: str
    file_name: str
    content_type: str | None
    size_bytes: int
    sha256: str
    blob_key: str
    lineage_id: str | None = None  # a version joins the lineage of the file it replaces
    replaces_file_id: str | None = None


@dataclass(frozen=True, slots=True)
class TimeoutRule:
    """When an unfinished file has run out of time, and what its error then says."""

    now: datetime
    minutes: float
    message: str


@dataclass(frozen=True, slots=True)
class FilePage:
    files: list[FileRecord]
    timed_out: list[str]  # ids of the files this read moved to ERROR


@dataclass(frozen=True, slots=True)
class Lease:
    """One claim of one file; `owner` is unique per claim."""

    file_id: str
    owner: str


@dataclass(frozen=True, slots=True)
class PassageRow:
    chunk_index: int
    text: str
    embedding: bytes


@dataclass(frozen=True, slots=True)
class PassageHit:
    passage_id: int
    file_id: str
    file_name: str
    chunk_index: int
    text: str
