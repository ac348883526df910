"""Submission checks: every problem is named, limits are the providers'."""

from __future__ import annotations

import re

import pytest

from backburner.batches.validation import (
    LIMITS,
    ProviderLimits,
    SubmissionError,
    encode_request,
    parse_jsonl_requests,
    validate_submission,
)


def body(provider: str = "anthropic", n: int = 2, **overrides: object) -> dict[str, object]:
    requests = [{"custom_id": f"r-{i}", "params": {"max_tokens": 5, "messages": []}} for i in range(n)]
    return {"provider": provider, "model": "m", "requests": requests, **overrides}


def test_a_valid_submission_measures_what_would_be_sent() -> None:
    submission = validate_submission(body("openai"))
    assert [r.custom_id for r in submission.requests] == ["r-0", "r-1"]
    sent = [encode_request("openai", "m", r) for r in submission.requests]
    assert submission.size_bytes == sum(len(line) + 1 for line in sent)
    assert b'"url":"/v1/chat/completions"' in sent[0] and b'"model":"m"' in sent[0]


def test_a_requests_own_model_wins() -> None:
    submission = validate_submission(body(requests=[{"custom_id": "a", "params": {"model": "own"}}]))
    assert b'"model":"own"' in encode_request("anthropic", "m", submission.requests[0])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "the body must be a JSON object, not a list"),
        (body(provider="mistral"), "unknown provider 'mistral'; known providers: anthropic, openai"),
        (body(model=""), "model must be a non-empty string"),
        (body(extra=1), "unknown field(s) 'extra'"),
        (body(requests="x"), "requests must be a non-empty list"),
        (
            body(requests=[{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}]),
            "'a' duplicates requests[0]",
        ),
        (
            body(requests=[{"custom_id": "a", "params": "text"}]),
            "requests[0].params must be an object, not a string",
        ),
        (
            body(requests=[{"custom_id": "a", "params": None}]),
            "requests[0].params must be an object, not null",
        ),
        (body(requests=[{"custom_id": "x" * 65, "params": {}}]), "is invalid: it must be 1 to 64"),
        (body(requests=[{"custom_id": 5, "params": {}}]), "custom_id 5 is invalid"),
        (body(requests=["a"]), "requests[0] must be an object with custom_id and params, not a string"),
    ],
)
def test_problems_are_named(payload: object, message: str) -> None:
    with pytest.raises(SubmissionError) as caught:
        validate_submission(payload)
    assert message in caught.value.message
    assert caught.value.status_code == 422


def test_many_problems_are_listed_up_to_a_few() -> None:
    payload = body(requests=[{"custom_id": "a", "params": 1}] * 20)
    with pytest.raises(SubmissionError, match=r"\(and possibly more\)"):
        validate_submission(payload)


def test_provider_limits_on_count_and_bytes() -> None:
    assert (LIMITS["anthropic"].max_requests, LIMITS["openai"].max_requests) == (100_000, 50_000)
    assert (LIMITS["anthropic"].max_bytes, LIMITS["openai"].max_bytes) == (256 * 1024**2, 200 * 1024**2)
    with pytest.raises(SubmissionError) as caught:
        validate_submission(body("openai", n=50_001))
    assert caught.value.status_code == 413 and "50001, at most 50000" in caught.value.message
    small = {"anthropic": ProviderLimits(10, 300, re.compile(".+"), "anything")}
    with pytest.raises(SubmissionError, match="batch too large for anthropic") as caught:
        validate_submission(body(n=5), small)  # type: ignore[arg-type]
    assert caught.value.status_code == 413


def test_jsonl_parsing_names_the_line() -> None:
    assert parse_jsonl_requests(['{"custom_id": "a"}', "", "  ", '{"custom_id": "b"}']) == [
        {"custom_id": "a"},
        {"custom_id": "b"},
    ]
    with pytest.raises(SubmissionError, match="malformed JSONL at line 3"):
        parse_jsonl_requests(['{"a": 1}', "", "{oops"])
    with pytest.raises(SubmissionError, match="holds no requests"):
        parse_jsonl_requests(["", "\n"])
