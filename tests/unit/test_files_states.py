"""The file state machine: every pair of statuses, the error message rule, and timeouts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from backburner.files.states import (
    ALLOWED_TRANSITIONS,
    NON_TERMINAL,
    TERMINAL,
    ErrorMessageRequired,
    FileStatus,
    IllegalTransition,
    allowed_sources,
    can_transition,
    check_transition,
    deadline,
    is_stalled,
    is_timed_out,
    timeout_message,
)

P, PA, E, C, ER = (
    FileStatus.PENDING,
    FileStatus.PARSING,
    FileStatus.EMBEDDING,
    FileStatus.COMPLETED,
    FileStatus.ERROR,
)
# Written out by hand rather than derived, so that a change to the table fails here.
EXPECTED_ALLOWED = {(P, PA), (PA, E), (E, C), (P, ER), (PA, ER), (E, ER)}
ALL_PAIRS = list(itertools.product(FileStatus, FileStatus))


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_pair_is_allowed_or_refused(source: FileStatus, target: FileStatus) -> None:
    allowed = (source, target) in EXPECTED_ALLOWED
    assert can_transition(source, target) is allowed
    assert (source in allowed_sources(target)) is allowed
    message = "boom" if target is ER else None
    if allowed:
        check_transition("file-1", source, target, message)
    else:
        with pytest.raises(IllegalTransition) as caught:
            check_transition("file-1", source, target, message)
        assert (caught.value.file_id, caught.value.from_status, caught.value.to_status) == (
            "file-1",
            source,
            target,
        )
        assert f"from {source.value} to {target.value}" in str(caught.value)


def test_terminal_statuses_never_change_and_nothing_enters_pending() -> None:
    assert {C, ER} == TERMINAL
    assert frozenset(FileStatus) - TERMINAL == NON_TERMINAL
    for status in TERMINAL:
        assert ALLOWED_TRANSITIONS[status] == frozenset()
    assert allowed_sources(P) == frozenset()
    assert allowed_sources(ER) == NON_TERMINAL
    assert allowed_sources(C) == {E}


@pytest.mark.parametrize("message", [None, "", "   \n"])
def test_error_needs_a_message(message: str | None) -> None:
    with pytest.raises(ErrorMessageRequired):
        check_transition("file-1", PA, ER, message)


def test_only_error_takes_a_message() -> None:
    with pytest.raises(ValueError, match="only for the error status"):
        check_transition("file-1", P, PA, "why")


def test_status_values_are_the_stored_strings() -> None:
    assert [s.value for s in FileStatus] == ["pending", "parsing", "embedding", "completed", "error"]
    assert FileStatus("embedding") is E


CREATED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_timeout_is_counted_from_creation_and_inclusive_at_the_deadline() -> None:
    assert deadline(CREATED, 30) == CREATED + timedelta(minutes=30)
    assert not is_timed_out(CREATED, CREATED + timedelta(minutes=29, seconds=59), 30)
    assert is_timed_out(CREATED, CREATED + timedelta(minutes=30), 30)
    assert is_timed_out(CREATED, CREATED + timedelta(days=1), 30)


def test_naive_datetimes_are_utc() -> None:
    naive = datetime(2024, 5, 1, 12, 0)
    assert deadline(naive, 30) == CREATED + timedelta(minutes=30)
    assert is_timed_out(naive, CREATED + timedelta(minutes=30), 30)
    # An aware `now` in another zone is compared as the same instant.
    paris = timezone(timedelta(hours=2))
    assert not is_timed_out(CREATED, datetime(2024, 5, 1, 14, 29, tzinfo=paris), 30)
    assert is_timed_out(CREATED, datetime(2024, 5, 1, 14, 30, tzinfo=paris), 30)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        deadline(CREATED, 0)
    with pytest.raises(ValueError):
        is_stalled(CREATED, CREATED, -1)


def test_stall_counts_from_last_progress() -> None:
    assert not is_stalled(CREATED, CREATED + timedelta(minutes=4), 5)
    assert is_stalled(CREATED, CREATED + timedelta(minutes=5), 5)


def test_timeout_message_formats_the_minutes() -> None:
    template = "File processing timed out after {} minutes. Please try again."
    assert timeout_message(template, 30) == "File processing timed out after 30 minutes. Please try again."
    assert timeout_message(template, 0.5) == "File processing timed out after 0.5 minutes. Please try again."
    assert timeout_message("timed out", 30) == "timed out"
    assert timeout_message("bad {name}", 30) == "bad {name}"
