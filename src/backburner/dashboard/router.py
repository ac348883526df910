"""`/dashboard` (the page, open: it holds no data) and the admin JSON it reads."""

from __future__ import annotations

from importlib.resources import files as package_files
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from backburner.api.deps import get_batches, get_dashboard_sources, get_organization_id, get_principal
from backburner.auth.principal import Principal
from backburner.batches.component import BatchesComponent
from backburner.dashboard.view import DashboardSources, dashboard_view

STATIC_DIR = package_files("backburner.dashboard") / "static"
PAGE_SIZE = 20
ITEMS_LIMIT = 100

router = APIRouter(tags=["dashboard"])


def static_files() -> StaticFiles:
    return StaticFiles(directory=str(STATIC_DIR))


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard_page() -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / "dashboard.html").read_text(encoding="utf-8"))


@router.get("/api/admin/dashboard", summary="Everything the dashboard shows, one page of each list")
async def dashboard_data(
    sources: DashboardSources = Depends(get_dashboard_sources),
    principal: Principal = Depends(get_principal),
    batches_page: int = Query(0, ge=0, le=100_000, description="Page of running batches (0-based)."),
    files_page: int = Query(0, ge=0, le=100_000, description="Page of files in progress (0-based)."),
    page_size: int = Query(PAGE_SIZE, ge=1, le=100),
) -> dict[str, Any]:
    return await dashboard_view(
        sources,
        principal.organization_id,
        deployment_wide=principal.is_deployment_admin,
        batches_page=batches_page,
        files_page=files_page,
        page_size=page_size,
    )


@router.get("/api/admin/batches/{batch_id}/items", summary="A batch with a summary and a page of its items")
async def batch_items(
    batch_id: str,
    component: BatchesComponent = Depends(get_batches),
    organization_id: str = Depends(get_organization_id),
    limit: int = Query(20, ge=1, le=ITEMS_LIMIT),
    after: str | None = Query(None, max_length=200, description="Custom id after which the page starts."),
) -> dict[str, Any]:
    batch = await component.store.get(organization_id, batch_id)
    if batch is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    items = await component.store.item_page(organization_id, batch_id, after_custom_id=after, limit=limit)
    summary = await component.store.item_status_counts(batch_id)
    return {
        "batch": {"id": batch.id, "provider": batch.provider, "status": batch.status.value},
        "summary": summary,
        "items": [
            {"custom_id": item.custom_id, "status": item.status, "error": item.error} for item in items
        ],
    }
