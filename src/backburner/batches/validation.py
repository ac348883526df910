"""Checking a submission before anything is written or sent: every problem is named.

Requests are checked one at a time as they are read (`RequestChecker`), so a submission of any
size is checked without holding it. The same pass plans its parts: a submission larger than its
provider's limits (requests, bytes of the provider's own encoding, and an enqueued-token budget)
is split into parts that each fit.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from backburner.batches.domain import BatchRequest, ProviderKind
from backburner.batches.encoding import (
    BYTES_PER_TOKEN,
    EncodingError,
    body_overhead_bytes,
    estimate_tokens,
    line_cost_bytes,
    params_json,
    request_line,
)

MB = 1024 * 1024
MAX_PROBLEMS_NAMED = 5
MODEL_MAX_CHARS = 200
# Control characters are never part of a model name; a NUL or a lone surrogate (JSON allows
# "\ud800") would not even reach PostgreSQL or the provider.
_MODEL_PATTERN = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff]+")
TOP_LEVEL_FIELDS = frozenset({"provider", "model", "requests"})


@dataclass(frozen=True, slots=True)
class CustomIdRule:
    pattern: re.Pattern[str]
    description: str


CUSTOM_ID_RULES: dict[ProviderKind, CustomIdRule] = {
    "anthropic": CustomIdRule(re.compile(r"[A-Za-z0-9_-]{1,64}"), "1 to 64 letters, digits, `_` or `-`"),
    "openai": CustomIdRule(
        re.compile(r"[^\x00\n\r\ud800-\udfff]{1,512}"), "1 to 512 characters, one line, no NUL"
    ),
}


@dataclass(frozen=True, slots=True)
class Target:
    """Where a submission goes: its provider's name and kind, and the limits of one batch there."""

    provider: str
    kind: ProviderKind
    max_requests: int
    max_bytes: int
    max_tokens: int | None = None  # the model's enqueued-token budget, if one is configured


class SubmissionError(ValueError):
    """A submission that must not be sent; `status_code` is the HTTP answer (413 for limits)."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code

    def __reduce__(self) -> tuple[type[SubmissionError], tuple[str, int]]:
        # Raised in the process that checks a large body, and unpickled in the server.
        return (SubmissionError, (self.message, self.status_code))


@dataclass(frozen=True, slots=True)
class PartPlan:
    index: int
    start: int  # position of its first request in the submission
    count: int
    size_bytes: int
    estimated_tokens: int


@dataclass(frozen=True, slots=True)
class Row:
    """One checked request, as stored: its position, custom id, model and params (JSON)."""

    position: int
    custom_id: str
    model: str
    params: bytes


RowSource = Callable[[], Iterator[Row]]


@dataclass(frozen=True)
class Submission:
    """A checked submission. `rows` reads its requests again, in order, as stored rows."""

    provider: str
    model: str
    kind: ProviderKind
    request_count: int
    size_bytes: int
    parts: tuple[PartPlan, ...]
    rows: RowSource = field(repr=False)

    @property
    def estimated_tokens(self) -> int:
        return sum(p.estimated_tokens for p in self.parts)


def check_header(payload: Mapping[str, Any], targets: Callable[[str, str], Target]) -> tuple[Target, str]:
    """The provider and model of a submission; `targets(provider, model)` resolves the provider."""
    unknown = sorted(set(payload) - TOP_LEVEL_FIELDS)
    if unknown:
        raise SubmissionError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; expected provider, model, requests"
        )
    provider = payload.get("provider")
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise SubmissionError("model must be a non-empty string")
    if len(model) > MODEL_MAX_CHARS or not _MODEL_PATTERN.fullmatch(model):
        raise SubmissionError(
            f"model must be at most {MODEL_MAX_CHARS} characters, without control characters"
        )
    if not isinstance(provider, str):
        raise SubmissionError(
            f"provider must be a string naming a configured provider, not {_kind(provider)}"
        )
    return targets(provider, model), model


class RequestChecker:
    """Checks requests one by one and plans the parts they go in."""

    def __init__(self, target: Target, model: str) -> None:
        self.target = target
        self.model = model
        self.rule = CUSTOM_ID_RULES[target.kind]
        self.problems: list[str] = []
        # Custom ids are compared by hash (8 bytes each, not a set of strings): a hash seen twice
        # is then looked up again in the source, to name the duplicates or clear a collision.
        self._hashes = array("q")
        self._hash_positions = array("q")
        self.count = 0
        self.size_bytes = 0
        self.planner = PartPlanner(target, model)

    @property
    def full(self) -> bool:
        return len(self.problems) >= MAX_PROBLEMS_NAMED

    def add(self, raw: Any) -> Row | None:
        """Check the next request; a valid one is returned as the row that stores it."""
        index = self.count
        self.count += 1
        row = self._check(index, raw)
        if row is not None and not self.problems:
            self._plan(index, row)
        return row

    def _check(self, index: int, raw: Any) -> Row | None:
        where = f"requests[{index}]"
        if not isinstance(raw, dict):
            self.problems.append(f"{where} must be an object with custom_id and params, not {_kind(raw)}")
            return None
        extra = sorted(set(raw) - {"custom_id", "params"})
        custom_id, params = raw.get("custom_id"), raw.get("params")
        problems_before = len(self.problems)
        if extra:
            self.problems.append(f"{where} has unknown field(s) {', '.join(map(repr, extra))}")
        if not isinstance(custom_id, str) or not self.rule.pattern.fullmatch(custom_id):
            self.problems.append(
                f"{where}.custom_id {custom_id!r} is invalid: it must be {self.rule.description}"
            )
        else:
            self._hashes.append(hash(custom_id))
            self._hash_positions.append(index)
        if not isinstance(params, dict):
            self.problems.append(f"{where}.params must be an object, not {_kind(params)}")
        if len(self.problems) > problems_before:
            return None
        assert isinstance(custom_id, str) and isinstance(params, dict)
        try:
            encoded = params_json(self.model, params)
        except EncodingError as exc:
            self.problems.append(f"{where}.params cannot be sent as JSON: {exc}")
            return None
        model = params.get("model")
        return Row(index, custom_id, model if isinstance(model, str) else self.model, encoded)

    def _plan(self, index: int, row: Row) -> None:
        kind = self.target.kind
        cost = line_cost_bytes(kind, request_line(kind, row.custom_id, row.params))
        self.size_bytes += cost
        self.planner.add(index, cost, estimate_tokens(row.params))

    def check_duplicates(self, again: Callable[[], Iterable[Any]]) -> None:
        """Name the custom ids used twice; `again` reads the requests again (only when a hash was
        seen twice)."""
        if self.problems or len(self._hashes) < 2:
            return
        hashes = np.frombuffer(self._hashes, dtype=np.int64)
        ordered = np.sort(hashes)
        repeated = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
        if not repeated:
            return
        first: dict[str, int] = {}
        for index, raw in enumerate(again()):
            custom_id = raw.get("custom_id") if isinstance(raw, dict) else None
            if not isinstance(custom_id, str) or hash(custom_id) not in repeated:
                continue
            if custom_id in first:
                self.problems.append(
                    f"requests[{index}].custom_id {custom_id!r} duplicates requests[{first[custom_id]}]"
                )
                if self.full:
                    return
            else:
                first[custom_id] = index

    def finish(self) -> tuple[PartPlan, ...]:
        """The parts, or `SubmissionError` naming the problems found."""
        if self.problems:
            more = " (and possibly more)" if self.full else ""
            raise SubmissionError("invalid requests: " + "; ".join(self.problems) + more)
        if self.count == 0:
            raise SubmissionError("requests must be a non-empty list of {custom_id, params} objects")
        return self.planner.finish()


class PartPlanner:
    """Fills parts in order: a request goes in the current part unless it would take the part
    over a limit (requests, bytes, the model's enqueued-token budget)."""

    def __init__(self, target: Target, model: str) -> None:
        self.target = target
        self.model = model
        self.parts: list[PartPlan] = []
        self._overhead = body_overhead_bytes(target.kind)
        self._start = 0
        self._count = 0
        self._bytes = self._overhead
        self._tokens = 0

    def add(self, index: int, cost: int, tokens: int) -> None:
        target = self.target
        if self._overhead + cost > target.max_bytes:
            raise SubmissionError(
                f"requests[{index}] alone is {cost} bytes, more than one {target.provider} batch takes "
                f"({target.max_bytes} bytes)",
                status_code=413,
            )
        if target.max_tokens is not None and tokens > target.max_tokens:
            raise SubmissionError(
                f"requests[{index}] alone is about {tokens} tokens, more than the enqueued-token limit "
                f"of {target.max_tokens} for {self.model} (openai_enqueued_token_limits)",
                status_code=413,
            )
        if (
            self._count + 1 > target.max_requests
            or self._bytes + cost > target.max_bytes
            or (target.max_tokens is not None and self._tokens + tokens > target.max_tokens)
        ):
            self._close()
            self._start = index
        self._count += 1
        self._bytes += cost
        self._tokens += tokens

    def _close(self) -> None:
        if self._count:
            self.parts.append(PartPlan(len(self.parts), self._start, self._count, self._bytes, self._tokens))
        self._count, self._bytes, self._tokens = 0, self._overhead, 0

    def finish(self) -> tuple[PartPlan, ...]:
        self._close()
        return tuple(self.parts)


def plan_sizes(target: Target, model: str, sizes: Sequence[tuple[int, int]]) -> tuple[PartPlan, ...]:
    """Parts for stored requests given as (custom id bytes, params bytes), in order."""
    planner = PartPlanner(target, model)
    probe = len(request_line(target.kind, "", b"")) + 1  # the line around an empty id and params
    for index, (id_bytes, params_bytes) in enumerate(sizes):
        planner.add(index, probe + id_bytes + params_bytes, math.ceil(params_bytes / BYTES_PER_TOKEN))
    return planner.finish()


def check_requests(
    target: Target, model: str, source: Callable[[], Iterable[Any]]
) -> tuple[RequestChecker, tuple[PartPlan, ...]]:
    """Check the requests `source()` reads and plan their parts (`source` may be read twice)."""
    checker = RequestChecker(target, model)
    for raw in source():
        checker.add(raw)
        if checker.full:
            break
    checker.check_duplicates(source)
    return checker, checker.finish()


def rows_of(target: Target, model: str, raw_requests: Iterable[Any]) -> Iterator[Row]:
    """The stored rows of requests already checked (read again from their source)."""
    checker = RequestChecker(target, model)
    for raw in raw_requests:
        row = checker._check(checker.count, raw)
        checker.count += 1
        if row is None:
            raise SubmissionError("the submission changed while it was read")
        yield row


def validate_submission(payload: Any, targets: Callable[[str, str], Target] | None = None) -> Submission:
    """Validate an in-memory `{provider, model, requests: [{custom_id, params}]}`."""
    if not isinstance(payload, dict):
        raise SubmissionError(f"the body must be a JSON object, not {_kind(payload)}")
    target, model = check_header(payload, targets or default_target)
    raw_requests = payload.get("requests")
    if not isinstance(raw_requests, list) or not raw_requests:
        raise SubmissionError("requests must be a non-empty list of {custom_id, params} objects")
    return check_submission(target, model, lambda: raw_requests)


@dataclass(frozen=True, slots=True)
class CheckedRequests:
    """What checking a submission's requests found: how many, their size, their parts."""

    count: int
    size_bytes: int
    parts: tuple[PartPlan, ...]


def check_all(target: Target, model: str, source: Callable[[], Iterable[Any]]) -> CheckedRequests:
    checker, parts = check_requests(target, model, source)
    return CheckedRequests(checker.count, checker.size_bytes, parts)


def submission_of(
    target: Target, model: str, checked: CheckedRequests, source: Callable[[], Iterable[Any]]
) -> Submission:
    """The submission of checked requests; it reads them again from `source` to store them."""
    return Submission(
        target.provider,
        model,
        target.kind,
        checked.count,
        checked.size_bytes,
        checked.parts,
        lambda: rows_of(target, model, source()),
    )


def check_submission(target: Target, model: str, source: Callable[[], Iterable[Any]]) -> Submission:
    """Check the requests `source()` reads; the submission reads them again to store them."""
    return submission_of(target, model, check_all(target, model, source), source)


DEFAULT_LIMITS: dict[ProviderKind, tuple[int, int]] = {
    "anthropic": (100_000, 256 * MB),
    "openai": (50_000, 200 * MB),
}


def default_target(provider: str, model: str) -> Target:
    """The providers' published limits, for callers without settings (the CLI's local check)."""
    if provider not in DEFAULT_LIMITS:
        raise SubmissionError(f"unknown provider {provider!r}; known providers: {', '.join(DEFAULT_LIMITS)}")
    kind: ProviderKind = "anthropic" if provider == "anthropic" else "openai"
    max_requests, max_bytes = DEFAULT_LIMITS[kind]
    return Target(provider, kind, max_requests, max_bytes)


def any_target(provider: str, model: str) -> Target:
    """A target for a provider only the server knows: checks the shape, plans no limits."""
    if provider in DEFAULT_LIMITS:
        return default_target(provider, model)
    return Target(provider, "openai", 1 << 62, 1 << 62)


def parse_jsonl_requests(lines: Iterable[str | bytes]) -> Iterator[Any]:
    """Parse a JSONL stream of `{custom_id, params}` lines; blank lines are skipped."""
    empty = True
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SubmissionError(f"malformed JSONL at line {number}: {exc}") from None
        empty = False
    if empty:
        raise SubmissionError("the JSONL holds no requests")


def batch_requests(payload_requests: Iterable[Mapping[str, Any]]) -> list[BatchRequest]:
    return [BatchRequest(str(r["custom_id"]), dict(r["params"])) for r in payload_requests]


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )
