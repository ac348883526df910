"""The in-memory store of batches and files.

Every method takes a lock and does no I/O, so it is atomic both for handlers on the server's event
loop and for code on other threads (tests driving an in-process emulator). Lists page by position
in a per-provider creation-order array, never by scanning every batch.
"""

from __future__ import annotations

import itertools
import secrets
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass

from backburner.emulator.outcomes import Scenario
from backburner.emulator.records import BatchRecord, Provider, StoredFile

_ALPHABET = string.ascii_letters + string.digits
_ENDED = frozenset({"failed", "completed", "expired", "cancelled"})


def new_id(prefix: str, length: int = 24) -> str:
    """``prefix`` plus ``length`` random base62 characters, like the providers' ids."""
    number = int.from_bytes(secrets.token_bytes(length))  # 8 bits per character: enough entropy
    characters = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        characters.append(_ALPHABET[digit])
    return prefix + "".join(characters)


class UnknownCursor(LookupError):
    """A pagination cursor that names no batch of this provider."""


@dataclass(frozen=True, slots=True)
class Page:
    records: list[BatchRecord]
    has_more: bool


class EmulatorStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._batches: dict[str, BatchRecord] = {}
        self._order: dict[Provider, list[str | None]] = {"anthropic": [], "openai": []}
        # Positions survive deletion (the slot is blanked), so a deleted cursor still pages.
        self._position: dict[Provider, dict[str, int]] = {"anthropic": {}, "openai": {}}
        self._files: dict[str, StoredFile] = {}

    def next_seq(self) -> int:
        return next(self._seq)

    # Batches

    def add_batch(self, record: BatchRecord) -> None:
        with self._lock:
            order = self._order[record.provider]
            self._position[record.provider][record.id] = len(order)
            order.append(record.id)
            self._batches[record.id] = record

    def batch(self, batch_id: str, provider: Provider | None = None) -> BatchRecord | None:
        record = self._batches.get(batch_id)
        if record is None or (provider is not None and record.provider != provider):
            return None
        return record

    def delete_batch(self, record: BatchRecord) -> None:
        with self._lock:
            if self._batches.pop(record.id, None) is not None:
                self._order[record.provider][self._position[record.provider][record.id]] = None

    def count_retrieve(self, record: BatchRecord, ended: bool) -> tuple[int, int]:
        """Records one GET of ``record``; returns the retrieves before it, overall and since it ended."""
        with self._lock:
            before = (record.retrieves, record.retrieves_after_end)
            record.retrieves += 1
            if ended:
                record.retrieves_after_end += 1
            return before

    def cancel(self, record: BatchRecord, now: float) -> None:
        with self._lock:
            if record.cancel_initiated_at is None:
                record.cancel_initiated_at = now

    def force_end(self, record: BatchRecord, now: float) -> None:
        with self._lock:
            record.forced_end_at = now if record.forced_end_at is None else min(record.forced_end_at, now)
            if record.cancel_initiated_at is not None:
                # Ending now must also cut short the cancellation's own delay.
                record.cancel_initiated_at = min(record.cancel_initiated_at, now)

    def replan(self, record: BatchRecord, scenario: Scenario) -> None:
        with self._lock:
            record.replan(scenario)
            for file in self._files.values():
                if file.batch_id == record.id:
                    file.forget_size()

    def page(
        self,
        provider: Provider,
        limit: int,
        after_id: str | None = None,
        before_id: str | None = None,
    ) -> Page:
        """Newest first. ``after_id`` pages towards older batches, ``before_id`` towards newer ones."""
        with self._lock:
            order = self._order[provider]
            if before_id is not None:
                start = self._cursor(provider, before_id)
                ids, has_more = _walk(order, start + 1, step=1, limit=limit)
                ids.reverse()
            else:
                start = len(order) if after_id is None else self._cursor(provider, after_id)
                ids, has_more = _walk(order, start - 1, step=-1, limit=limit)
            return Page(records=[self._batches[batch_id] for batch_id in ids], has_more=has_more)

    def _cursor(self, provider: Provider, batch_id: str) -> int:
        position = self._position[provider].get(batch_id)
        if position is None:
            raise UnknownCursor(batch_id)
        return position

    def enqueued_tokens(self, model: str, status: Callable[[BatchRecord], str]) -> int:
        """Tokens OpenAI batches of `model` hold while they have not ended."""
        with self._lock:
            records = [r for r in self._batches.values() if r.provider == "openai" and r.openai is not None]
        return sum(
            r.openai.enqueued_tokens
            for r in records
            if r.openai is not None and r.models.single == model and status(r) not in _ENDED
        )

    def batch_counts(self) -> dict[Provider, int]:
        with self._lock:
            counts: dict[Provider, int] = {"anthropic": 0, "openai": 0}
            for record in self._batches.values():
                counts[record.provider] += 1
            return counts

    # Files

    def add_file(self, file: StoredFile) -> None:
        with self._lock:
            self._files[file.id] = file

    def file(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def delete_file(self, file_id: str) -> bool:
        with self._lock:
            return self._files.pop(file_id, None) is not None

    def file_count(self) -> int:
        return len(self._files)

    def clear(self) -> None:
        with self._lock:
            self._batches.clear()
            self._files.clear()
            for positions in self._position.values():
                positions.clear()
            for order in self._order.values():
                order.clear()


def _walk(order: list[str | None], start: int, step: int, limit: int) -> tuple[list[str], bool]:
    """Collects up to ``limit`` live ids from ``start`` in direction ``step``, and whether more remain."""
    found: list[str] = []
    position = start
    while 0 <= position < len(order):
        batch_id = order[position]
        if batch_id is not None:
            if len(found) == limit:
                return found, True
            found.append(batch_id)
        position += step
    return found, False
