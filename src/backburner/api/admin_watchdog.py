"""`GET /api/admin/watchdog`: thresholds, current lag, recent stalls with their culprits, the pool."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends

from backburner.api.deps import get_executor, get_watchdog
from backburner.monitoring.threadpool import InstrumentedThreadPoolExecutor
from backburner.monitoring.watchdog import Watchdog

router = APIRouter(tags=["admin"])


@router.get("/api/admin/watchdog", summary="Event-loop watchdog: thresholds, lag, recent stalls, thread pool")
async def watchdog(
    watchdog: Watchdog = Depends(get_watchdog),
    pool: InstrumentedThreadPoolExecutor | None = Depends(get_executor),
) -> dict[str, Any]:
    return {**watchdog.snapshot(), "thread_pool": asdict(pool.stats()) if pool is not None else None}
