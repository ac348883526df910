"""`GET /api/admin/watchdog`: thresholds, current lag, recent stalls with their culprits, the pool."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from backburner.api.deps import get_runtime
from backburner.monitoring.threadpool import InstrumentedThreadPoolExecutor
from backburner.runtime import Runtime

router = APIRouter(tags=["admin"])


@router.get("/api/admin/watchdog", summary="Event-loop watchdog: thresholds, lag, recent stalls, thread pool")
async def watchdog(runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    if runtime.watchdog is None:
        raise HTTPException(503, "the watchdog has not started")
    pool = runtime.executor
    return {
        **runtime.watchdog.snapshot(),
        "thread_pool": asdict(pool.stats()) if isinstance(pool, InstrumentedThreadPoolExecutor) else None,
    }
