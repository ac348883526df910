"""Re-embedding a source with another model: an estimate, a start, the progress."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, Field

from backburner.api.deps import get_organization_id, get_reembed_service
from backburner.api.files import SourceId
from backburner.files.embedding.embedders import EmbedderConfigError, EmbedderUnavailable
from backburner.files.embedding.models import UnknownModel
from backburner.files.reembed.service import AlreadyActive, ReembedService
from backburner.files.store.records import SourceNotFound
from backburner.files.store.reembeds import ReembedRunning

router = APIRouter(prefix="/v1", tags=["files"])

OrganizationId = Annotated[str, Depends(get_organization_id)]
Reembedding = Annotated[ReembedService, Depends(get_reembed_service)]


class ReembedRequest(BaseModel):
    model: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]*$",
        description="The target model, e.g. `hash-512`, or a model of the OpenAI-compatible endpoint.",
    )
    dry_run: bool = Field(False, description="Only estimate; start nothing.")


class ReembedEstimateOut(BaseModel):
    source_id: str
    model: str
    from_model: str
    passages: int = Field(description="Passages that need a vector of the target model.")
    tokens: int = Field(description="Estimated from characters (four per token).")
    cost_usd: float | None = Field(description="From `batch_prices` (input price); null without one.")


class ReembedProgressOut(BaseModel):
    source_id: str
    status: str = Field(description="`none`, `running` or `completed`.")
    model: str | None
    from_model: str | None
    active_model: str = Field(description="The model search uses now.")
    done: int
    total: int
    started_at: datetime | None
    finished_at: datetime | None


@router.post(
    "/sources/{source_id}/reembed",
    summary="Estimate (dry_run) or start re-embedding a source with another model",
    response_model=ReembedEstimateOut | ReembedProgressOut,
    responses={
        200: {"description": "The estimate (dry_run)"},
        202: {"description": "Started; follow it with GET"},
        400: {"description": "The model cannot be built by this deployment"},
        409: {"description": "The source already uses the model, or is being re-embedded"},
    },
)
async def start_reembed(
    source_id: SourceId,
    body: ReembedRequest,
    service: Reembedding,
    organization_id: OrganizationId,
    response: Response,
) -> Any:
    try:
        if body.dry_run:
            return asdict(await service.estimate(organization_id, source_id, body.model))
        progress = await service.start(organization_id, source_id, body.model)
    except SourceNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except (UnknownModel, EmbedderConfigError, EmbedderUnavailable) as exc:
        raise HTTPException(400, str(exc)) from None
    except (AlreadyActive, ReembedRunning) as exc:
        raise HTTPException(409, str(exc)) from None
    response.status_code = 202
    return asdict(progress)


@router.get(
    "/sources/{source_id}/reembed",
    response_model=ReembedProgressOut,
    summary="The source's latest re-embedding and its progress",
)
async def reembed_progress(source_id: SourceId, service: Reembedding, organization_id: OrganizationId) -> Any:
    try:
        return asdict(await service.progress(organization_id, source_id))
    except SourceNotFound as exc:
        raise HTTPException(404, str(exc)) from None
