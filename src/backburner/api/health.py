"""Liveness, readiness and metrics: open routes for orchestrators and scrapers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from backburner.api.deps import get_instance_id, get_metrics, get_readiness
from backburner.monitoring.metrics import CONTENT_TYPE_LATEST, Metrics
from backburner.readiness import Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz(instance_id: str = Depends(get_instance_id)) -> dict[str, Any]:
    return {"status": "ok", "instance_id": instance_id}


@router.get(
    "/readyz",
    summary="Ready to serve: database reachable, migrations current, components started",
    responses={503: {"description": "Not ready; `checks` names what fails"}},
)
async def readyz(readiness: Readiness = Depends(get_readiness)) -> JSONResponse:
    results = await readiness()
    ready = all(r.ok for r in results.values())
    body = {
        "status": "ready" if ready else "not ready",
        "checks": {name: {"ok": r.ok, "detail": r.detail} for name, r in results.items()},
        "failing": [name for name, r in results.items() if not r.ok],
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(registry: Metrics = Depends(get_metrics)) -> Response:
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
