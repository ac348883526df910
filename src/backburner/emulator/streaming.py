"""A JSONL response streamed in chunks, which can also break off mid-body on purpose."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Send

CHUNK_BYTES = 64 * 1024


async def _chunks(lines: Iterable[bytes], chunk_bytes: int) -> AsyncIterator[bytes]:
    # Lines are joined into chunks so that a 100,000-line body is a few hundred sends, not 100,000.
    pending: list[bytes] = []
    size = 0
    for line in lines:
        pending.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield b"".join(pending)
            pending.clear()
            size = 0
    if pending:
        yield b"".join(pending)


class JsonlResponse(StreamingResponse):
    """Streams ``lines``; with ``cut_after_lines`` it sends that many and then drops the connection.

    Dropping works by returning without the final body message: the server then closes the
    connection, and the client sees an incomplete chunked body, as when a real stream is cut.
    """

    def __init__(
        self,
        lines: Iterable[bytes],
        *,
        cut_after_lines: int | None = None,
        media_type: str = "application/x-jsonl",
        headers: Mapping[str, str] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if cut_after_lines is not None:
            lines = itertools.islice(lines, cut_after_lines)
        self._complete = cut_after_lines is None
        super().__init__(_chunks(lines, chunk_bytes), media_type=media_type, headers=headers)

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if self._complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
