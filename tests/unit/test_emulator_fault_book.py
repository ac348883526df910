"""Fault rules are consumed oldest first, per route and resource, and validated on the way in."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backburner.emulator.faults import REQUEST_FAULTS, FaultBook, FaultRule


def test_rules_are_used_in_order_and_used_up() -> None:
    book = FaultBook(
        [
            FaultRule(route="openai.batches.retrieve", kind="rate_limit", count=1),
            FaultRule(route="openai.batches.retrieve", kind="server_error", count=2),
        ]
    )
    taken = [book.take("openai.batches.retrieve", "b", REQUEST_FAULTS) for _ in range(4)]
    assert [rule.kind if rule else None for rule in taken] == [
        "rate_limit",
        "server_error",
        "server_error",
        None,
    ]
    assert book.snapshot() == []


def test_rules_match_route_wildcard_resource_and_kind() -> None:
    book = FaultBook()
    book.add(FaultRule(route="openai.files.content", kind="cut_stream", count=None))
    targeted = book.add(FaultRule(route="*", kind="not_found", resource_id="batch_1", count=None))

    assert book.take("openai.files.content", "f", REQUEST_FAULTS) is None  # cut_stream is not a request fault
    assert book.take("openai.files.content", "f", {"cut_stream"}) is not None
    assert book.take("anthropic.batches.retrieve", "batch_2", REQUEST_FAULTS) is None
    assert book.take("anthropic.batches.retrieve", "batch_1", REQUEST_FAULTS) == targeted.rule
    assert book.remove(targeted.id) is True
    assert book.take("anthropic.batches.retrieve", "batch_1", REQUEST_FAULTS) is None


def test_retry_after_header_values() -> None:
    assert FaultRule(route="*", kind="rate_limit").retry_after_header() == "1"
    assert FaultRule(route="*", kind="rate_limit", retry_after_s=0.25).retry_after_header() == "0.25"
    assert FaultRule(route="*", kind="server_error").retry_after_header() is None
    assert FaultRule(route="*", kind="overloaded", retry_after_s=3).retry_after_header() == "3"


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(ValidationError, match="cut_stream applies only"):
        FaultRule(route="anthropic.batches.retrieve", kind="cut_stream")
    with pytest.raises(ValidationError):
        FaultRule.model_validate({"route": "anthropic.batches.nope", "kind": "delay"})
    with pytest.raises(ValidationError):
        FaultRule(route="*", kind="delay", count=0)
