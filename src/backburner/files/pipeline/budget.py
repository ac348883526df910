"""The limits of one file's processing, and the messages that name them.

Each limit is a setting; going over one ends the file in ERROR at once with a message that names
the limit and the setting, so that an operator knows what to raise and a tenant what was wrong.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from backburner.files.pool.process_pool import TaskFailed, TaskOverCpu, TaskOverMemory, TaskTimedOut
from backburner.settings import Settings


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What a parser checks as it goes."""

    max_pages: int
    max_text_chars: int


# For tools and tests that parse outside a worker; workers always pass the configured limits.
NO_LIMITS = ParseLimits(max_pages=sys.maxsize, max_text_chars=sys.maxsize)


# Even the smallest file gets this long to parse.
MIN_PARSE_S = 5.0
MB = 1_000_000


@dataclass(frozen=True, slots=True)
class FileBudget:
    parse: ParseLimits
    parse_timeout_s: float
    parse_s_per_mb: float
    memory_limit_mb: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FileBudget:
        return cls(
            parse=ParseLimits(settings.file_max_pages, settings.file_max_text_chars),
            parse_timeout_s=settings.file_parse_timeout_seconds,
            parse_s_per_mb=settings.file_parse_seconds_per_mb,
            memory_limit_mb=settings.file_process_memory_limit_mb,
        )

    def parse_s(self, size_bytes: int) -> float:
        """Wall-clock and CPU seconds the parsing of a file of this size may take."""
        scaled = max(MIN_PARSE_S, self.parse_s_per_mb * size_bytes / MB)
        return min(self.parse_timeout_s, scaled)


def too_many_pages(pages: int, limit: int) -> str:
    return f"the document has {pages} pages, more than the limit of {limit} (file_max_pages)"


def too_much_text(limit: int) -> str:
    return f"the file holds more than {limit} characters of text, the limit (file_max_text_chars)"


PARSE_LIMIT_SETTINGS = "file_parse_timeout_seconds, file_parse_seconds_per_mb"


def over_budget(exc: TaskFailed, budget: FileBudget, size_bytes: int) -> str | None:
    """The file's error message when its parsing went over a limit (None: it did not)."""
    limit_s = budget.parse_s(size_bytes)
    if isinstance(exc, TaskTimedOut):
        return (
            f"Parsing took longer than {limit_s:.3g} s, the limit for a file of this size "
            f"({PARSE_LIMIT_SETTINGS}); the file was not processed."
        )
    if isinstance(exc, TaskOverCpu):
        return (
            f"Parsing used more than {limit_s:.3g} CPU-seconds, the limit for a file of this size "
            f"({PARSE_LIMIT_SETTINGS}); the file was not processed."
        )
    if isinstance(exc, TaskOverMemory):
        return (
            f"Parsing needed more than {budget.memory_limit_mb} MB of memory, the limit "
            "(file_process_memory_limit_mb); the file was not processed."
        )
    return None
