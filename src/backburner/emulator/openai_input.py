"""Validation of an OpenAI batch input file, line by line, as the Batch API does when it validates."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

from backburner.emulator.records import ModelColumn

MAX_REPORTED_ERRORS = 100
BYTES_PER_TOKEN = 4


@dataclass(slots=True)
class ParsedInput:
    custom_ids: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    errors: list[dict[str, object]] = field(default_factory=list)
    input_tokens: int = 0
    """An estimate of the requests' input tokens (about four bytes of JSON each)."""

    def model_column(self) -> ModelColumn:
        return ModelColumn(self.models)


def parse_input_file(content: bytes, endpoint: str, max_requests: int) -> ParsedInput:
    """Reads every request line; errors carry the 1-based line number like the API's ``errors.data``."""
    parsed = ParsedInput()
    seen: set[str] = set()
    for number, raw in enumerate(io.BytesIO(content), start=1):
        if not raw.strip():
            continue
        problem = _check_line(raw, endpoint, seen, parsed)
        if problem is not None:
            code, message, param = problem
            if len(parsed.errors) < MAX_REPORTED_ERRORS:
                parsed.errors.append({"code": code, "message": message, "param": param, "line": number})
    if not parsed.custom_ids and not parsed.errors:
        parsed.errors.append(
            {"code": "empty_file", "message": "The input file has no requests.", "param": None, "line": None}
        )
    if len(parsed.custom_ids) > max_requests:
        parsed.errors.append(
            {
                "code": "too_many_requests",
                "message": f"At most {max_requests} requests per batch, got {len(parsed.custom_ids)}.",
                "param": None,
                "line": None,
            }
        )
    return parsed


def _check_line(
    raw: bytes, endpoint: str, seen: set[str], parsed: ParsedInput
) -> tuple[str, str, str | None] | None:
    try:
        request = json.loads(raw)
    except ValueError:
        return "invalid_json_line", "This line is not parseable as valid JSON.", None
    if not isinstance(request, dict):
        return "invalid_request", "Each line must be a JSON object.", None
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "missing_required_parameter", "custom_id is required.", "custom_id"
    if custom_id in seen:
        return "duplicate_custom_id", f"The custom_id {custom_id!r} is used more than once.", "custom_id"
    if request.get("method") != "POST":
        return "invalid_method", "Only the POST method is supported.", "method"
    if request.get("url") != endpoint:
        return "mismatched_endpoint", f"The url must match the batch endpoint {endpoint}.", "url"
    body = request.get("body")
    if not isinstance(body, dict):
        return "invalid_request", "body must be an object.", "body"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "missing_required_parameter", "body.model is required.", "body.model"
    seen.add(custom_id)
    parsed.custom_ids.append(custom_id)
    parsed.models.append(model)
    parsed.input_tokens += -(-len(json.dumps(body, separators=(",", ":"))) // BYTES_PER_TOKEN)
    return None
