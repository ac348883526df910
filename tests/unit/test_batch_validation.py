"""Submission checks: every problem is named; a submission over a provider's limits is split."""

from __future__ import annotations

import pytest

from backburner.batches.encoding import assemble, request_line
from backburner.batches.validation import (
    SubmissionError,
    Target,
    default_target,
    parse_jsonl_requests,
    plan_sizes,
    validate_submission,
)


def body(provider: str = "anthropic", n: int = 2, **overrides: object) -> dict[str, object]:
    requests = [{"custom_id": f"r-{i}", "params": {"max_tokens": 5, "messages": []}} for i in range(n)]
    return {"provider": provider, "model": "m", "requests": requests, **overrides}


def target(kind: str = "openai", **limits: int | None) -> Target:
    values: dict[str, int | None] = {"max_requests": 1000, "max_bytes": 10**9, "max_tokens": None}
    values.update(limits)
    return Target(kind, kind, **values)  # type: ignore[arg-type]


def test_a_valid_submission_measures_what_would_be_sent() -> None:
    submission = validate_submission(body("openai"))
    rows = list(submission.rows())
    assert [r.custom_id for r in rows] == ["r-0", "r-1"]
    sent = [request_line("openai", r.custom_id, r.params) for r in rows]
    assert submission.size_bytes == len(assemble("openai", sent))
    assert b'"url":"/v1/chat/completions"' in sent[0] and b'"model":"m"' in sent[0]
    assert len(submission.parts) == 1


def test_a_requests_own_model_wins() -> None:
    submission = validate_submission(body(requests=[{"custom_id": "a", "params": {"model": "own"}}]))
    [row] = submission.rows()
    assert b'"model":"own"' in row.params and row.model == "own"


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
        (body(requests=[{"custom_id": "a", "params": {"s": "\ud800"}}]), "cannot be sent as JSON"),
        (body(requests=[{"custom_id": "a", "params": {"n": 2**70}}]), "cannot be sent as JSON"),
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


def test_the_published_limits_by_default() -> None:
    assert (default_target("anthropic", "m").max_requests, default_target("openai", "m").max_requests) == (
        100_000,
        50_000,
    )
    assert (default_target("anthropic", "m").max_bytes, default_target("openai", "m").max_bytes) == (
        256 * 1024**2,
        200 * 1024**2,
    )


def test_a_submission_over_the_request_limit_is_split_in_order() -> None:
    submission = validate_submission(body("openai", n=25), lambda p, m: target(max_requests=10))
    assert [(p.index, p.start, p.count) for p in submission.parts] == [(0, 0, 10), (1, 10, 10), (2, 20, 5)]
    assert submission.request_count == 25


def test_a_submission_over_the_byte_limit_is_split_and_every_part_fits() -> None:
    line = len(request_line("anthropic", "r-0", b'{"model":"m","max_tokens":5,"messages":[]}')) + 1
    limit = 3 * line + 20  # three requests and the body's brackets
    submission = validate_submission(
        body("anthropic", n=7), lambda p, m: target("anthropic", max_bytes=limit)
    )
    assert [p.count for p in submission.parts] == [3, 3, 1]
    assert all(p.size_bytes <= limit for p in submission.parts)
    assert sum(p.size_bytes for p in submission.parts) - 3 * len(b'{"requests":[]}') == submission.size_bytes


def test_a_token_budget_splits_too_and_a_request_larger_than_a_batch_is_refused() -> None:
    submission = validate_submission(body("openai", n=6), lambda p, m: target(max_tokens=25))
    assert all(p.estimated_tokens <= 25 for p in submission.parts) and len(submission.parts) > 1
    with pytest.raises(SubmissionError, match="alone is") as caught:
        validate_submission(body("openai", n=1), lambda p, m: target(max_bytes=10))
    assert caught.value.status_code == 413


def test_stored_requests_are_planned_like_new_ones() -> None:
    line = len(request_line("openai", "abc", b"x" * 100)) + 1
    parts = plan_sizes(target(max_bytes=2 * line), "m", [(3, 100)] * 5)
    assert [p.count for p in parts] == [2, 2, 1]


def test_jsonl_parsing_names_the_line() -> None:
    assert list(parse_jsonl_requests(['{"custom_id": "a"}', "", "  ", '{"custom_id": "b"}'])) == [
        {"custom_id": "a"},
        {"custom_id": "b"},
    ]
    with pytest.raises(SubmissionError, match="malformed JSONL at line 3"):
        list(parse_jsonl_requests(['{"a": 1}', "", "{oops"]))
    with pytest.raises(SubmissionError, match="holds no requests"):
        list(parse_jsonl_requests(["", "\n"]))
