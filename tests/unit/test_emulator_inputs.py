"""Create requests are checked before anything is stored."""

from __future__ import annotations

import json

import pytest

from backburner.emulator.anthropic_api import parse_requests
from backburner.emulator.errors import ProviderError
from backburner.emulator.openai_input import parse_input_file


def message_request(custom_id: str, model: str = "m") -> dict[str, object]:
    return {"custom_id": custom_id, "params": {"model": model, "max_tokens": 1, "messages": []}}


def test_anthropic_requests_keep_ids_and_models_compactly() -> None:
    ids, models = parse_requests({"requests": [message_request("a", "x"), message_request("b", "y")]}, 10)
    assert ids == ["a", "b"]
    assert (models.names, models.position(0), models.position(1)) == (("x", "y"), 0, 1)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"requests": [message_request("a")] * 2}, "duplicate custom_id"),
        ({"requests": [message_request(str(i)) for i in range(4)]}, "at most 3 requests"),
        ({"requests": [message_request("x" * 65)]}, "requests.0.custom_id"),
        ({"requests": [{"custom_id": "a", "params": []}]}, "requests.0.params: must be an object"),
        ({"requests": "no"}, "non-empty list"),
    ],
)
def test_anthropic_bad_requests_name_the_problem(payload: dict[str, object], problem: str) -> None:
    with pytest.raises(ProviderError, match=problem) as refused:
        parse_requests(payload, 3)
    assert (refused.value.provider, refused.value.status) == ("anthropic", 400)


def line(custom_id: str, url: str = "/v1/chat/completions") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": "m"}})


def test_openai_input_errors_carry_line_numbers() -> None:
    content = "\n".join([line("a"), "", line("a"), line("b", url="/v1/embeddings"), "[1]"]).encode()
    parsed = parse_input_file(content, "/v1/chat/completions", 10)
    assert parsed.custom_ids == ["a"]
    assert [(error["line"], error["code"]) for error in parsed.errors] == [
        (3, "duplicate_custom_id"),
        (4, "mismatched_endpoint"),
        (5, "invalid_request"),
    ]


def test_openai_input_limits() -> None:
    assert parse_input_file(b"\n\n", "/v1/chat/completions", 10).errors[0]["code"] == "empty_file"
    too_many = "\n".join(line(f"r{i}") for i in range(3)).encode()
    assert parse_input_file(too_many, "/v1/chat/completions", 2).errors[0]["code"] == "too_many_requests"
