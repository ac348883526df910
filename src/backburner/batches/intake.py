"""Reading a submission body without holding it or blocking the event loop.

The body is copied as it arrives into a spooled temporary file (memory up to a few megabytes,
disk beyond). Checking it (JSON through `ijson`, JSONL line by line) runs in a worker thread,
in one pass that keeps only what planning needs; the rows are read again from the file, a chunk
at a time, when they are stored.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, Any

import ijson

from backburner.batches.validation import (
    Row,
    Submission,
    SubmissionError,
    Target,
    check_header,
    check_submission,
    parse_jsonl_requests,
)

SPOOL_MEMORY_BYTES = 4 * 1024 * 1024
WRITE_BATCH_BYTES = 1024 * 1024
JSONL_TYPES = frozenset({"application/jsonl", "application/x-ndjson", "application/x-jsonlines"})
REQUESTS_ITEMS = "requests.item"

Targets = Callable[[str, str], Target]


class SpooledBody:
    """A request body copied to a spooled temporary file; `close` removes it."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
        self.size_bytes = 0

    async def fill(self, chunks: AsyncIterator[bytes]) -> None:
        """Copy the body; writes to disk happen in a thread, a megabyte at a time."""
        pending: list[bytes] = []
        pending_bytes = 0
        async for chunk in chunks:
            if not chunk:
                continue
            pending.append(chunk)
            pending_bytes += len(chunk)
            self.size_bytes += len(chunk)
            if pending_bytes >= WRITE_BATCH_BYTES:
                await asyncio.to_thread(self._file.write, b"".join(pending))
                pending, pending_bytes = [], 0
        if pending:
            await asyncio.to_thread(self._file.write, b"".join(pending))

    def reader(self) -> IO[bytes]:
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        self._file.close()


def check_json_body(body: SpooledBody, targets: Targets) -> Submission:
    """`{provider, model, requests: [...]}`, checked in one pass over the requests (run in a thread)."""
    header, requests_kind = _scan_header(body)
    target, model = check_header(header, targets)
    if requests_kind != "start_array":
        raise SubmissionError("requests must be a non-empty list of {custom_id, params} objects")
    return check_submission(target, model, lambda: _json_requests(body))


def check_jsonl_body(
    body: SpooledBody, provider: str | None, model: str | None, targets: Targets
) -> Submission:
    """One `{custom_id, params}` per line, `provider` and `model` from the query (run in a thread)."""
    target, checked_model = check_header({"provider": provider, "model": model}, targets)
    return check_submission(target, checked_model, lambda: parse_jsonl_requests(body.reader()))


def _scan_header(body: SpooledBody) -> tuple[dict[str, Any], str | None]:
    """Top-level fields but `requests` (whose first event is returned instead), and the syntax."""
    header: dict[str, Any] = {}
    requests_kind: str | None = None
    try:
        events = ijson.parse(body.reader(), use_float=True)
        first = next(events, None)
        if first is None:
            raise SubmissionError("the body is empty; expected a JSON object")
        if first[1] != "start_map":
            raise SubmissionError("the body must be a JSON object")
        for prefix, event, value in events:
            if prefix == "" and event == "map_key":
                header.setdefault(value, None)
            elif prefix == "requests" and requests_kind is None and event != "map_key":
                requests_kind = event
            elif prefix in ("provider", "model") and event not in ("map_key",):
                header[prefix] = value if event in ("string", "number", "boolean", "null") else [event]
            elif "." not in prefix and prefix not in ("", "requests", "provider", "model"):
                header[prefix] = None
    except (ijson.JSONError, ijson.IncompleteJSONError) as exc:
        raise SubmissionError(f"the body is not valid JSON: {_short(exc)}") from None
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"the body is not UTF-8: {_short(exc)}") from None
    header.pop("requests", None)
    header["requests"] = None
    return header, requests_kind


def _json_requests(body: SpooledBody) -> Iterator[Any]:
    try:
        yield from ijson.items(body.reader(), REQUESTS_ITEMS, use_float=True)
    except (ijson.JSONError, ijson.IncompleteJSONError) as exc:
        raise SubmissionError(f"the body is not valid JSON: {_short(exc)}") from None


def row_chunks(rows: Iterator[Row], size: int) -> Callable[[], list[Row]]:
    """A function that returns the next `size` rows (empty at the end); call it in a thread."""

    def take() -> list[Row]:
        chunk: list[Row] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= size:
                break
        return chunk

    return take


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."
