"""When a batch ends and how: pure functions of a batch record, the time and the configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from backburner.emulator.outcomes import Outcome
from backburner.emulator.records import BatchRecord

COMPLETION_WINDOW_S = 24 * 3600
"""Both providers give a batch 24 hours; what is not done by then expires."""


class Ending(Enum):
    COMPLETED = "completed"
    CANCELED = "canceled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Timeline:
    end_at: float
    ending: Ending
    processed: int
    """Items that got their planned outcome; the rest end canceled or expired."""

    @property
    def rest(self) -> Outcome:
        return Outcome.CANCELED if self.ending is Ending.CANCELED else Outcome.EXPIRED


def timeline(record: BatchRecord, cancel_after_s: float) -> Timeline:
    end_at = record.natural_end_at
    if record.forced_end_at is not None:
        end_at = min(end_at, record.forced_end_at)
    if record.cancel_initiated_at is not None:
        end_at = min(end_at, record.cancel_initiated_at + cancel_after_s)
        return Timeline(end_at, Ending.CANCELED, _processed_by(record, record.cancel_initiated_at))
    expire_after = record.scenario.expire_after_items
    if expire_after is not None:
        return Timeline(end_at, Ending.EXPIRED, min(expire_after, record.size))
    window_end = record.created_at + COMPLETION_WINDOW_S
    if end_at > window_end:  # the work outlasts the window: it expires with what got done by then
        return Timeline(window_end, Ending.EXPIRED, _processed_by(record, window_end))
    return Timeline(end_at, Ending.COMPLETED, record.size)


def _processed_by(record: BatchRecord, at: float) -> int:
    """Items done by ``at``, as if they were worked through evenly until the natural end."""
    duration = record.natural_end_at - record.created_at
    fraction = 1.0 if duration <= 0 else min(max((at - record.created_at) / duration, 0.0), 1.0)
    return math.floor(record.size * fraction)


def has_ended(record: BatchRecord, now: float, cancel_after_s: float) -> bool:
    return now >= timeline(record, cancel_after_s).end_at


AnthropicStatus = Literal["in_progress", "canceling", "ended"]


def anthropic_status(record: BatchRecord, now: float, cancel_after_s: float) -> AnthropicStatus:
    if has_ended(record, now, cancel_after_s):
        return "ended"
    return "canceling" if record.cancel_initiated_at is not None else "in_progress"


OpenAIStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
OPENAI_TERMINAL: frozenset[OpenAIStatus] = frozenset({"failed", "completed", "expired", "cancelled"})
OPENAI_ENDED: frozenset[OpenAIStatus] = frozenset({"completed", "expired", "cancelled"})
"""Terminal statuses that come with results (``failed`` batches never ran)."""
_OPENAI_ENDED: dict[Ending, OpenAIStatus] = {
    Ending.COMPLETED: "completed",
    Ending.CANCELED: "cancelled",
    Ending.EXPIRED: "expired",
}


@dataclass(frozen=True, slots=True)
class OpenAIPhases:
    """Lengths of OpenAI's transient phases; only the clock decides which one a batch is in."""

    cancel_after_s: float
    validating_s: float
    finalizing_s: float


def openai_status(record: BatchRecord, now: float, phases: OpenAIPhases) -> OpenAIStatus:
    if record.openai is not None and record.openai.validation_errors is not None:
        return "failed"
    line = timeline(record, phases.cancel_after_s)
    if now >= line.end_at:
        return _OPENAI_ENDED[line.ending]
    if record.cancel_initiated_at is not None:
        return "cancelling"
    if now < record.created_at + phases.validating_s:
        return "validating"
    if now >= line.end_at - phases.finalizing_s:
        return "finalizing"
    return "in_progress"
