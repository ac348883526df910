"""The Anthropic Message Batches API: routes, batch objects and request validation."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from backburner.emulator.clock import rfc3339
from backburner.emulator.errors import ProviderError
from backburner.emulator.lifecycle import anthropic_status, timeline
from backburner.emulator.records import BatchRecord, ModelColumn
from backburner.emulator.requests_io import base_url, read_json_object
from backburner.emulator.results import anthropic_result_lines
from backburner.emulator.state import EmulatorState
from backburner.emulator.store import UnknownCursor, new_id
from backburner.emulator.streaming import JsonlResponse

EXPIRES_AFTER_S = 24 * 3600
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def batch_view(record: BatchRecord, state: EmulatorState, now: float, base: str) -> dict[str, object]:
    line = timeline(record, state.config.cancel_after_s)
    status = anthropic_status(record, now, state.config.cancel_after_s)
    ended = status == "ended"
    if ended:
        counts = record.tally(line.processed, line.rest)
        request_counts = {
            "processing": 0,
            "succeeded": counts.succeeded,
            "errored": counts.errored,
            "canceled": counts.canceled,
            "expired": counts.expired,
        }
    else:
        request_counts = {
            "processing": record.size,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
    cancel_at = record.cancel_initiated_at
    archived_at = record.created_at + state.config.results_retention_s
    archived = ended and now >= archived_at
    return {
        "id": record.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": request_counts,
        "created_at": rfc3339(record.created_at),
        "expires_at": rfc3339(record.created_at + EXPIRES_AFTER_S),
        "ended_at": rfc3339(line.end_at) if ended else None,
        "cancel_initiated_at": rfc3339(cancel_at) if cancel_at is not None else None,
        "archived_at": rfc3339(archived_at) if archived else None,
        "results_url": f"{base}/v1/messages/batches/{record.id}/results" if ended and not archived else None,
    }


def parse_requests(payload: dict[str, object], max_requests: int) -> tuple[list[str], ModelColumn]:
    """Checks a create body as the API does, returning the custom ids and models to keep."""
    requests = payload.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _invalid("requests: must be a non-empty list")
    if len(requests) > max_requests:
        raise _invalid(f"requests: at most {max_requests} requests per batch, got {len(requests)}")
    custom_ids: list[str] = []
    models: list[str] = []
    seen: set[str] = set()
    for position, item in enumerate(requests):
        where = f"requests.{position}"
        if not isinstance(item, dict):
            raise _invalid(f"{where}: must be an object")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise _invalid(f"{where}.custom_id: must be 1 to 64 characters of letters, digits, _ and -")
        if custom_id in seen:
            raise _invalid(f"{where}.custom_id: duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        params = item.get("params")
        if not isinstance(params, dict):
            raise _invalid(f"{where}.params: must be an object")
        model = params.get("model")
        if not isinstance(model, str) or not model:
            raise _invalid(f"{where}.params.model: Field required")
        if not isinstance(params.get("max_tokens"), int):
            raise _invalid(f"{where}.params.max_tokens: Field required")
        if not isinstance(params.get("messages"), list):
            raise _invalid(f"{where}.params.messages: Field required")
        custom_ids.append(custom_id)
        models.append(model)
    return custom_ids, ModelColumn(models)


def _invalid(message: str) -> ProviderError:
    return ProviderError("anthropic", 400, message)


def _not_found(batch_id: str) -> ProviderError:
    return ProviderError("anthropic", 404, f"No message batch with id {batch_id!r}.")


def anthropic_router(state: EmulatorState) -> APIRouter:
    router = APIRouter(prefix="/v1/messages/batches")
    gate = state.gate
    store = state.store
    config = state.config

    def found(batch_id: str) -> BatchRecord:
        record = store.batch(batch_id, "anthropic")
        if record is None:
            raise _not_found(batch_id)
        return record

    def view(record: BatchRecord, request: Request) -> dict[str, object]:
        return batch_view(record, state, state.clock(), base_url(request, config.public_base_url))

    @router.post("")
    async def create_batch(request: Request) -> Response:
        await request.body()  # received before any delay: a client that gives up has still sent it
        await gate.enter(request, "anthropic.batches.create")
        payload = await read_json_object(request, "anthropic", config.anthropic_max_bytes)
        custom_ids, models = parse_requests(payload, config.anthropic_max_requests)
        record = state.create_batch("anthropic", new_id("msgbatch_"), custom_ids, models)
        return JSONResponse(view(record, request))

    @router.get("")
    async def list_batches(
        request: Request, limit: int = 20, after_id: str | None = None, before_id: str | None = None
    ) -> Response:
        await gate.enter(request, "anthropic.batches.list")
        if not 1 <= limit <= 1000:
            raise _invalid("limit: must be between 1 and 1000")
        if after_id is not None and before_id is not None:
            raise _invalid("after_id and before_id cannot both be given")
        try:
            page = store.page("anthropic", limit, after_id=after_id, before_id=before_id)
        except UnknownCursor as exc:
            raise _invalid(f"Unknown pagination cursor {exc.args[0]!r}") from exc
        data = [view(record, request) for record in page.records]
        return JSONResponse(
            {
                "data": data,
                "has_more": page.has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    @router.get("/{batch_id}")
    async def retrieve_batch(batch_id: str, request: Request) -> Response:
        await gate.enter(request, "anthropic.batches.retrieve", batch_id)
        record = found(batch_id)
        now = state.clock()
        ended = anthropic_status(record, now, config.cancel_after_s) == "ended"
        retrieves, _ = store.count_retrieve(record, ended)
        if (
            retrieves < record.scenario.not_found_polls
            or now < record.created_at + record.scenario.not_found_for_s
        ):
            raise _not_found(batch_id)
        return JSONResponse(view(record, request))

    @router.post("/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, request: Request) -> Response:
        await gate.enter(request, "anthropic.batches.cancel", batch_id)
        record = found(batch_id)
        if anthropic_status(record, state.clock(), config.cancel_after_s) == "ended":
            raise _invalid(f"Message batch {batch_id!r} has already ended and cannot be canceled.")
        store.cancel(record, state.clock())
        return JSONResponse(view(record, request))

    @router.delete("/{batch_id}")
    async def delete_batch(batch_id: str, request: Request) -> Response:
        await gate.enter(request, "anthropic.batches.delete", batch_id)
        record = found(batch_id)
        if anthropic_status(record, state.clock(), config.cancel_after_s) != "ended":
            raise _invalid(
                f"Message batch {batch_id!r} is still processing; cancel it and wait for it to end first."
            )
        store.delete_batch(record)
        return JSONResponse({"id": batch_id, "type": "message_batch_deleted"})

    @router.get("/{batch_id}/results")
    async def batch_results(batch_id: str, request: Request) -> Response:
        await gate.enter(request, "anthropic.batches.results", batch_id)
        record = found(batch_id)
        now = state.clock()
        if anthropic_status(record, now, config.cancel_after_s) != "ended":
            raise _invalid(f"Message batch {batch_id!r} has not ended yet; its results are not available.")
        if now >= record.created_at + config.results_retention_s:
            raise ProviderError(
                "anthropic",
                404,
                f"Message batch {batch_id!r} has been archived; its results are no longer available.",
            )
        cut = gate.stream_cut("anthropic.batches.results", batch_id)
        lines = anthropic_result_lines(record, timeline(record, config.cancel_after_s))
        return JsonlResponse(lines, cut_after_lines=cut, media_type="application/binary")

    return router
