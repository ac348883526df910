"""The file state machine, as pure data and functions.

    PENDING -> PARSING -> EMBEDDING -> COMPLETED
    PENDING | PARSING | EMBEDDING -> ERROR (with a message)

COMPLETED and ERROR are terminal. PENDING exists only at creation: nothing moves into it.

Reclaiming a dead worker's file is *not* a transition. The reclaim re-grants the lease and keeps
the status, so the status only ever moves forward and a reader never sees a file go backwards.
The worker that takes the file over resumes from that status: from PARSING it parses again; from
EMBEDDING it parses and chunks again (both deterministic) and embeds only the chunks whose
passages are not stored yet.

Every transition in the store is a compare-and-set `UPDATE ... WHERE status IN
(allowed_sources(target))`; when it matches no row the store raises `IllegalTransition`.
Clock-dependent decisions take `now` as an argument so that tests never patch the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType


class FileStatus(StrEnum):
    PENDING = "pending"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    COMPLETED = "completed"
    ERROR = "error"


ALLOWED_TRANSITIONS: Mapping[FileStatus, frozenset[FileStatus]] = MappingProxyType(
    {
        FileStatus.PENDING: frozenset({FileStatus.PARSING, FileStatus.ERROR}),
        FileStatus.PARSING: frozenset({FileStatus.EMBEDDING, FileStatus.ERROR}),
        FileStatus.EMBEDDING: frozenset({FileStatus.COMPLETED, FileStatus.ERROR}),
        FileStatus.COMPLETED: frozenset(),
        FileStatus.ERROR: frozenset(),
    }
)

TERMINAL: frozenset[FileStatus] = frozenset({FileStatus.COMPLETED, FileStatus.ERROR})
NON_TERMINAL: frozenset[FileStatus] = frozenset(FileStatus) - TERMINAL


class IllegalTransition(Exception):
    """A transition the state machine refuses; nothing was changed."""

    def __init__(self, file_id: str, from_status: FileStatus, to_status: FileStatus) -> None:
        self.file_id = file_id
        self.from_status = from_status
        self.to_status = to_status
        super().__init__(f"file {file_id}: cannot move from {from_status.value} to {to_status.value}")

    def __reduce__(self) -> tuple[type[IllegalTransition], tuple[str, FileStatus, FileStatus]]:
        # It crosses from pool processes, whose exceptions are pickled.
        return IllegalTransition, (self.file_id, self.from_status, self.to_status)


class ErrorMessageRequired(ValueError):
    """A move to ERROR without a message: the user would not know what went wrong."""


def can_transition(from_status: FileStatus, to_status: FileStatus) -> bool:
    return to_status in ALLOWED_TRANSITIONS[from_status]


_SOURCES: Mapping[FileStatus, frozenset[FileStatus]] = MappingProxyType(
    {
        target: frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets)
        for target in FileStatus
    }
)


def allowed_sources(target: FileStatus) -> frozenset[FileStatus]:
    """The statuses a compare-and-set UPDATE to `target` may match (empty for PENDING)."""
    return _SOURCES[target]


def check_transition(
    file_id: str, from_status: FileStatus, to_status: FileStatus, error_message: str | None = None
) -> None:
    """Raise unless `from_status -> to_status` is allowed with this message.

    ERROR needs a non-blank message; any other target takes none.
    """
    if not can_transition(from_status, to_status):
        raise IllegalTransition(file_id, from_status, to_status)
    if to_status is FileStatus.ERROR:
        if error_message is None or not error_message.strip():
            raise ErrorMessageRequired(f"file {file_id}: moving to error needs a message")
    elif error_message is not None:
        raise ValueError(f"file {file_id}: an error message is only for the error status")


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; the store writes UTC, so naive means UTC.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def deadline(created_at: datetime, timeout_minutes: float) -> datetime:
    """When a file created at `created_at` times out (always timezone-aware, UTC if naive)."""
    if timeout_minutes <= 0:
        raise ValueError(f"timeout_minutes must be positive, got {timeout_minutes}")
    return _as_utc(created_at) + timedelta(minutes=timeout_minutes)


def is_timed_out(created_at: datetime, now: datetime, timeout_minutes: float) -> bool:
    """Whether the deadline counted from creation has passed at `now`.

    Only the caller knows the status: a terminal file never times out.
    """
    return _as_utc(now) >= deadline(created_at, timeout_minutes)


def is_stalled(last_progress_at: datetime, now: datetime, stall_timeout_minutes: float) -> bool:
    """Whether a file made no progress (status change or stored batch) for the stall timeout."""
    if stall_timeout_minutes <= 0:
        raise ValueError(f"stall_timeout_minutes must be positive, got {stall_timeout_minutes}")
    return _as_utc(now) - _as_utc(last_progress_at) >= timedelta(minutes=stall_timeout_minutes)


def timeout_message(template: str, minutes: float) -> str:
    """`file_processing_timeout_error_message` with `{}` replaced by the minutes."""
    shown = int(minutes) if float(minutes).is_integer() else minutes
    try:
        return template.format(shown)
    except (IndexError, KeyError, ValueError):
        # A template with other braces is still a message; settings validate it anyway.
        return template
