"""Deterministic item outcomes: what each request in a batch ends as, decided up front.

An item's outcome comes from its ``custom_id`` (so a client chooses it by naming its requests)
and from a :class:`Scenario` (so a test can shape a whole batch without renaming anything):

* ``custom_id`` containing ``"error"`` (any case): the item errors;
* ``custom_id`` containing ``"expire"``: the item expires;
* ``custom_id`` containing ``"missing"``: the item counts as succeeded but its result line is
  left out of the results, like a provider that loses one;
* anything else succeeds.

Scenario fields override or add to these rules, see :class:`Scenario`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Outcome(IntEnum):
    """An item's final state. Stored one byte per item, so the values must stay below 256."""

    SUCCEEDED = 0
    ERRORED = 1
    EXPIRED = 2
    CANCELED = 3


ItemOutcomeName = Literal["succeeded", "errored", "expired"]

_BY_NAME: dict[str, Outcome] = {
    "succeeded": Outcome.SUCCEEDED,
    "errored": Outcome.ERRORED,
    "expired": Outcome.EXPIRED,
}


class Scenario(BaseModel):
    """How a batch behaves, beyond what its custom ids say.

    A default scenario applies to every batch created after it is set; one batch's scenario can
    also be replaced on its own.
    """

    model_config = ConfigDict(extra="forbid")

    complete_after_s: float | None = Field(
        default=None, ge=0, description="Overrides EmulatorConfig.complete_after_s for these batches."
    )
    outcomes: dict[str, ItemOutcomeName] = Field(
        default_factory=dict, description="Outcome per custom_id, taking precedence over the naming rules."
    )
    error_every: int | None = Field(default=None, ge=1, description="Every n-th item (1-based) errors.")
    missing_custom_ids: list[str] = Field(
        default_factory=list, description="Custom ids whose result lines are left out of the results."
    )
    missing_every: int | None = Field(
        default=None, ge=1, description="Every n-th item's (1-based) result line is left out."
    )
    expire_after_items: int | None = Field(
        default=None,
        ge=0,
        description="The batch ends expired: only the first N items get an outcome, the rest expire.",
    )
    not_found_polls: int = Field(
        default=0, ge=0, description="The first N retrieves of a new batch answer 404, as if not yet visible."
    )
    output_file_delay_polls: int = Field(
        default=0,
        ge=0,
        description="OpenAI: the first N retrieves after the batch ends say completed with no output file.",
    )
    not_found_for_s: float = Field(
        default=0.0,
        ge=0,
        description="Retrieves answer 404 this long after creation, as Anthropic has done for a new batch.",
    )
    cache_read_tokens: int = Field(
        default=0,
        ge=0,
        description="Input tokens each succeeded result reports as read from the prompt cache.",
    )


@dataclass(frozen=True, slots=True)
class ItemPlan:
    """Every item's outcome (one byte each) and which result lines go missing."""

    codes: bytes
    missing: frozenset[int]


def outcome_from_custom_id(custom_id: str) -> Outcome:
    lowered = custom_id.lower()
    if "error" in lowered:
        return Outcome.ERRORED
    if "expire" in lowered:
        return Outcome.EXPIRED
    return Outcome.SUCCEEDED


def plan_items(custom_ids: Sequence[str], scenario: Scenario) -> ItemPlan:
    """Decides every item's outcome once, at creation, so reads never rescan the custom ids."""
    codes = bytearray(len(custom_ids))
    missing: set[int] = set()
    explicit_missing = set(scenario.missing_custom_ids)
    for index, custom_id in enumerate(custom_ids):
        named = scenario.outcomes.get(custom_id)
        if named is not None:
            outcome = _BY_NAME[named]
        elif scenario.error_every is not None and (index + 1) % scenario.error_every == 0:
            outcome = Outcome.ERRORED
        else:
            outcome = outcome_from_custom_id(custom_id)
        codes[index] = outcome
        if (
            custom_id in explicit_missing
            or "missing" in custom_id.lower()
            or (scenario.missing_every is not None and (index + 1) % scenario.missing_every == 0)
        ):
            missing.add(index)
    return ItemPlan(codes=bytes(codes), missing=frozenset(missing))


@dataclass(frozen=True, slots=True)
class Tally:
    """Final counts by outcome; every item is in exactly one of them."""

    succeeded: int
    errored: int
    expired: int
    canceled: int


def tally(codes: bytes, processed: int, rest: Outcome) -> Tally:
    """Counts the outcomes when only the first ``processed`` items ran and the rest ended as ``rest``."""
    done = codes[:processed]
    unprocessed = len(codes) - processed
    return Tally(
        succeeded=done.count(Outcome.SUCCEEDED),
        errored=done.count(Outcome.ERRORED),
        expired=done.count(Outcome.EXPIRED) + (unprocessed if rest is Outcome.EXPIRED else 0),
        canceled=unprocessed if rest is Outcome.CANCELED else 0,
    )
