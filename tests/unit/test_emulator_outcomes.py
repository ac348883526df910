"""Item outcomes are a pure function of custom ids and the scenario."""

from __future__ import annotations

from backburner.emulator.outcomes import Outcome, Scenario, outcome_from_custom_id, plan_items, tally


def test_custom_id_names_choose_the_outcome() -> None:
    assert outcome_from_custom_id("plain-1") is Outcome.SUCCEEDED
    assert outcome_from_custom_id("will-ERROR-out") is Outcome.ERRORED
    assert outcome_from_custom_id("expires-soon") is Outcome.EXPIRED


def test_scenario_overrides_and_adds_to_the_naming_rules() -> None:
    ids = ["a", "b", "c-error", "d", "e-missing", "f"]
    scenario = Scenario(
        outcomes={"c-error": "succeeded", "a": "expired"}, error_every=2, missing_custom_ids=["f"]
    )

    plan = plan_items(ids, scenario)

    assert list(plan.codes) == [
        Outcome.EXPIRED,  # explicit outcome
        Outcome.ERRORED,  # every 2nd
        Outcome.SUCCEEDED,  # explicit outcome beats the name
        Outcome.ERRORED,  # every 2nd
        Outcome.SUCCEEDED,
        Outcome.ERRORED,  # every 2nd
    ]
    assert plan.missing == {4, 5}


def test_missing_every_leaves_out_every_nth_line() -> None:
    plan = plan_items([f"r{i}" for i in range(10)], Scenario(missing_every=3))
    assert plan.missing == {2, 5, 8}


def test_tally_counts_the_unprocessed_rest_as_canceled_or_expired() -> None:
    codes = bytes([Outcome.SUCCEEDED, Outcome.ERRORED, Outcome.EXPIRED, Outcome.SUCCEEDED, Outcome.SUCCEEDED])

    assert tally(codes, 5, Outcome.EXPIRED) == tally(codes, 5, Outcome.CANCELED)
    canceled = tally(codes, 3, Outcome.CANCELED)
    assert (canceled.succeeded, canceled.errored, canceled.expired, canceled.canceled) == (1, 1, 1, 2)
    expired = tally(codes, 1, Outcome.EXPIRED)
    assert (expired.succeeded, expired.errored, expired.expired, expired.canceled) == (1, 0, 4, 0)
