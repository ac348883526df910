"""A local OpenAI-compatible `/v1/embeddings` endpoint for tests: slow, failing or hanging on demand.

It runs in a thread of the test process, so workers in the test and workers in subprocesses
reach it the same way, through the real `openai` embedder and HTTP. Vectors come from the
`hash` embedder, so searches behave as with real embeddings.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from backburner.files.embedding.embedders import HashEmbedder

DIMENSIONS = 64
HANG_LIMIT_S = 60.0


class EmbeddingEndpoint:
    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.faults: deque[int] = deque()  # statuses to answer, one per request, before answering well
        self.hang_after: int | None = None  # requests answered before every later one hangs
        self.requests = 0
        self.texts = 0
        self.active = 0  # requests being answered now
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._embedder = HashEmbedder(DIMENSIONS)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedding-endpoint", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> EmbeddingEndpoint:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def release(self) -> None:
        """Let hanging requests answer (their clients may be gone by then)."""
        self._release.set()

    def _answer(self, texts: list[str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.active += 1
        try:
            return self._answer_counted(texts)
        finally:
            with self._lock:
                self.active -= 1

    def _answer_counted(self, texts: list[str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests += 1
            number = self.requests
            fault = self.faults.popleft() if self.faults else None
        if fault is not None:
            return fault, {"error": {"message": f"injected {fault}", "type": "test"}}
        if self.hang_after is not None and number > self.hang_after:
            self._release.wait(HANG_LIMIT_S)
        elif self.delay_s:
            self._release.wait(self.delay_s)
        with self._lock:
            self.texts += len(texts)
        vectors = self._embedder.embed_sync(texts)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return 200, {
            "object": "list",
            "data": data,
            "model": "test",
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/") != "/v1/embeddings":
                    status, payload = 404, {"error": {"message": "not found"}}
                else:
                    texts = body.get("input", [])
                    status, payload = endpoint._answer([texts] if isinstance(texts, str) else list(texts))
                encoded = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(encoded)))
                    if status == 429:
                        self.send_header("retry-after-ms", "20")
                    self.end_headers()
                    self.wfile.write(encoded)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (cancelled at its deadline)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler
