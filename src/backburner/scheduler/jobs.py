"""The job registry: components declare their periodic leader-only jobs; the scheduler runs them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from backburner.leader.base import Leadership


@dataclass(frozen=True)
class JobContext:
    """Given to every run: which tick it is and the leadership it runs under."""

    job_id: str
    fire_time: datetime
    leadership: Leadership


JobFunction = Callable[[JobContext], Awaitable[None]]


@dataclass(frozen=True)
class JobSpec:
    id: str
    name: str
    interval_s: float
    run: JobFunction
    jitter_s: float = 0.0


class JobRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}

    def add(self, spec: JobSpec) -> None:
        if spec.id in self._specs:
            raise ValueError(f"job {spec.id!r} is already registered")
        if spec.interval_s <= 0:
            raise ValueError(f"job {spec.id!r} needs a positive interval, not {spec.interval_s}")
        self._specs[spec.id] = spec

    def specs(self) -> list[JobSpec]:
        return list(self._specs.values())

    def get(self, job_id: str) -> JobSpec | None:
        return self._specs.get(job_id)
