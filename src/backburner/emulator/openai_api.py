"""The OpenAI Files and Batch APIs: routes, batch and file objects."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from backburner.emulator.errors import ProviderError
from backburner.emulator.lifecycle import OPENAI_ENDED, OPENAI_TERMINAL, Timeline, openai_status, timeline
from backburner.emulator.openai_input import parse_input_file
from backburner.emulator.records import BatchRecord, ModelColumn, OpenAIDetails, StoredFile
from backburner.emulator.requests_io import read_json_object
from backburner.emulator.results import OPENAI_BODIES, openai_error_lines, openai_output_lines
from backburner.emulator.state import EmulatorState
from backburner.emulator.store import UnknownCursor, new_id
from backburner.emulator.streaming import JsonlResponse

EXPIRES_AFTER_S = 24 * 3600
COMPLETION_WINDOWS = frozenset({"24h"})


def _opt_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def batch_view(record: BatchRecord, state: EmulatorState, now: float, hide_files: bool) -> dict[str, object]:
    info = record.openai
    assert info is not None
    phases = state.phases
    status = openai_status(record, now, phases)
    line = timeline(record, phases.cancel_after_s)
    ended = status in OPENAI_ENDED
    created = record.created_at
    in_progress_at = min(created + phases.validating_s, line.end_at)
    output_file_id = error_file_id = None
    completed = failed = 0
    if ended:
        counts = record.tally(line.processed, line.rest)
        completed = counts.succeeded
        failed = counts.errored + counts.expired + counts.canceled
        if not hide_files:
            output_file_id = info.output_file_id if completed else None
            error_file_id = info.error_file_id if failed else None
    cancel_at = record.cancel_initiated_at
    return {
        "id": record.id,
        "object": "batch",
        "endpoint": info.endpoint,
        "model": record.models.single,
        "errors": (
            {"object": "list", "data": info.validation_errors} if info.validation_errors is not None else None
        ),
        "input_file_id": info.input_file_id,
        "completion_window": info.completion_window,
        "status": status,
        "output_file_id": output_file_id,
        "error_file_id": error_file_id,
        "created_at": int(created),
        "in_progress_at": int(in_progress_at) if status not in ("validating", "failed") else None,
        "expires_at": int(created + EXPIRES_AFTER_S),
        "finalizing_at": (
            int(max(line.end_at - phases.finalizing_s, in_progress_at))
            if status in ("finalizing", "completed", "expired")
            else None
        ),
        "completed_at": int(line.end_at) if status == "completed" else None,
        "failed_at": int(created) if status == "failed" else None,
        "expired_at": int(line.end_at) if status == "expired" else None,
        "cancelling_at": _opt_int(cancel_at),
        "cancelled_at": int(line.end_at) if status == "cancelled" else None,
        "request_counts": {"total": record.size, "completed": completed, "failed": failed},
        "metadata": info.metadata,
    }


def file_view(file: StoredFile) -> dict[str, object]:
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.size(),
        "created_at": int(file.created_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "expires_at": _opt_int(file.expires_at),
        "status_details": None,
    }


def token_limit_error(model: str, limit: int) -> dict[str, object]:
    return {
        "code": "token_limit_exceeded",
        "message": f"Enqueued token limit reached for {model} in organization org-emulator. Limit: "
        f"{limit:,} enqueued tokens. Please try submitting your requests again later.",
        "param": None,
        "line": None,
    }


def _invalid(message: str, param: str | None = None) -> ProviderError:
    return ProviderError("openai", 400, message, param=param)


def _no_file(file_id: str) -> ProviderError:
    return ProviderError("openai", 404, f"No such File object: {file_id}", param="id")


def _no_batch(batch_id: str) -> ProviderError:
    return ProviderError("openai", 404, f"No batch found with id '{batch_id}'.", param="batch_id")


def openai_router(state: EmulatorState) -> APIRouter:
    router = APIRouter(prefix="/v1")
    gate = state.gate
    store = state.store
    config = state.config

    def found_batch(batch_id: str) -> BatchRecord:
        record = store.batch(batch_id, "openai")
        if record is None:
            raise _no_batch(batch_id)
        return record

    def files_hidden(record: BatchRecord) -> bool:
        return record.retrieves_after_end < record.scenario.output_file_delay_polls

    def result_file_ready(file: StoredFile) -> bool:
        """Result files exist once their batch has ended with at least one line for them, and
        until they expire."""
        if file.expires_at is not None and state.clock() >= file.expires_at:
            return False
        if file.batch_id is None:
            return True
        record = store.batch(file.batch_id, "openai")
        if record is None or record.openai is None:
            return False
        if openai_status(record, state.clock(), state.phases) not in OPENAI_ENDED:
            return False
        line = timeline(record, config.cancel_after_s)
        counts = record.tally(line.processed, line.rest)
        if file.id == record.openai.output_file_id:
            return counts.succeeded > 0
        return counts.errored + counts.expired + counts.canceled > 0

    def found_file(file_id: str) -> StoredFile:
        file = store.file(file_id)
        if file is None or not result_file_ready(file):
            raise _no_file(file_id)
        return file

    @router.post("/files")
    async def create_file(request: Request) -> Response:
        await gate.enter(request, "openai.files.create")
        async with request.form() as form:
            purpose = form.get("purpose")
            upload = form.get("file")
            if purpose != "batch":
                raise _invalid("The emulator accepts only purpose='batch'.", param="purpose")
            if not isinstance(upload, UploadFile):
                raise _invalid("A 'file' part is required.", param="file")
            content = await upload.read()
            filename = upload.filename or "upload.jsonl"
        if len(content) > config.openai_max_bytes:
            raise _invalid(
                f"The file is {len(content)} bytes; a batch input file may be at most "
                f"{config.openai_max_bytes // (1024 * 1024)} MB.",
                param="file",
            )
        file = StoredFile(
            id=new_id("file-", 22),
            filename=filename,
            purpose="batch",
            created_at=state.clock(),
            lines=lambda: io.BytesIO(content),
        )
        store.add_file(file)
        return JSONResponse(file_view(file))

    @router.get("/files/{file_id}")
    async def retrieve_file(file_id: str, request: Request) -> Response:
        await gate.enter(request, "openai.files.retrieve", file_id)
        return JSONResponse(file_view(found_file(file_id)))

    @router.delete("/files/{file_id}")
    async def delete_file(file_id: str, request: Request) -> Response:
        await gate.enter(request, "openai.files.delete", file_id)
        found_file(file_id)
        store.delete_file(file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    @router.get("/files/{file_id}/content")
    async def file_content(file_id: str, request: Request) -> Response:
        await gate.enter(request, "openai.files.content", file_id)
        file = found_file(file_id)
        cut = gate.stream_cut("openai.files.content", file_id)
        return JsonlResponse(file.lines(), cut_after_lines=cut, media_type="application/octet-stream")

    @router.post("/batches")
    async def create_batch(request: Request) -> Response:
        await request.body()  # received before any delay: a client that gives up has still sent it
        await gate.enter(request, "openai.batches.create")
        payload = await read_json_object(request, "openai")
        endpoint = payload.get("endpoint")
        if not isinstance(endpoint, str) or endpoint not in OPENAI_BODIES:
            raise _invalid(f"endpoint must be one of {sorted(OPENAI_BODIES)}.", param="endpoint")
        window = payload.get("completion_window")
        if window not in COMPLETION_WINDOWS:
            raise _invalid("completion_window must be '24h'.", param="completion_window")
        input_file_id = payload.get("input_file_id")
        if not isinstance(input_file_id, str):
            raise _invalid("input_file_id is required.", param="input_file_id")
        metadata = payload.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise _invalid("metadata must be an object of strings.", param="metadata")
        input_file = store.file(input_file_id)
        if input_file is None or input_file.purpose != "batch":
            raise _no_file(input_file_id)
        parsed = parse_input_file(b"".join(input_file.lines()), endpoint, config.openai_max_requests)
        model = parsed.models[0] if parsed.models else ""
        limit = config.openai_enqueued_token_limits.get(model)
        if not parsed.errors and limit is not None:
            enqueued = store.enqueued_tokens(model, lambda r: openai_status(r, state.clock(), state.phases))
            if enqueued + parsed.input_tokens > limit:
                parsed.errors.append(token_limit_error(model, limit))
        failed = bool(parsed.errors)
        record = create_openai_batch(
            state,
            custom_ids=[] if failed else parsed.custom_ids,
            models=ModelColumn([] if failed else parsed.models),
            endpoint=endpoint,
            input_file_id=input_file_id,
            metadata=metadata,
            validation_errors=parsed.errors if failed else None,
            enqueued_tokens=0 if failed else parsed.input_tokens,
        )
        return JSONResponse(batch_view(record, state, state.clock(), hide_files=True))

    @router.get("/batches")
    async def list_batches(request: Request, limit: int = 20, after: str | None = None) -> Response:
        await gate.enter(request, "openai.batches.list")
        if not 1 <= limit <= 100:
            raise _invalid("limit must be between 1 and 100.", param="limit")
        try:
            page = store.page("openai", limit, after_id=after)
        except UnknownCursor as exc:
            raise _invalid(f"Unknown pagination cursor {exc.args[0]!r}.", param="after") from exc
        now = state.clock()
        data = [batch_view(record, state, now, files_hidden(record)) for record in page.records]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": page.has_more,
            }
        )

    @router.get("/batches/{batch_id}")
    async def retrieve_batch(batch_id: str, request: Request) -> Response:
        await gate.enter(request, "openai.batches.retrieve", batch_id)
        record = found_batch(batch_id)
        now = state.clock()
        ended = openai_status(record, now, state.phases) in OPENAI_TERMINAL
        retrieves, retrieves_after_end = store.count_retrieve(record, ended)
        if (
            retrieves < record.scenario.not_found_polls
            or now < record.created_at + record.scenario.not_found_for_s
        ):
            raise _no_batch(batch_id)
        hidden = retrieves_after_end < record.scenario.output_file_delay_polls
        return JSONResponse(batch_view(record, state, now, hide_files=hidden))

    @router.post("/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, request: Request) -> Response:
        await gate.enter(request, "openai.batches.cancel", batch_id)
        record = found_batch(batch_id)
        now = state.clock()
        status = openai_status(record, now, state.phases)
        if status in OPENAI_TERMINAL:
            raise _invalid(f"Cannot cancel a batch with status '{status}'.")
        store.cancel(record, now)
        return JSONResponse(batch_view(record, state, state.clock(), files_hidden(record)))

    return router


def create_openai_batch(
    state: EmulatorState,
    *,
    custom_ids: Sequence[str],
    models: ModelColumn,
    endpoint: str,
    input_file_id: str,
    metadata: dict[str, str] | None,
    validation_errors: list[dict[str, object]] | None = None,
    enqueued_tokens: int = 0,
) -> BatchRecord:
    """Stores a batch and its two result files, whose lines are made from the batch when read."""
    details = OpenAIDetails(
        endpoint=endpoint,
        input_file_id=input_file_id,
        completion_window="24h",
        metadata=metadata,
        output_file_id=new_id("file-", 22),
        error_file_id=new_id("file-", 22),
        validation_errors=validation_errors,
        enqueued_tokens=enqueued_tokens,
    )
    record = state.create_batch("openai", new_id("batch_", 32), custom_ids, models, openai=details)
    cancel_after_s = state.config.cancel_after_s

    def reader(render: Callable[[BatchRecord, Timeline], Iterator[bytes]]) -> Callable[[], Iterable[bytes]]:
        return lambda: render(record, timeline(record, cancel_after_s))

    for file_id, render, kind in (
        (details.output_file_id, openai_output_lines, "output"),
        (details.error_file_id, openai_error_lines, "error"),
    ):
        result_file = StoredFile(
            id=file_id,
            filename=f"{record.id}_{kind}.jsonl",
            purpose="batch_output",
            created_at=record.created_at,
            lines=reader(render),
            batch_id=record.id,
            expires_at=record.created_at + state.config.output_file_retention_s,
        )
        state.store.add_file(result_file)
    return record
