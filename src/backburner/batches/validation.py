"""Checking a submission before anything is written or sent: every problem is named.

Limits are the providers' own (Anthropic: 100,000 requests or 256 MB; OpenAI: 50,000 requests or
200 MB), measured on the bytes that would be sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from backburner.batches.domain import PROVIDERS, BatchRequest, Provider

MB = 1024 * 1024
OPENAI_ENDPOINT: Final = "/v1/chat/completions"
MAX_PROBLEMS_NAMED = 5
MODEL_MAX_CHARS = 200
# Control characters are never part of a model name; a NUL or a lone surrogate (JSON allows
# "\ud800") would not even reach PostgreSQL or the provider.
_MODEL_PATTERN = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff]+")


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    max_requests: int
    max_bytes: int
    custom_id_pattern: re.Pattern[str]
    custom_id_rule: str


LIMITS: dict[Provider, ProviderLimits] = {
    "anthropic": ProviderLimits(
        100_000, 256 * MB, re.compile(r"[A-Za-z0-9_-]{1,64}"), "1 to 64 letters, digits, `_` or `-`"
    ),
    "openai": ProviderLimits(
        50_000,
        200 * MB,
        re.compile(r"[^\x00\n\r\ud800-\udfff]{1,512}"),
        "1 to 512 characters, one line, no NUL",
    ),
}


class SubmissionError(ValueError):
    """A submission that must not be sent; `status_code` is the HTTP answer (413 for limits)."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True)
class Submission:
    provider: Provider
    model: str
    requests: list[BatchRequest]
    size_bytes: int


def validate_submission(payload: Any, limits: dict[Provider, ProviderLimits] = LIMITS) -> Submission:
    """Validate `{provider, model, requests: [{custom_id, params}]}`; raise `SubmissionError`."""
    if not isinstance(payload, dict):
        raise SubmissionError(f"the body must be a JSON object, not {_kind(payload)}")
    unknown = sorted(set(payload) - {"provider", "model", "requests"})
    if unknown:
        raise SubmissionError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; expected provider, model, requests"
        )
    provider = payload.get("provider")
    if provider not in PROVIDERS:
        raise SubmissionError(f"unknown provider {provider!r}; known providers: {', '.join(PROVIDERS)}")
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise SubmissionError("model must be a non-empty string")
    if len(model) > MODEL_MAX_CHARS or not _MODEL_PATTERN.fullmatch(model):
        raise SubmissionError(
            f"model must be at most {MODEL_MAX_CHARS} characters, without control characters"
        )
    raw_requests = payload.get("requests")
    if not isinstance(raw_requests, list) or not raw_requests:
        raise SubmissionError("requests must be a non-empty list of {custom_id, params} objects")
    limit = limits[provider]
    if len(raw_requests) > limit.max_requests:
        raise SubmissionError(
            f"too many requests for {provider}: {len(raw_requests)}, at most {limit.max_requests} per batch",
            status_code=413,
        )
    requests = _check_requests(raw_requests, limit)
    try:
        size = sum(len(encode_request(provider, model, r)) + 1 for r in requests)
    except UnicodeEncodeError:
        raise SubmissionError("params hold a lone surrogate (\\ud800-\\udfff), which is not text") from None
    if size > limit.max_bytes:
        raise SubmissionError(
            f"batch too large for {provider}: {size} bytes, "
            f"at most {limit.max_bytes} ({limit.max_bytes // MB} MB)",
            status_code=413,
        )
    return Submission(provider, model, requests, size)


def _check_requests(raw_requests: list[Any], limit: ProviderLimits) -> list[BatchRequest]:
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    requests: list[BatchRequest] = []
    for index, raw in enumerate(raw_requests):
        where = f"requests[{index}]"
        if not isinstance(raw, dict):
            problems.append(f"{where} must be an object with custom_id and params, not {_kind(raw)}")
            continue
        extra = sorted(set(raw) - {"custom_id", "params"})
        custom_id, params = raw.get("custom_id"), raw.get("params")
        if extra:
            problems.append(f"{where} has unknown field(s) {', '.join(map(repr, extra))}")
        if not isinstance(custom_id, str) or not limit.custom_id_pattern.fullmatch(custom_id):
            problems.append(f"{where}.custom_id {custom_id!r} is invalid: it must be {limit.custom_id_rule}")
        elif custom_id in first_seen:
            problems.append(f"{where}.custom_id {custom_id!r} duplicates requests[{first_seen[custom_id]}]")
        else:
            first_seen[custom_id] = index
        if not isinstance(params, dict):
            problems.append(f"{where}.params must be an object, not {_kind(params)}")
        if len(problems) >= MAX_PROBLEMS_NAMED:
            break
        if isinstance(custom_id, str) and isinstance(params, dict):
            requests.append(BatchRequest(custom_id, params))
    if problems:
        more = " (and possibly more)" if len(problems) >= MAX_PROBLEMS_NAMED else ""
        raise SubmissionError("invalid requests: " + "; ".join(problems) + more)
    return requests


def parse_jsonl_requests(lines: Iterable[str | bytes]) -> list[Any]:
    """Parse a JSONL file of `{custom_id, params}` lines; blank lines are skipped."""
    requests: list[Any] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            requests.append(json.loads(line))
        except (ValueError, RecursionError) as exc:
            raise SubmissionError(f"malformed JSONL at line {number}: {exc}") from None
    if not requests:
        raise SubmissionError("the JSONL holds no requests")
    return requests


def request_params(model: str, request: BatchRequest) -> dict[str, object]:
    """The params sent for one request; the batch's model applies where a request names none."""
    return request.params if "model" in request.params else {"model": model, **request.params}


def encode_request(provider: Provider, model: str, request: BatchRequest) -> bytes:
    """The bytes one request takes at the provider (an Anthropic request, an OpenAI JSONL line)."""
    params = request_params(model, request)
    if provider == "anthropic":
        line: dict[str, object] = {"custom_id": request.custom_id, "params": params}
    else:
        line = {"custom_id": request.custom_id, "method": "POST", "url": OPENAI_ENDPOINT, "body": params}
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )
