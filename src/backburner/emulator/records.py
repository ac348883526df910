"""What the emulator remembers about batches and files, stored compactly.

A batch keeps only what its results need: the custom ids, one small integer per item naming its
model, and one byte per item for its planned outcome. Request parameters are not kept.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

from backburner.emulator.outcomes import ItemPlan, Outcome, Scenario, Tally, plan_items, tally

Provider = Literal["anthropic", "openai"]


class SyntheticIds(Sequence[str]):
    """The custom ids ``prefix0 .. prefix{n-1}``, made on demand instead of stored."""

    def __init__(self, prefix: str, count: int) -> None:
        self._prefix = prefix
        self._count = count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return f"{self._prefix}{index % self._count}"

    def __iter__(self) -> Iterator[str]:
        prefix = self._prefix
        return (f"{prefix}{i}" for i in range(self._count))


class ModelColumn:
    """The model named by each item: distinct names once, plus a small integer per item."""

    def __init__(self, values: Iterable[str]) -> None:
        positions: dict[str, int] = {}
        indexes = [positions.setdefault(value, len(positions)) for value in values]
        # Two bytes per item unless a batch names more than 65,536 distinct models.
        self._index = array("H" if len(positions) <= 1 << 16 else "I", indexes)
        self.names: tuple[str, ...] = tuple(positions)

    @classmethod
    def uniform(cls, name: str, count: int) -> ModelColumn:
        column = cls(())
        column.names = (name,)
        column._index = array("H", bytes(2 * count))
        return column

    def position(self, item: int) -> int:
        """Index into :attr:`names` of the model item ``item`` asked for."""
        return self._index[item]

    @property
    def single(self) -> str | None:
        return self.names[0] if len(self.names) == 1 else None


@dataclass(slots=True)
class OpenAIDetails:
    """Fields only an OpenAI batch has."""

    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    output_file_id: str
    error_file_id: str
    validation_errors: list[dict[str, object]] | None = None
    """Set when the input file was rejected: the batch is ``failed`` from the start."""
    enqueued_tokens: int = 0
    """The input tokens it holds of its model's enqueued-token limit until it ends."""


@dataclass(slots=True, eq=False)
class BatchRecord:
    id: str
    provider: Provider
    seq: int
    """Creation order across the instance; also makes derived ids (message ids) unique."""
    custom_ids: Sequence[str]
    models: ModelColumn
    scenario: Scenario
    plan: ItemPlan
    created_at: float
    natural_end_at: float
    cancel_initiated_at: float | None = None
    forced_end_at: float | None = None
    retrieves: int = 0
    """GETs of this batch so far; drives the scenario's ``not_found_polls``."""
    retrieves_after_end: int = 0
    """GETs after it ended; drives the scenario's ``output_file_delay_polls``."""
    openai: OpenAIDetails | None = None
    _tallies: dict[tuple[int, Outcome], Tally] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.custom_ids)

    def tally(self, processed: int, rest: Outcome) -> Tally:
        # Cached because pollers read the counts of an ended batch many times.
        key = (processed, rest)
        cached = self._tallies.get(key)
        if cached is None:
            cached = self._tallies[key] = tally(self.plan.codes, processed, rest)
        return cached

    def replan(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.plan = plan_items(self.custom_ids, scenario)
        self._tallies.clear()


FilePurpose = Literal["batch", "batch_output"]


@dataclass(slots=True, eq=False)
class StoredFile:
    """An OpenAI file. Its lines are produced on demand, so result files cost nothing until read."""

    id: str
    filename: str
    purpose: FilePurpose
    created_at: float
    lines: Callable[[], Iterable[bytes]]
    batch_id: str | None = None
    """For result files: the batch whose results they hold."""
    expires_at: float | None = None
    _size: int | None = None

    def size(self) -> int:
        # Result files are generated; measure once, the first time anyone asks.
        if self._size is None:
            self._size = sum(len(line) for line in self.lines())
        return self._size

    def forget_size(self) -> None:
        self._size = None
