"""LLM batch routes: submit, list, show, results (streamed JSONL), cancel; and the admin view."""

from __future__ import annotations

import math
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from backburner.api.batch_models import (
    BATCH_ID_PATTERN,
    RESULTS_CONTENT,
    BatchJobs,
    BatchOut,
    BatchPage,
    BatchProblem,
)
from backburner.api.deps import get_batches, get_organization_id, get_principal
from backburner.api.paging import invalid_cursor, page_limit
from backburner.auth.principal import Principal
from backburner.batches.component import BatchesComponent
from backburner.batches.cost import usage_view
from backburner.batches.diagnostics import counts_by_provider, cycle_view, running_view
from backburner.batches.domain import POLLED_STATUSES, Batch, BatchStatus
from backburner.batches.intake import JSONL_TYPES, SpooledBody
from backburner.batches.providers.base import ProviderError
from backburner.batches.providers.registry import ProviderNotConfigured
from backburner.batches.service import (
    BatchConflict,
    BatchNotFound,
    ProviderUnreachable,
    ResultsRemoved,
    SubmitFailed,
    SubmitOutcome,
    SubmitUncertain,
)
from backburner.batches.validation import Submission, SubmissionError
from backburner.clock import iso_or_none
from backburner.db.keyset import InvalidCursor

router = APIRouter(tags=["batches"])
admin_router = APIRouter(tags=["admin"])

DEFAULT_PAGE_SIZE = 50
UNREACHABLE_RETRY_AFTER_S = 30
ADMIN_RUNNING_LIMIT = 1000
# Provider answers that mean the caller's input was refused (not our credentials or the provider).
REFUSED_INPUT_STATUSES = frozenset({400, 404, 413, 422})
BatchId = Path(pattern=BATCH_ID_PATTERN)

_SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["provider", "model", "requests"],
                    "additionalProperties": False,
                    "properties": {
                        "provider": {
                            "type": "string",
                            "description": "`anthropic`, `openai` or a name from `providers:`",
                        },
                        "model": {"type": "string", "minLength": 1, "maxLength": 200},
                        "requests": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["custom_id", "params"],
                                "additionalProperties": False,
                                "properties": {
                                    "custom_id": {"type": "string", "minLength": 1, "maxLength": 512},
                                    "params": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            },
            "application/jsonl": {
                "schema": {
                    "type": "string",
                    "description": "One {custom_id, params} object per line; `provider` and `model` "
                    "in the query.",
                }
            },
        },
    }
}


class _Problem(Exception):
    def __init__(
        self, status_code: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"detail": self.detail, **self.extra}, status_code=self.status_code, headers=self.headers
        )


def batch_view(
    batch: Batch, parts: list[Batch] | None = None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A batch as the API shows it; `parts` when it was split, `usage` when it was read."""
    return {
        "id": batch.id,
        "provider": batch.provider,
        "model": batch.model,
        "status": batch.status.value,
        "provider_batch_id": batch.provider_batch_id,
        "provider_status": batch.provider_status,
        "request_count": batch.request_count,
        "counts": {
            "succeeded": batch.succeeded_count,
            "errored": batch.errored_count,
            "canceled": batch.canceled_count,
            "expired": batch.expired_count,
            "missing": batch.missing_count,
        },
        "failure_reason": batch.failure_reason,
        "created_at": iso_or_none(batch.created_at),
        "submitted_at": iso_or_none(batch.submitted_at),
        "ended_at": iso_or_none(batch.ended_at),
        "cancel_requested_at": iso_or_none(batch.cancel_requested_at),
        "last_polled_at": iso_or_none(batch.last_polled_at),
        "next_poll_at": iso_or_none(batch.next_poll_at),
        "consecutive_errors": batch.consecutive_errors,
        "last_error": batch.last_error,
        "resubmitted_from": batch.resubmitted_from,
        "results_removed_at": iso_or_none(batch.results_removed_at),
        "estimated_tokens": sum(p.estimated_tokens for p in parts) if parts else batch.estimated_tokens,
        "part_count": batch.part_count,
        "parts": [part_view(p) for p in parts] if parts else [],
        "usage": usage,
    }


def part_view(part: Batch) -> dict[str, Any]:
    return {
        "index": part.part_index,
        "status": part.status.value,
        "request_count": part.request_count,
        "provider_batch_id": part.provider_batch_id,
        "provider_status": part.provider_status,
        "counts": {
            "succeeded": part.succeeded_count,
            "errored": part.errored_count,
            "canceled": part.canceled_count,
            "expired": part.expired_count,
            "missing": part.missing_count,
        },
        "failure_reason": part.failure_reason,
        "last_error": part.last_error,
        "submitted_at": iso_or_none(part.submitted_at),
        "ended_at": iso_or_none(part.ended_at),
        "estimated_tokens": part.estimated_tokens,
    }


async def full_view(batches: BatchesComponent, batch: Batch) -> dict[str, Any]:
    """A batch with its parts and its usage totals (from its stored items)."""
    settings = batches.settings
    parts = await batches.store.parts(batch.id) if batch.part_count > 1 else None
    usage = usage_view(
        await batches.store.usage(batch.id), settings.batch_prices, settings.batch_price_discount
    )
    return batch_view(batch, parts, usage)


def _provider_problem(exc: ProviderError, refused_status: int = 422, **extra: Any) -> _Problem:
    if exc.status_code in REFUSED_INPUT_STATUSES:  # the caller's input: a 4xx, never a 5xx
        return _Problem(refused_status, f"the provider refused the request: {exc}", **extra)
    if exc.status_code in (429, 529) or (exc.status_code is not None and exc.status_code >= 500):
        retry = exc.retry_after_s if exc.retry_after_s is not None else 30.0
        return _Problem(
            503, f"the provider is unavailable: {exc}", {"retry-after": str(math.ceil(retry))}, **extra
        )
    return _Problem(502, f"the provider refused the request: {exc}", **extra)


@router.post(
    "/v1/batches",
    status_code=201,
    response_model=BatchOut,
    summary="Submit a batch: JSON {provider, model, requests: [{custom_id, params}]}, or JSONL with "
    "?provider=&model=",
    openapi_extra=_SUBMIT_BODY,
    responses={
        200: {"model": BatchOut, "description": "An earlier submission with the same Idempotency-Key"},
        413: {"description": "Too many requests or too many bytes for the provider"},
        422: {
            "description": "Invalid submission; `detail` names the problem. Refused by our checks: "
            "nothing was sent; refused by the provider: recorded as failed (`batch`)"
        },
        502: {"model": BatchProblem, "description": "The provider refused us (credentials, permissions)"},
        503: {"description": "The provider is unavailable or not configured"},
        504: {"model": BatchProblem, "description": "No answer from the provider; it will be reconciled"},
    },
)
async def submit_batch(
    request: Request,
    provider: str | None = Query(None, description="Provider, for a JSONL body."),
    model: str | None = Query(None, description="Model, for a JSONL body."),
    idempotency_key: str | None = Header(None, max_length=200),
    organization_id: str = Depends(get_organization_id),
    batches: BatchesComponent = Depends(get_batches),
) -> JSONResponse:
    async with batches.submission_slots:  # bounds the bodies read and checked at once
        body = SpooledBody()
        try:
            await body.fill(request.stream())
            try:
                submission = await _check(request, body, provider, model, batches)
            except SubmissionError as exc:
                return JSONResponse({"detail": exc.message}, status_code=exc.status_code)
            return await _answer(
                batches, lambda: batches.service.submit(organization_id, submission, idempotency_key)
            )
        finally:
            body.close()


async def _check(
    request: Request, body: SpooledBody, provider: str | None, model: str | None, batches: BatchesComponent
) -> Submission:
    """Decode and check the body off the event loop (in a thread, or a process for a large body)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in JSONL_TYPES:
        return await batches.body_checker.check_jsonl(body, provider, model, batches.service.target)
    return await batches.body_checker.check_json(body, batches.service.target)


async def _answer(batches: BatchesComponent, send: Any) -> JSONResponse:
    """Run a submission (or resubmission) and answer with the batch or what went wrong."""
    try:
        outcome: SubmitOutcome = await send()
    except ProviderNotConfigured as exc:
        return _Problem(503, str(exc)).response()
    except ProviderUnreachable as exc:
        return _Problem(503, str(exc), {"retry-after": str(UNREACHABLE_RETRY_AFTER_S)}).response()
    except SubmitFailed as exc:
        return _provider_problem(exc.error, batch=batch_view(exc.batch)).response()
    except SubmitUncertain as exc:
        detail = (
            f"no answer from the provider ({exc.error}); the batch is looked up at the provider within a "
            "minute and then followed as usual"
        )
        return _Problem(504, detail, batch=batch_view(exc.batch)).response()
    except SubmissionError as exc:
        return _Problem(exc.status_code, exc.message).response()
    view = await full_view(batches, outcome.batch)
    return JSONResponse(view, status_code=201 if outcome.created else 200)


@router.post(
    "/v1/batches/{batch_id}/resubmit",
    status_code=201,
    response_model=BatchOut,
    summary="A new batch, linked to this one, of its requests whose items ended expired, errored, "
    "or anything but succeeded (`unfinished`)",
    responses={
        200: {"model": BatchOut, "description": "An earlier resubmission with the same Idempotency-Key"},
        409: {"description": "The batch has not ended, or has no such items"},
        410: {"description": "The batch's stored requests were removed (`batch_retention_days`)"},
        502: {"model": BatchProblem, "description": "The provider refused us (credentials, permissions)"},
        503: {"description": "The provider is unavailable, unreachable or not configured"},
        504: {"model": BatchProblem, "description": "No answer from the provider; it will be reconciled"},
    },
)
async def resubmit_batch(
    batch_id: str = BatchId,
    items: Literal["expired", "errored", "unfinished"] = Query(
        "unfinished", description="Which items' requests to send again."
    ),
    idempotency_key: str | None = Header(None, max_length=200),
    organization_id: str = Depends(get_organization_id),
    batches: BatchesComponent = Depends(get_batches),
) -> JSONResponse:
    try:
        return await _answer(
            batches, lambda: batches.service.resubmit(organization_id, batch_id, items, idempotency_key)
        )
    except BatchNotFound as exc:
        return _Problem(404, str(exc)).response()
    except BatchConflict as exc:
        return _Problem(409, str(exc)).response()
    except ResultsRemoved as exc:
        return _Problem(410, str(exc)).response()


@router.get(
    "/v1/batches",
    response_model=BatchPage,
    summary="Batches of the organization, newest first",
    responses={400: {"description": "`before` is malformed or names no batch of the organization"}},
)
async def list_batches(
    request: Request,
    limit: int = page_limit(DEFAULT_PAGE_SIZE, "Batches"),
    before: str | None = Query(None, max_length=200, description="`next_before` of the previous page."),
    status: BatchStatus | None = Query(None),
    organization_id: str = Depends(get_organization_id),
    batches: BatchesComponent = Depends(get_batches),
) -> JSONResponse:
    try:
        found = await batches.service.list(
            organization_id, limit=limit + 1, before_id=before, status=status.value if status else None
        )
    except InvalidCursor as exc:
        raise invalid_cursor("before", exc) from None
    page = found[:limit]
    return JSONResponse(
        {
            "data": [batch_view(b) for b in page],
            "has_more": len(found) > limit,
            "next_before": page[-1].id if len(found) > limit else None,
        }
    )


@router.get("/v1/batches/{batch_id}", response_model=BatchOut, summary="One batch")
async def show_batch(
    batch_id: str = BatchId,
    organization_id: str = Depends(get_organization_id),
    batches: BatchesComponent = Depends(get_batches),
) -> JSONResponse:
    try:
        return JSONResponse(await full_view(batches, await batches.service.get(organization_id, batch_id)))
    except BatchNotFound as exc:
        return _Problem(404, str(exc)).response()


@router.get(
    "/v1/batches/{batch_id}/results",
    summary="Item results as JSONL: {custom_id, status, result, error} per line, streamed",
    response_class=StreamingResponse,
    responses={
        200: {"content": RESULTS_CONTENT, "description": "The results, streamed"},
        410: {"description": "The results were removed after `batch_retention_days`"},
    },
)
async def batch_results(
    batch_id: str = BatchId,
    organization_id: str = Depends(get_organization_id),
    batches: BatchesComponent = Depends(get_batches),
) -> Any:
    try:
        batch = await batches.service.get(organization_id, batch_id)
    except BatchNotFound as exc:
        return _Problem(404, str(exc)).response()
    if batch.results_removed_at is not None:
        return _Problem(
            410, f"the results of batch {batch_id} were removed after batch_retention_days"
        ).response()
    return StreamingResponse(
        batches.service.results_jsonl(organization_id, batch_id),
        media_type="application/jsonl",
        headers={"x-batch-status": batch.status.value},
    )


@router.post(
    "/v1/batches/{batch_id}/cancel",
    response_model=BatchOut,
    summary="Ask the provider to cancel a running batch",
    responses={
        409: {"description": "The batch has ended, is still being submitted, or the provider refused"},
        502: {"description": "The provider refused us (credentials, permissions)"},
        503: {"description": "The provider is unavailable or not configured"},
    },
)
async def cancel_batch(
    batch_id: str = BatchId,
    organization_id: str = Depends(get_organization_id),
    batches: BatchesComponent = Depends(get_batches),
) -> JSONResponse:
    try:
        return JSONResponse(await full_view(batches, await batches.service.cancel(organization_id, batch_id)))
    except BatchNotFound as exc:
        return _Problem(404, str(exc)).response()
    except BatchConflict as exc:
        return _Problem(409, str(exc)).response()
    except ProviderNotConfigured as exc:
        return _Problem(503, str(exc)).response()
    except ProviderError as exc:
        return _provider_problem(exc, refused_status=409).response()


@admin_router.get("/api/admin/batch-jobs", response_model=BatchJobs, summary="Batch poller diagnostics")
async def batch_jobs(
    organization_id: str = Depends(get_organization_id),
    principal: Principal = Depends(get_principal),
    batches: BatchesComponent = Depends(get_batches),
) -> dict[str, Any]:
    store = batches.store
    running = [
        b
        for b in await store.active_batches(organization_id, ADMIN_RUNNING_LIMIT)
        if b.status in POLLED_STATUSES
    ]
    settings = batches.settings
    spend = usage_view(
        await store.spend(organization_id), settings.batch_prices, settings.batch_price_discount
    )
    return {
        "counts": await counts_by_provider(store, organization_id),
        "running": [running_view(b) for b in running],
        "queued": [
            running_view(b)
            for b in await store.active_batches(organization_id, ADMIN_RUNNING_LIMIT)
            if b.status is BatchStatus.QUEUED
        ],
        # A poll cycle covers every organization: its figures are the deployment admin's only.
        "last_cycle": cycle_view(await store.last_cycle()) if principal.is_deployment_admin else None,
        "spend": spend["by_model"],
    }
