"""Sources and files: upload (streamed), status, listing with timeouts applied, delete, search."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from backburner.api.deps import get_file_service, get_organization_id
from backburner.api.fields import Description, Name
from backburner.api.paging import invalid_cursor, page_limit
from backburner.api.upload_stream import MultipartError, stream_file_part
from backburner.db.keyset import InvalidCursor
from backburner.files.blobs import BlobNotFound
from backburner.files.embedding.embedders import EmbeddingError
from backburner.files.embedding.models import UnknownModel
from backburner.files.search.filters import SearchFilter
from backburner.files.search.modes import SearchMode
from backburner.files.search.searcher import SearchHit
from backburner.files.service import FileService, StorageUnavailable, UploadRefused
from backburner.files.states import FileStatus, IllegalTransition
from backburner.files.store.records import (
    DuplicateSource,
    FileNotFound,
    FileRecord,
    SourceNotFound,
    SourceRecord,
    queued_seconds,
)

router = APIRouter(prefix="/v1", tags=["files"])

OrganizationId = Annotated[str, Depends(get_organization_id)]
# Ids are `source-...` and `file-...`; anything else cannot exist, and a NUL would reach the database.
SourceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
FileId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
DEFAULT_PAGE_SIZE = 100
MAX_SEARCH_K = 100
MAX_SEARCH_FILE_IDS = 1000
MAX_FILE_NAME_GLOB = 255
# The blob store is checked every 5 s: a fixed bucket or key counts by then.
STORAGE_RETRY_AFTER_S = 5


Files = Annotated[FileService, Depends(get_file_service)]


# --- bodies -----------------------------------------------------------------------------------


class SourceCreate(BaseModel):
    name: Name
    description: Description | None = None


class SourceOut(BaseModel):
    id: str
    name: str
    description: str | None
    created_at: datetime


class StageSeconds(BaseModel):
    queued: float | None = Field(description="From upload to the first claim by a worker.")
    parse: float | None
    chunk: float | None
    embed: float | None = Field(description="Time spent computing embeddings (batches overlap writes).")
    store: float | None = Field(description="Time spent writing passages.")


class FileOut(BaseModel):
    id: str
    source_id: str
    file_name: str
    content_type: str | None
    size_bytes: int
    sha256: str
    status: FileStatus
    error_message: str | None
    warnings: list[str] = Field(
        description="What the user should know about the processed file, e.g. PDF pages without a "
        "text layer (not searchable)."
    )
    total_chunks: int | None
    chunks_embedded: int
    attempts: int
    embedding_model: str | None
    stage_seconds: StageSeconds
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    replaces: str | None = Field(
        description="The file this one is a new version of: it takes that file's place in search "
        "when it completes (until then only the old file is searched)."
    )


class UploadOut(FileOut):
    duplicate: bool = Field(description="True when the source already held this content: this is that file.")
    unchanged: bool = Field(
        description="True when the file to replace already holds this content: nothing was stored "
        "or processed, this is that file."
    )


class FilePage(BaseModel):
    files: list[FileOut]
    next_cursor: str | None = Field(description="Pass as `after` for the next page; null on the last page.")


class SearchResult(BaseModel):
    score: float = Field(description="The fused score in `hybrid` mode, the mode's own score otherwise.")
    rank: int = Field(description="Position in the results, from 1.")
    vector_score: float | None = Field(description="Cosine similarity; null where vector search missed it.")
    lexical_score: float | None = Field(
        description="Full-text relevance; null where lexical search missed it."
    )
    passage_id: int
    file_id: str
    file_name: str
    chunk_index: int
    text: str


class SearchOut(BaseModel):
    query: str
    mode: SearchMode
    results: list[SearchResult]


def source_out(source: SourceRecord) -> dict[str, Any]:
    return {
        "id": source.id,
        "name": source.name,
        "description": source.description,
        "created_at": source.created_at,
    }


def file_out(file: FileRecord) -> dict[str, Any]:
    # Called for every file of a listing: the stage timings are built here, in place.
    started_at, created_at = file.started_at, file.created_at
    return {
        "id": file.id,
        "source_id": file.source_id,
        "file_name": file.file_name,
        "content_type": file.content_type,
        "size_bytes": file.size_bytes,
        "sha256": file.sha256,
        "status": file.status.value,
        "error_message": file.error_message,
        "warnings": file.warnings or [],
        "total_chunks": file.total_chunks,
        "chunks_embedded": file.chunks_embedded,
        "attempts": file.attempts,
        "embedding_model": file.embedding_model,
        "stage_seconds": {
            "queued": queued_seconds(created_at, started_at),
            "parse": file.parse_seconds,
            "chunk": file.chunk_seconds,
            "embed": file.embed_seconds,
            "store": file.store_seconds,
        },
        "created_at": created_at,
        "updated_at": file.updated_at,
        "started_at": started_at,
        "finished_at": file.finished_at,
        "replaces": file.replaces_file_id,
    }


def _not_found(exc: LookupError) -> HTTPException:
    return HTTPException(404, str(exc))


def _refused(exc: UploadRefused) -> HTTPException:
    """A refused upload's answer; a blob store that does not work says when to try again."""
    headers = {"retry-after": str(STORAGE_RETRY_AFTER_S)} if isinstance(exc, StorageUnavailable) else None
    return HTTPException(exc.status_code, str(exc), headers=headers)


# --- sources ----------------------------------------------------------------------------------


@router.post(
    "/sources",
    status_code=201,
    response_model=SourceOut,
    summary="Create a source of files",
    responses={409: {"description": "The organization has a source of this name already"}},
)
async def create_source(body: SourceCreate, files: Files, organization_id: OrganizationId) -> Any:
    try:
        return source_out(await files.create_source(organization_id, body.name, body.description))
    except DuplicateSource as exc:
        raise HTTPException(409, str(exc)) from None


@router.get(
    "/sources",
    response_model=list[SourceOut],
    summary="List the sources, oldest first, a page at a time",
    responses={400: {"description": "`after` is not the id of a source of this listing"}},
)
async def list_sources(
    files: Files,
    organization_id: OrganizationId,
    limit: int = page_limit(DEFAULT_PAGE_SIZE, "Sources"),
    after: str | None = Query(
        None, description="The id of the last source of the previous page; a shorter page is the last."
    ),
    name: str | None = Query(None, max_length=200, pattern=r"^[^\x00]*$", description="Only this source."),
) -> Any:
    try:
        found = await files.list_sources(organization_id, limit=limit, after=after, name=name)
    except InvalidCursor as exc:
        raise invalid_cursor("after", exc) from None
    return [source_out(source) for source in found]


@router.get("/sources/{source_id}", response_model=SourceOut, summary="One source")
async def get_source(source_id: SourceId, files: Files, organization_id: OrganizationId) -> Any:
    try:
        return source_out(await files.get_source(organization_id, source_id))
    except SourceNotFound as exc:
        raise _not_found(exc) from None


# --- files ------------------------------------------------------------------------------------

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


@router.post(
    "/sources/{source_id}/files",
    status_code=201,
    response_model=UploadOut,
    summary="Upload a file (multipart, field `file`); it is processed in the background",
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {
            "model": UploadOut,
            "description": "The source (or the file to replace) already holds this content: that file",
        },
        400: {"description": "Empty file or malformed body"},
        404: {"description": "No such source, or no file `replaces` names"},
        409: {
            "description": "Duplicate content with `duplicate_handling=error`, a name taken with "
            "`on_conflict=error`, or `replaces` naming a file of another source"
        },
        413: {"description": "Larger than `file_upload_max_bytes`"},
        415: {"description": "Unsupported type, or binary content named as text"},
        503: {"description": "The blob store does not work now (`/readyz` says why); nothing was stored"},
    },
)
async def upload_file(
    source_id: SourceId,
    request: Request,
    response: Response,
    files: Files,
    organization_id: OrganizationId,
    duplicate_handling: Literal["skip", "error", "allow"] = Query(
        "skip",
        description="Same content already in the source: return that file, refuse (409), or store anew. "
        "Not for a new version, whose content is compared with the file it replaces only.",
    ),
    replaces: str | None = Query(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Upload a new version of this file (of the same source). It is processed in "
        "full and takes the file's place in search only when it completes; if it fails, the old "
        "file stays. Content identical to the file's is not processed again (200, `unchanged`).",
    ),
    on_conflict: Literal["allow", "replace", "error"] | None = Query(
        None,
        description="A file of the same name already in the source: keep both (`allow`, the "
        "default), upload a new version of the newest such file (`replace`, as `replaces` does), "
        "or refuse (409, `error`). Not together with `replaces`.",
    ),
) -> Any:
    if replaces is not None and on_conflict is not None:
        raise HTTPException(400, "give either `replaces` or `on_conflict`, not both")
    try:
        part = await stream_file_part(request)
        result = await files.upload(
            organization_id,
            source_id,
            part.file_name,
            part.content_type,
            part.chunks,
            on_duplicate=duplicate_handling,
            replaces=replaces,
            on_conflict=on_conflict or "allow",
        )
    except SourceNotFound as exc:
        raise _not_found(exc) from None
    except MultipartError as exc:
        raise HTTPException(400, str(exc)) from None
    except UploadRefused as exc:
        raise _refused(exc) from None
    if result.duplicate:
        response.status_code = 200
    return {**file_out(result.file), "duplicate": result.duplicate, "unchanged": result.unchanged}


@router.get(
    "/sources/{source_id}/files",
    response_model=FilePage,
    summary="List a source's files, oldest first, a page at a time",
    responses={400: {"description": "`after` is not the id of a file of this listing"}},
)
async def list_files(
    source_id: SourceId,
    files: Files,
    organization_id: OrganizationId,
    limit: int = page_limit(DEFAULT_PAGE_SIZE, "Files"),
    after: str | None = Query(
        None, description="`next_cursor` of the previous page: the id of its last file."
    ),
    check_status_updates: bool = Query(
        False, description="First time out every unfinished file of the source past its deadline."
    ),
) -> Any:
    try:
        page = await files.list_files(
            organization_id, source_id, limit=limit, after=after, check_status_updates=check_status_updates
        )
    except SourceNotFound as exc:
        raise _not_found(exc) from None
    except InvalidCursor as exc:
        raise invalid_cursor("after", exc) from None
    next_cursor = page[-1].id if len(page) == limit else None
    # Serialised directly (datetimes as pydantic writes them): a 10,000-file listing should not
    # pay for validating what the store made.
    body = {"files": [file_out(file) for file in page], "next_cursor": next_cursor}
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")


@router.get("/files/{file_id}", response_model=FileOut, summary="A file's status, progress and stage timings")
async def get_file(file_id: FileId, files: Files, organization_id: OrganizationId) -> Any:
    try:
        return file_out(await files.get_file(organization_id, file_id))
    except FileNotFound as exc:
        raise _not_found(exc) from None


@router.delete(
    "/files/{file_id}", status_code=204, summary="Delete a file: stops its work, removes blob and passages"
)
async def delete_file(file_id: FileId, files: Files, organization_id: OrganizationId) -> Response:
    try:
        await files.delete_file(organization_id, file_id)
    except FileNotFound as exc:
        raise _not_found(exc) from None
    return Response(status_code=204)


@router.post(
    "/files/{file_id}/cancel",
    response_model=FileOut,
    summary="Stop processing a file: it ends in ERROR",
    responses={409: {"description": "The file is finished already (COMPLETED or ERROR)"}},
)
async def cancel_file(file_id: FileId, files: Files, organization_id: OrganizationId) -> Any:
    try:
        return file_out(await files.cancel_file(organization_id, file_id))
    except FileNotFound as exc:
        raise _not_found(exc) from None
    except IllegalTransition as exc:
        raise HTTPException(409, str(exc)) from None


@router.post(
    "/files/{file_id}/retry",
    status_code=201,
    response_model=FileOut,
    summary="Process a file that ended in ERROR again, as a new file of the same source",
    responses={
        409: {"description": "The file is not in ERROR, or its content is gone"},
        413: {"description": "The content is larger than `file_upload_max_bytes` now allows"},
        415: {"description": "The content's type is no longer accepted"},
        503: {"description": "The blob store does not work now (`/readyz` says why)"},
    },
)
async def retry_file(file_id: FileId, files: Files, organization_id: OrganizationId) -> Any:
    try:
        return file_out(await files.retry_file(organization_id, file_id))
    except FileNotFound as exc:
        raise _not_found(exc) from None
    except IllegalTransition as exc:
        raise HTTPException(409, f"only a file in ERROR can be retried: {exc}") from None
    except BlobNotFound:
        raise HTTPException(409, f"the content of file {file_id} is no longer stored") from None
    except UploadRefused as exc:
        raise _refused(exc) from None


# --- search -----------------------------------------------------------------------------------


def search_result(hit: SearchHit) -> dict[str, Any]:
    return {
        "score": hit.score,
        "rank": hit.rank,
        "vector_score": hit.vector_score,
        "lexical_score": hit.lexical_score,
        "passage_id": hit.passage_id,
        "file_id": hit.file_id,
        "file_name": hit.file_name,
        "chunk_index": hit.chunk_index,
        "text": hit.text,
    }


@router.get(
    "/sources/{source_id}/search",
    response_model=SearchOut,
    summary="The k passages best matching the query (vector, lexical, or both fused), best first",
)
async def search(
    source_id: SourceId,
    files: Files,
    organization_id: OrganizationId,
    q: str = Query(min_length=1, max_length=10_000, description="The query text."),
    k: int = Query(10, ge=1, le=MAX_SEARCH_K, description="How many passages."),
    mode: SearchMode = Query(
        SearchMode.HYBRID,
        description="`vector` (cosine similarity of embeddings), `lexical` (the database's full-text "
        "index) or `hybrid` (both, fused by reciprocal rank).",
    ),
    file_ids: list[str] | None = Query(
        None, description="Only these files: repeat the parameter or separate ids with commas."
    ),
    file_name: str | None = Query(
        None,
        max_length=MAX_FILE_NAME_GLOB,
        description="Only files whose name matches this glob: `*` any characters, `?` one.",
    ),
) -> Any:
    search_filter = SearchFilter.of(file_ids, file_name)
    if search_filter.file_ids is not None and len(search_filter.file_ids) > MAX_SEARCH_FILE_IDS:
        raise HTTPException(422, detail=[_too_many_file_ids()])
    try:
        hits = await files.search(organization_id, source_id, q, k, mode=mode, search_filter=search_filter)
    except SourceNotFound as exc:
        raise _not_found(exc) from None
    except EmbeddingError as exc:
        raise HTTPException(502, f"the query could not be embedded: {exc}") from None
    except UnknownModel as exc:  # the source moved to a model this instance's settings cannot build
        raise HTTPException(503, f"the source's embedding model is not available here: {exc}") from None
    return {"query": q, "mode": mode.value, "results": [search_result(hit) for hit in hits]}


def _too_many_file_ids() -> dict[str, Any]:
    return {
        "type": "too_long",
        "loc": ["query", "file_ids"],
        "msg": f"at most {MAX_SEARCH_FILE_IDS} file ids",
    }
