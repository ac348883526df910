"""The bytes of requests as each kind of provider takes them, spliced from stored params.

A request's params are stored once as compact JSON; a part's body is built by joining them into
the provider's request lines without parsing them again. Sizes for the split come from the same
functions, so a part's body is exactly as large as planned.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Final

import orjson

from backburner.batches.domain import BatchRequest, ProviderKind

OPENAI_ENDPOINT: Final = "/v1/chat/completions"
BYTES_PER_TOKEN = 4  # a rough estimate of tokens from the bytes of a request's JSON
_ANTHROPIC_OPEN = b'{"requests":['
_ANTHROPIC_CLOSE = b"]}"


class EncodingError(ValueError):
    """Params that cannot be sent as JSON text (a lone surrogate, an integer out of range)."""


def params_json(model: str, params: Mapping[str, object]) -> bytes:
    """The params sent for one request, compact; the batch's model applies where it names none."""
    value = params if "model" in params else {"model": model, **params}
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise EncodingError(str(exc)) from None


def request_line(kind: ProviderKind, custom_id: str, params: bytes) -> bytes:
    """One request as the provider takes it: an Anthropic request object or an OpenAI JSONL line."""
    cid = json.dumps(custom_id, ensure_ascii=False).encode()
    if kind == "anthropic":
        return b'{"custom_id":' + cid + b',"params":' + params + b"}"
    return (
        b'{"custom_id":'
        + cid
        + b',"method":"POST","url":"'
        + OPENAI_ENDPOINT.encode()
        + b'","body":'
        + params
        + b"}"
    )


def line_cost_bytes(kind: ProviderKind, line: bytes) -> int:
    """What one request adds to its batch: the line and its separator (`,` or a newline)."""
    return len(line) + 1


def body_overhead_bytes(kind: ProviderKind) -> int:
    return len(_ANTHROPIC_OPEN) + len(_ANTHROPIC_CLOSE) if kind == "anthropic" else 0


def assemble(kind: ProviderKind, lines: Iterable[bytes]) -> bytes:
    """A whole part's body from its request lines."""
    return assemble_segments(kind, [join_lines(kind, lines)])


def join_lines(kind: ProviderKind, lines: Iterable[bytes]) -> bytes:
    """Some consecutive request lines as one segment of a body (see `assemble_segments`)."""
    if kind == "anthropic":
        return b",".join(lines)
    return b"".join(line + b"\n" for line in lines)


def assemble_segments(kind: ProviderKind, segments: list[bytes]) -> bytes:
    """A whole part's body from segments of its lines, in order; one copy of the bytes."""
    if kind == "anthropic":
        return _ANTHROPIC_OPEN + b",".join(s for s in segments if s) + _ANTHROPIC_CLOSE
    return b"".join(segments)


def estimate_tokens(params: bytes) -> int:
    return math.ceil(len(params) / BYTES_PER_TOKEN)


def encode_requests(kind: ProviderKind, model: str, requests: Iterable[BatchRequest]) -> tuple[bytes, int]:
    """A body for these requests and their number (tests and small callers)."""
    lines = [request_line(kind, r.custom_id, params_json(model, r.params)) for r in requests]
    return assemble(kind, lines), len(lines)
