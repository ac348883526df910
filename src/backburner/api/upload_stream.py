"""The file of a `multipart/form-data` upload as a stream of chunks, never whole in memory.

Starlette's `request.form()` spools every part to a temporary file before the route runs, so a
refused upload (unsupported type, over the limit) would still be read and written in full. Here
the body is parsed as it arrives: the `file` part's headers are known after its first bytes, and
its content is handed on chunk by chunk while the rest of the body is still on the wire.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request


class MultipartError(ValueError):
    """The body is not a usable multipart upload; the message says why."""


@dataclass(frozen=True)
class _PartStart:
    file_name: str
    content_type: str | None


_PART_END = object()


@dataclass(frozen=True)
class FilePart:
    file_name: str
    content_type: str | None
    chunks: AsyncIterator[bytes]


class _Collector:
    """Callbacks of the multipart parser: turns parser events into items of a queue."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.events: deque[object] = deque()
        self.found = False
        self._in_file = False
        self._headers: dict[bytes, bytes] = {}
        self._name = b""
        self._value = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._in_file = {}, False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._name.strip().lower()] = self._value.strip()
        self._name, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        file_name = options.get(b"filename")
        if self.found or name != self.field or file_name is None:
            return  # another field, or a second file: ignored
        self.found = self._in_file = True
        content_type = self._headers.get(b"content-type", b"").decode("latin-1") or None
        self.events.append(_PartStart(file_name.decode("utf-8", "replace"), content_type))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file and end > start:
            self.events.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self.events.append(_PART_END)


async def stream_file_part(request: Request, field: str = "file") -> FilePart:
    """Read the body up to the start of the `field` file part; its content follows lazily."""
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise MultipartError(f"expected a multipart/form-data body with a `{field}` file field")
    collector = _Collector(field)
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    events = _events(request, parser, collector)
    async for event in events:
        if isinstance(event, _PartStart):
            return FilePart(event.file_name, event.content_type, _content(events))
    raise MultipartError(f"the body has no `{field}` file field")


async def _events(request: Request, parser: MultipartParser, collector: _Collector) -> AsyncIterator[object]:
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            while collector.events:
                yield collector.events.popleft()
        parser.finalize()
    except MultipartParseError as exc:
        raise MultipartError(f"malformed multipart body: {exc}") from None
    while collector.events:
        yield collector.events.popleft()


async def _content(events: AsyncIterator[object]) -> AsyncIterator[bytes]:
    async for event in events:
        if event is _PART_END:
            return
        if isinstance(event, bytes):
            yield event
    raise MultipartError("the body ended inside the file")
