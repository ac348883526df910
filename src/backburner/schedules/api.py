"""Schedule routes: create, list, show, change, delete, pause, resume, trigger, and the runs.

Scoped by the caller's organization like every object: another organization's schedule answers
404, exactly like an id that does not exist. A bad field answers 422 naming it (`loc`) and what
is allowed (`msg`), and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from backburner.api.deps import get_organization_id, get_schedules
from backburner.api.paging import page_limit
from backburner.schedules.component import Schedules
from backburner.schedules.models import (
    SCHEDULE_ID_PATTERN,
    PauseBody,
    RunPage,
    ScheduleChange,
    ScheduleCreate,
    ScheduleOut,
    SchedulePage,
)
from backburner.schedules.specs import InvalidField
from backburner.schedules.store import ScheduleNotFound, ScheduleRecord
from backburner.schedules.views import (
    LISTED_FIRE_TIMES,
    SHOWN_FIRE_TIMES,
    coming_fire_times,
    run_view,
    schedule_view,
)

router = APIRouter(
    prefix="/v1/schedules",
    tags=["schedules"],
    responses={503: {"description": "Schedules are starting; retry shortly"}},
)

DEFAULT_PAGE_SIZE = 100
DEFAULT_RUNS_PAGE_SIZE = 50
ScheduleId = Annotated[str, Path(pattern=SCHEDULE_ID_PATTERN)]
OrganizationId = Annotated[str, Depends(get_organization_id)]
Component = Annotated[Schedules, Depends(get_schedules)]


def _view(
    component: Schedules, record: ScheduleRecord, count: int, *, with_secret: bool = False
) -> dict[str, Any]:
    coming = coming_fire_times(record, component.dispatcher.fires_of(record), count)
    return schedule_view(record, coming, with_secret=with_secret)


async def _answer(
    component: Schedules,
    call: Awaitable[ScheduleRecord],
    status_code: int = 200,
    *,
    with_secret: bool = False,
) -> JSONResponse:
    """The schedule a service call returns, or the 404 or 422 it refuses with."""
    try:
        record = await call
    except ScheduleNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except InvalidField as exc:
        error = {"type": "value_error", "loc": ("body", exc.field), "msg": exc.message}
        raise RequestValidationError([error]) from None
    return JSONResponse(
        _view(component, record, SHOWN_FIRE_TIMES, with_secret=with_secret), status_code=status_code
    )


@router.post(
    "",
    status_code=201,
    response_model=ScheduleOut,
    summary="Create a schedule: a cron, interval or one-off spec, an action and its policies",
    responses={422: {"description": "A field is invalid; `loc` names it and `msg` says what is allowed"}},
)
async def create_schedule(body: ScheduleCreate, component: Component, organization_id: OrganizationId) -> Any:
    return await _answer(component, component.service.create(organization_id, body), 201, with_secret=True)


@router.get(
    "",
    response_model=SchedulePage,
    summary="The organization's schedules, oldest first, with their next fire times",
    responses={400: {"description": "`after` names no schedule of the organization"}},
)
async def list_schedules(
    component: Component,
    organization_id: OrganizationId,
    limit: int = page_limit(DEFAULT_PAGE_SIZE, "Schedules"),
    after: str | None = Query(
        None, pattern=SCHEDULE_ID_PATTERN, description="`next_after` of the previous page."
    ),
) -> Any:
    try:
        found = await component.service.page(organization_id, limit=limit + 1, after=after)
    except ScheduleNotFound as exc:
        raise HTTPException(400, f"`after`: {exc}") from None
    page = found[:limit]
    return JSONResponse(
        {
            "data": [_view(component, record, LISTED_FIRE_TIMES) for record in page],
            "has_more": len(found) > limit,
            "next_after": page[-1].id if len(found) > limit else None,
        }
    )


@router.get("/{schedule_id}", response_model=ScheduleOut, summary="One schedule and its next fire times")
async def show_schedule(
    schedule_id: ScheduleId, component: Component, organization_id: OrganizationId
) -> Any:
    return await _answer(component, component.service.get(organization_id, schedule_id))


@router.patch(
    "/{schedule_id}",
    response_model=ScheduleOut,
    summary="Change the fields given; a new timing moves the next fire time",
    responses={422: {"description": "A field is invalid; `loc` names it and `msg` says what is allowed"}},
)
async def change_schedule(
    schedule_id: ScheduleId, body: ScheduleChange, component: Component, organization_id: OrganizationId
) -> Any:
    return await _answer(component, component.service.change(organization_id, schedule_id, body))


@router.delete(
    "/{schedule_id}", status_code=204, response_class=Response, summary="Delete a schedule and its runs"
)
async def delete_schedule(
    schedule_id: ScheduleId, component: Component, organization_id: OrganizationId
) -> Response:
    try:
        await component.service.delete(organization_id, schedule_id)
    except ScheduleNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return Response(status_code=204)


@router.post(
    "/{schedule_id}/pause",
    response_model=ScheduleOut,
    summary="Pause: no fire until resumed (fires missed meanwhile are not caught up)",
)
async def pause_schedule(
    schedule_id: ScheduleId,
    component: Component,
    organization_id: OrganizationId,
    body: Annotated[PauseBody | None, Body()] = None,
) -> Any:
    note = body.note if body else None
    return await _answer(component, component.service.pause(organization_id, schedule_id, note))


@router.post(
    "/{schedule_id}/resume", response_model=ScheduleOut, summary="Resume from the next fire time after now"
)
async def resume_schedule(
    schedule_id: ScheduleId, component: Component, organization_id: OrganizationId
) -> Any:
    return await _answer(component, component.service.resume(organization_id, schedule_id))


@router.post(
    "/{schedule_id}/trigger",
    status_code=202,
    response_model=ScheduleOut,
    summary="Fire once now (even while paused); the leader claims and delivers it like any fire",
)
async def trigger_schedule(
    schedule_id: ScheduleId, component: Component, organization_id: OrganizationId
) -> Any:
    return await _answer(component, component.service.trigger(organization_id, schedule_id), 202)


@router.get(
    "/{schedule_id}/runs",
    response_model=RunPage,
    summary="Runs of a schedule, latest fire time first: outcome, attempts, HTTP status, epoch, instance",
)
async def schedule_runs(
    schedule_id: ScheduleId,
    component: Component,
    organization_id: OrganizationId,
    limit: int = page_limit(DEFAULT_RUNS_PAGE_SIZE, "Runs"),
    before: datetime | None = Query(None, description="`next_before` of the previous page (a fire time)."),
) -> Any:
    if before is not None and before.tzinfo is None:
        before = before.replace(tzinfo=UTC)
    try:
        found = await component.service.runs(organization_id, schedule_id, limit=limit + 1, before=before)
    except ScheduleNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    page = found[:limit]
    return JSONResponse(
        {
            "data": [run_view(run) for run in page],
            "has_more": len(found) > limit,
            "next_before": page[-1].fire_time.isoformat() if len(found) > limit else None,
        }
    )
