"""Readiness checks: each says whether one part of an instance can serve, and if not, why."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str = "ok"


ReadinessCheck = Callable[[], Awaitable[CheckResult]]
# Every check of an instance at once, by name.
Readiness = Callable[[], Awaitable[dict[str, CheckResult]]]
