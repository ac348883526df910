"""Reading a submission body without holding it or blocking the event loop.

The body is copied as it arrives: into memory up to a few megabytes, into a named temporary file
beyond. Checking it (JSON through `ijson`, JSONL line by line) is one pass that keeps only what
planning needs; the rows are read again from the copy, a chunk at a time, when they are stored.
A body in memory is checked in a thread. A body on disk is checked in a process of its own: a
thread checking 250 MB held the interpreter lock for up to 0.3 s at a time, and `/healthz`
waited for it (95th percentile 0.06 to 0.21 s, run to run, against a goal of 0.1).
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import IO, Any, Protocol, TypeVar

import ijson

from backburner.batches.validation import (
    CheckedRequests,
    Row,
    Submission,
    SubmissionError,
    Target,
    check_all,
    check_header,
    parse_jsonl_requests,
    submission_of,
)

SPOOL_MEMORY_BYTES = 4 * 1024 * 1024
WRITE_BATCH_BYTES = 1024 * 1024
JSONL_TYPES = frozenset({"application/jsonl", "application/x-ndjson", "application/x-jsonlines"})
REQUESTS_ITEMS = "requests.item"

Targets = Callable[[str, str], Target]
T = TypeVar("T")


class Body(Protocol):
    def reader(self) -> IO[bytes]:
        """The body from its start (each call starts again)."""
        ...


class SpooledBody:
    """A request body copied as it arrives: in memory up to `spool_bytes`, then in a named
    temporary file (`path`), which a checking process can open. `close` removes it."""

    def __init__(self, spool_bytes: int = SPOOL_MEMORY_BYTES) -> None:
        self._spool_bytes = spool_bytes
        self._memory = io.BytesIO()
        self._disk: IO[bytes] | None = None
        self.size_bytes = 0

    @property
    def path(self) -> str | None:
        """The file holding the body, once it outgrew memory."""
        return self._disk.name if self._disk is not None else None

    async def fill(self, chunks: AsyncIterator[bytes]) -> None:
        """Copy the body; writes happen in a thread, a megabyte at a time."""
        pending: list[bytes] = []
        pending_bytes = 0
        async for chunk in chunks:
            if not chunk:
                continue
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= WRITE_BATCH_BYTES:
                await asyncio.to_thread(self._write, b"".join(pending))
                pending, pending_bytes = [], 0
        if pending:
            await asyncio.to_thread(self._write, b"".join(pending))
        if self._disk is not None:
            self._disk.flush()

    def _write(self, data: bytes) -> None:
        self.size_bytes += len(data)
        if self._disk is None and self.size_bytes > self._spool_bytes:
            self._disk = tempfile.NamedTemporaryFile(prefix="backburner-body-")  # noqa: SIM115
            self._disk.write(self._memory.getbuffer())
            self._memory = io.BytesIO()
        (self._disk or self._memory).write(data)

    def reader(self) -> IO[bytes]:
        current = self._disk or self._memory
        current.seek(0)
        return current

    def close(self) -> None:
        self._memory.close()
        if self._disk is not None:
            self._disk.close()


class BodyFile:
    """A body another process spooled, read from its path."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._file: IO[bytes] | None = None

    def reader(self) -> IO[bytes]:
        self.close()
        self._file = open(self._path, "rb")  # noqa: SIM115
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class BodyChecker:
    """Checks submission bodies: one in memory in a thread, one on disk in a process of its own
    (started at the first such body, one at a time; `submission_slots` bounds what waits)."""

    def __init__(self) -> None:
        self._processes: ProcessPoolExecutor | None = None

    async def check_json(self, body: SpooledBody, targets: Targets) -> Submission:
        """`{provider, model, requests: [...]}`."""
        header, requests_kind = await self._run(body, scan_json_header)
        target, model = check_header(header, targets)
        if requests_kind != "start_array":
            raise SubmissionError("requests must be a non-empty list of {custom_id, params} objects")
        checked = await self._run(body, check_json_requests, target, model)
        return submission_of(target, model, checked, lambda: _json_requests(body))

    async def check_jsonl(
        self, body: SpooledBody, provider: str | None, model: str | None, targets: Targets
    ) -> Submission:
        """One `{custom_id, params}` per line, `provider` and `model` from the query."""
        target, checked_model = check_header({"provider": provider, "model": model}, targets)
        checked = await self._run(body, check_jsonl_requests, target, checked_model)
        return submission_of(target, checked_model, checked, lambda: parse_jsonl_requests(body.reader()))

    async def _run(self, body: SpooledBody, check: Callable[..., T], *args: Any) -> T:
        if body.path is None:
            return await asyncio.to_thread(check, body, *args)
        if self._processes is None:
            self._processes = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"))
        return await asyncio.get_running_loop().run_in_executor(self._processes, check, body.path, *args)

    def close(self) -> None:
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)


@contextmanager
def _opened(body: Body | str) -> Iterator[Body]:
    """The body itself, or (in the checking process) the file at its path, closed after."""
    if not isinstance(body, str):
        yield body
        return
    file = BodyFile(body)
    try:
        yield file
    finally:
        file.close()


def scan_json_header(body: Body | str) -> tuple[dict[str, Any], str | None]:
    """Top-level fields but `requests` (whose first event is returned instead), and the syntax."""
    with _opened(body) as opened:
        return _scan_header(opened)


def check_json_requests(body: Body | str, target: Target, model: str) -> CheckedRequests:
    with _opened(body) as opened:
        return check_all(target, model, lambda: _json_requests(opened))


def check_jsonl_requests(body: Body | str, target: Target, model: str) -> CheckedRequests:
    with _opened(body) as opened:
        return check_all(target, model, lambda: parse_jsonl_requests(opened.reader()))


def _scan_header(body: Body) -> tuple[dict[str, Any], str | None]:
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


def _json_requests(body: Body) -> Iterator[Any]:
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
