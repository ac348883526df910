"""What the API does with sources and files: upload, read, list, delete, cancel and search.

An upload is checked before anything is stored (name sanitised, a parser for its type, not empty,
text that is really text), streamed to the blob store within the size limit while its SHA-256 is
computed, compared with the source's files by content, and only then recorded as PENDING. A
refused upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from backburner.clock import Clock
from backburner.files.blobs import BlobStore, BlobStoreUnavailable, BlobTooLarge, file_blob_key
from backburner.files.embedding.strategy import Embedding
from backburner.files.metrics import FileMetrics
from backburner.files.names import sanitize_filename
from backburner.files.pipeline.parsers import (
    parse_code,
    parse_csv,
    parse_html,
    parse_json,
    parse_jsonl,
    parse_markdown,
    parse_text,
    parser_for,
)
from backburner.files.search.filters import SearchFilter
from backburner.files.search.modes import SearchMode
from backburner.files.search.searcher import Searcher, SearchHit
from backburner.files.states import TERMINAL, FileStatus, IllegalTransition, is_timed_out
from backburner.files.store import FileStores
from backburner.files.store.records import FileNotFound, FileRecord, NewFile, SourceRecord, TimeoutRule
from backburner.files.textcodec import BinaryContent, decode_text
from backburner.ids import new_id
from backburner.logs import log_event
from backburner.settings import Settings
from backburner.sizes import too_large_message

log = logging.getLogger(__name__)

# Enough of the start of a text upload to tell text from binary content before storing it.
SNIFF_BYTES = 64 * 1024
CONTENT_TYPE_MAX_CHARS = 200
CANCELLED_MESSAGE = "Processing was cancelled."
TEXT_PARSERS = frozenset(
    {parse_text, parse_code, parse_markdown, parse_json, parse_jsonl, parse_csv, parse_html}
)

DuplicateHandling = Literal["skip", "error", "allow"]
# A file of the same name already in the source: keep both, replace it (by a new version), refuse.
NameConflict = Literal["allow", "replace", "error"]


class UploadRefused(Exception):
    """An upload that is refused before anything is stored; `status_code` is its HTTP answer."""

    status_code = 400


class UnsupportedFileType(UploadRefused):
    status_code = 415

    def __init__(self, file_name: str, content_type: str | None) -> None:
        super().__init__(
            f"unsupported file type: {file_name!r} ({content_type or 'no content type'}); "
            "supported are text, source code, Markdown, HTML, PDF, DOCX, JSON and CSV"
        )


class BinaryUpload(UploadRefused):
    status_code = 415

    def __init__(self, file_name: str, reason: str) -> None:
        super().__init__(f"{file_name!r} is named as a text file but its content is not text: {reason}")


class EmptyUpload(UploadRefused):
    def __init__(self, file_name: str) -> None:
        super().__init__(f"{file_name!r} is empty")


class UploadTooLarge(UploadRefused):
    status_code = 413

    def __init__(self, max_bytes: int) -> None:
        super().__init__(too_large_message("the file", "file_upload_max_bytes", max_bytes))


class StorageUnavailable(UploadRefused):
    status_code = 503

    def __init__(self, problem: str) -> None:
        super().__init__(f"uploads are refused until the blob store works again: {problem}")


class DuplicateFile(UploadRefused):
    status_code = 409

    def __init__(self, existing: FileRecord) -> None:
        self.existing = existing
        super().__init__(f"this source already holds the same content as file {existing.id}")


class ReplacedFileNotFound(UploadRefused):
    status_code = 404

    def __init__(self, file_id: str) -> None:
        super().__init__(f"replaces: file {file_id} not found")


class ReplacedFileElsewhere(UploadRefused):
    status_code = 409

    def __init__(self, replaced: FileRecord, source_id: str) -> None:
        super().__init__(
            f"replaces: file {replaced.id} belongs to source {replaced.source_id}, not {source_id}; "
            "a new version is uploaded to its file's source"
        )


class FileNameTaken(UploadRefused):
    status_code = 409

    def __init__(self, existing: FileRecord) -> None:
        self.existing = existing
        super().__init__(
            f"this source already holds a file named {existing.file_name!r} ({existing.id}); "
            "on_conflict=replace uploads a new version of it, on_conflict=allow keeps both"
        )


@dataclass(frozen=True, slots=True)
class Version:
    """What a new version of a file carries: the lineage it joins and the file it replaces."""

    lineage_id: str
    replaces_file_id: str

    @classmethod
    def of(cls, replaced: FileRecord) -> Version:
        return cls(replaced.lineage_id or replaced.id, replaced.id)


@dataclass(frozen=True)
class UploadResult:
    file: FileRecord
    duplicate: bool
    # The file to replace already held this content: nothing was stored, `file` is that file.
    unchanged: bool = False


class FileService:
    def __init__(
        self,
        *,
        settings: Settings,
        stores: FileStores,
        blobs: BlobStore,
        embedding: Embedding,
        searcher: Searcher,
        clock: Clock,
        metrics: FileMetrics,
        on_new_file: Callable[[], None] = lambda: None,
        on_stop_file: Callable[[str], None] = lambda file_id: None,
        storage_problem: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.blobs = blobs
        self.embedding = embedding
        self.searcher = searcher
        self.clock = clock
        self.metrics = metrics
        self._on_new_file = on_new_file
        self._on_stop_file = on_stop_file
        self._storage_problem = storage_problem

    # --- sources --------------------------------------------------------------------------------

    async def create_source(self, organization_id: str, name: str, description: str | None) -> SourceRecord:
        return await self.stores.sources.create(
            organization_id, new_id("source"), name.strip(), description, self.clock.now()
        )

    async def list_sources(
        self,
        organization_id: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        name: str | None = None,
    ) -> list[SourceRecord]:
        return await self.stores.sources.page(organization_id, limit=limit, after=after, name=name)

    async def get_source(self, organization_id: str, source_id: str) -> SourceRecord:
        return await self.stores.sources.get(organization_id, source_id)

    # --- upload -------------------------------------------------------------------------------

    async def upload(
        self,
        organization_id: str,
        source_id: str,
        file_name: str,
        content_type: str | None,
        content: AsyncIterable[bytes],
        *,
        on_duplicate: DuplicateHandling = "skip",
        replaces: str | None = None,
        on_conflict: NameConflict = "allow",
        version: Version | None = None,
    ) -> UploadResult:
        """Store an upload and record it as PENDING; raises an `UploadRefused` when refused.

        An ordinary upload whose content the source already holds (by SHA-256, not counting failed
        files) is, by `on_duplicate`: returned instead (`skip`), refused (`error`) or stored anew
        (`allow`). An upload that replaces a file (`replaces`, or `on_conflict="replace"` and a
        file of the same name) is a new version of it (see `files/store/versions.py`); its content
        is compared with that file's only, and the same content is that file, `unchanged`.
        `version` makes the upload a version without naming a file (a retried version).
        """
        await self.stores.sources.get(organization_id, source_id)
        if (problem := self._storage_problem()) is not None:
            raise StorageUnavailable(problem)
        name = sanitize_filename(file_name)
        media_type = _media_type(content_type)
        parser = parser_for(name, media_type)
        if parser is None:
            raise UnsupportedFileType(name, media_type)
        replaced = await self._file_to_replace(organization_id, source_id, name, replaces, on_conflict)
        if replaced is not None:
            version = Version.of(replaced)
        stream = aiter(content)
        prefix = await _read_prefix(stream, SNIFF_BYTES)
        if not prefix:
            raise EmptyUpload(name)
        if parser in TEXT_PARSERS:
            try:
                decode_text(prefix)
            except BinaryContent as exc:
                raise BinaryUpload(name, str(exc)) from None
        file_id = new_id("file")
        key = file_blob_key(file_id)
        max_bytes = self.settings.file_upload_max_bytes
        try:
            info = await self.blobs.write_stream(key, _prepend(prefix, stream), max_bytes=max_bytes)
        except BlobTooLarge:
            raise UploadTooLarge(max_bytes) from None
        except BlobStoreUnavailable as exc:
            raise StorageUnavailable(str(exc)) from None
        try:
            if replaced is not None and _same_content(replaced, info.sha256):
                await self.blobs.delete(key)
                log_event(log, logging.INFO, "file.unchanged", file_id=replaced.id, source_id=source_id)
                return UploadResult(replaced, duplicate=True, unchanged=True)
            existing = None
            if version is None:
                existing = await self.stores.catalog.find_duplicate(organization_id, source_id, info.sha256)
            if existing is not None and on_duplicate != "allow":
                await self.blobs.delete(key)
                if on_duplicate == "error":
                    raise DuplicateFile(existing)
                log_event(log, logging.INFO, "file.duplicate", file_id=existing.id, source_id=source_id)
                return UploadResult(existing, duplicate=True)
            record = await self.stores.catalog.create(
                NewFile(
                    id=file_id,
                    organization_id=organization_id,
                    source_id=source_id,
                    file_name=name,
                    content_type=media_type,
                    size_bytes=info.size,
                    sha256=info.sha256,
                    blob_key=key,
                    lineage_id=version.lineage_id if version else None,
                    replaces_file_id=version.replaces_file_id if version else None,
                ),
                self.clock.now(),
            )
        except BaseException:
            await asyncio.shield(self._remove_blob(key))
            raise
        log_event(
            log,
            logging.INFO,
            "file.uploaded",
            file_id=file_id,
            source_id=source_id,
            size_bytes=info.size,
            replaces=version.replaces_file_id if version else None,
        )
        self._on_new_file()
        return UploadResult(record, duplicate=False)

    async def _file_to_replace(
        self, organization_id: str, source_id: str, name: str, replaces: str | None, on_conflict: NameConflict
    ) -> FileRecord | None:
        """The file an upload replaces, if any; refuses a file of another source, and a name
        already taken with `on_conflict="error"`."""
        if replaces is not None:
            try:
                replaced = await self.stores.catalog.get(organization_id, replaces)
            except FileNotFound:
                raise ReplacedFileNotFound(replaces) from None
            if replaced.source_id != source_id:
                raise ReplacedFileElsewhere(replaced, source_id)
            return replaced
        if on_conflict == "allow":
            return None
        same_name = await self.stores.catalog.find_by_name(organization_id, source_id, name)
        if same_name is not None and on_conflict == "error":
            raise FileNameTaken(same_name)
        return same_name

    # --- reading ------------------------------------------------------------------------------

    async def get_file(self, organization_id: str, file_id: str) -> FileRecord:
        """The file; one past its deadline is timed out on this read."""
        record = await self.stores.catalog.get(organization_id, file_id)
        now = self.clock.now()
        minutes = self.settings.file_processing_timeout_minutes
        if record.status in TERMINAL or not is_timed_out(record.created_at, now, minutes):
            return record
        timed_out = await self.stores.timeouts.time_out(
            now,
            minutes,
            self.settings.timeout_message(),
            organization_id=organization_id,
            source_id=record.source_id,
        )
        self._timed_out_on_read(timed_out)
        return await self.stores.catalog.get(organization_id, file_id)

    async def list_files(
        self,
        organization_id: str,
        source_id: str,
        *,
        limit: int,
        after: str | None = None,
        check_status_updates: bool = False,
    ) -> list[FileRecord]:
        """A page of the source's files; with `check_status_updates`, every file of the source past
        its deadline is timed out first, in one UPDATE."""
        timeouts = (
            TimeoutRule(
                self.clock.now(),
                self.settings.file_processing_timeout_minutes,
                self.settings.timeout_message(),
            )
            if check_status_updates
            else None
        )
        page = await self.stores.catalog.page(organization_id, source_id, limit, after, timeouts=timeouts)
        self._timed_out_on_read(page.timed_out)
        return page.files

    def _timed_out_on_read(self, file_ids: list[str]) -> None:
        if file_ids:
            self.metrics.timeouts.labels(enforcer="read").inc(len(file_ids))
        for file_id in file_ids:
            log_event(log, logging.WARNING, "file.timed_out", file_id=file_id, enforcer="read")
            self._on_stop_file(file_id)

    # --- removing and cancelling ------------------------------------------------------------

    async def delete_file(self, organization_id: str, file_id: str) -> FileRecord:
        """Remove the file, its passages and its blob; a worker on it stops without writing."""
        record = await self.stores.catalog.delete(organization_id, file_id)
        self._on_stop_file(file_id)
        await self._remove_blob(record.blob_key)
        log_event(log, logging.INFO, "file.deleted", file_id=file_id)
        return record

    async def cancel_file(self, organization_id: str, file_id: str) -> FileRecord:
        """Move an unfinished file to ERROR; `IllegalTransition` when it is finished already."""
        record = await self.stores.leases.fail(
            file_id, CANCELLED_MESSAGE, self.clock.now(), organization_id=organization_id
        )
        self._on_stop_file(file_id)
        log_event(log, logging.INFO, "file.cancelled", file_id=file_id)
        return record

    async def retry_file(self, organization_id: str, file_id: str) -> FileRecord:
        """Process a failed file again as a new file of the same source (ERROR never changes); a
        failed version is retried as a version of the same file."""
        record = await self.stores.catalog.get(organization_id, file_id)
        if record.status is not FileStatus.ERROR:
            raise IllegalTransition(file_id, record.status, FileStatus.PENDING)
        # Closed here whatever happens: a refused upload leaves its source stream unread.
        async with contextlib.aclosing(self.blobs.open(record.blob_key)) as content:
            result = await self.upload(
                organization_id,
                record.source_id,
                record.file_name,
                record.content_type,
                content,
                on_duplicate="allow",
                version=_version_of_failed(record),
            )
        log_event(log, logging.INFO, "file.retried", file_id=file_id, new_file_id=result.file.id)
        return result.file

    async def _remove_blob(self, key: str) -> None:
        try:
            await self.blobs.delete(key)
        except Exception as exc:  # an orphan blob wastes space but harms nobody
            log_event(log, logging.WARNING, "file.blob_delete_failed", blob_key=key, error=repr(exc))

    # --- search -------------------------------------------------------------------------------

    async def search(
        self,
        organization_id: str,
        source_id: str,
        query: str,
        k: int,
        *,
        mode: SearchMode = SearchMode.HYBRID,
        search_filter: SearchFilter | None = None,
    ) -> list[SearchHit]:
        """The `k` passages of the source best matching `query`, best first (see `files/search`)."""
        source = await self.stores.sources.get(organization_id, source_id)
        return await self.searcher.search(source, query, k, mode, search_filter)


def _same_content(replaced: FileRecord, sha256: str) -> bool:
    """Whether the replaced file holds this content already (a failed one is processed anew)."""
    return replaced.sha256 == sha256 and replaced.status is not FileStatus.ERROR


def _version_of_failed(failed: FileRecord) -> Version | None:
    if failed.replaces_file_id is None:
        return None
    return Version(failed.lineage_id or failed.id, failed.replaces_file_id)


_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


def _media_type(content_type: str | None) -> str | None:
    """`type/subtype` of a client's content type, or None when it is not one (nothing odd is stored)."""
    if not content_type:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    if len(media_type) > CONTENT_TYPE_MAX_CHARS or not _MEDIA_TYPE.fullmatch(media_type):
        return None
    return media_type


async def _read_prefix(stream: AsyncIterator[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while total < size:
        try:
            chunk = await anext(stream)
        except StopAsyncIteration:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


async def _prepend(prefix: bytes, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield prefix
    async for chunk in stream:
        yield chunk
