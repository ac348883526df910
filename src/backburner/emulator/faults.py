"""Injected faults: rules naming a route, consumed in the order they were added."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

RouteName = Literal[
    "anthropic.batches.create",
    "anthropic.batches.retrieve",
    "anthropic.batches.list",
    "anthropic.batches.cancel",
    "anthropic.batches.delete",
    "anthropic.batches.results",
    "openai.files.create",
    "openai.files.retrieve",
    "openai.files.content",
    "openai.files.delete",
    "openai.batches.create",
    "openai.batches.retrieve",
    "openai.batches.list",
    "openai.batches.cancel",
]
ROUTE_NAMES: tuple[RouteName, ...] = get_args(RouteName)
STREAMING_ROUTES: frozenset[RouteName] = frozenset({"anthropic.batches.results", "openai.files.content"})

FaultKind = Literal["rate_limit", "server_error", "overloaded", "delay", "cut_stream", "not_found"]
REQUEST_FAULTS: frozenset[FaultKind] = frozenset(
    {"rate_limit", "server_error", "overloaded", "delay", "not_found"}
)
"""Faults applied before a handler runs; ``cut_stream`` is applied by the streaming handlers."""

FAULT_STATUS: dict[FaultKind, int] = {
    "rate_limit": 429,
    "server_error": 500,
    "overloaded": 529,
    "not_found": 404,
}


class FaultRule(BaseModel):
    """One injected fault.

    ``rate_limit`` answers 429 with ``retry-after``; ``server_error`` 500; ``overloaded`` 529;
    ``not_found`` 404; ``delay`` waits ``delay_s`` and then answers normally; ``cut_stream`` sends
    ``after_lines`` result lines and then drops the connection mid-body.
    """

    model_config = ConfigDict(extra="forbid")

    route: RouteName | Literal["*"]
    kind: FaultKind
    count: int | None = Field(
        default=1, ge=1, description="Requests it applies to; null means until cleared."
    )
    retry_after_s: float | None = Field(
        default=None, ge=0, description="Sent as retry-after; rate_limit defaults to 1 second."
    )
    delay_s: float = Field(default=0.0, ge=0)
    after_lines: int = Field(default=0, ge=0)
    resource_id: str | None = Field(
        default=None, description="Applies only to requests naming this batch or file id."
    )

    @model_validator(mode="after")
    def _stream_faults_need_a_stream(self) -> FaultRule:
        if self.kind == "cut_stream" and self.route not in STREAMING_ROUTES and self.route != "*":
            raise ValueError(f"cut_stream applies only to {sorted(STREAMING_ROUTES)}, not {self.route}")
        return self

    def retry_after_header(self) -> str | None:
        seconds = self.retry_after_s
        if seconds is None and self.kind == "rate_limit":
            seconds = 1.0
        if seconds is None:
            return None
        return str(int(seconds)) if seconds == int(seconds) else str(seconds)


class ActiveFault(BaseModel):
    """A rule as listed by the admin API, with what is left of it."""

    id: int
    rule: FaultRule
    remaining: int | None


class FaultBook:
    """The active rules. Thread-safe, since tests may drive it from outside the server's loop."""

    def __init__(self, rules: Collection[FaultRule] = ()) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._active: list[ActiveFault] = []
        for rule in rules:
            self.add(rule)

    def add(self, rule: FaultRule) -> ActiveFault:
        with self._lock:
            fault = ActiveFault(id=next(self._ids), rule=rule, remaining=rule.count)
            self._active.append(fault)
            return fault

    def take(
        self, route: RouteName, resource_id: str | None, kinds: Collection[FaultKind]
    ) -> FaultRule | None:
        """Consumes one use of the oldest rule matching this request, if any."""
        if not self._active:  # the common case, without taking the lock
            return None
        with self._lock:
            for position, fault in enumerate(self._active):
                rule = fault.rule
                if rule.kind not in kinds or rule.route not in (route, "*"):
                    continue
                if rule.resource_id is not None and rule.resource_id != resource_id:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        del self._active[position]
                return rule
        return None

    def remove(self, fault_id: int) -> bool:
        with self._lock:
            before = len(self._active)
            self._active = [fault for fault in self._active if fault.id != fault_id]
            return len(self._active) < before

    def clear(self) -> None:
        with self._lock:
            self._active = []

    def snapshot(self) -> list[ActiveFault]:
        with self._lock:
            return [fault.model_copy() for fault in self._active]
