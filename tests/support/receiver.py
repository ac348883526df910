"""A webhook endpoint on 127.0.0.1 for tests: it records every request and answers as told."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from backburner.outbound import SIGNATURE_HEADER


@dataclass(frozen=True)
class Received:
    at: float  # time.time() when the request arrived
    path: str
    headers: dict[str, str]
    body: bytes


Answer = Callable[[Received], tuple[int, float]]  # -> (status, seconds to wait before answering)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every request and answers as told."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer: Answer = answer or (lambda _: (200, 0.0))
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = Received(
                    time.time(), self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with receiver._lock:
                    receiver.received.append(request)
                status, delay_s = receiver.answer(request)
                if delay_s:
                    time.sleep(delay_s)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client that gives up on a request (a cancelled delivery) is no error of the test's.
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.prefix = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/"

    def idempotency_keys(self) -> list[str]:
        with self._lock:
            return [r.headers["idempotency-key"] for r in self.received]

    def count(self) -> int:
        with self._lock:
            return len(self.received)


@contextmanager
def running_receiver(answer: Answer | None = None) -> Iterator[Receiver]:
    receiver = Receiver(answer)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(5)


def signature_valid(secret: str, request: Received) -> bool:
    parts = dict(part.split("=", 1) for part in request.headers[SIGNATURE_HEADER.lower()].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts["v1"], expected)


class Gate:
    """Holds requests until the test opens it (a slow receiver whose slowness the test decides)."""

    def __init__(self, status: int = 200) -> None:
        self.opened = threading.Event()
        self.status = status

    def __call__(self, request: Received) -> tuple[int, float]:
        self.opened.wait(30)
        return self.status, 0.0


def statuses(*answers: int) -> Answer:
    """Answer with these statuses in turn, then 200."""
    remaining = list(answers)
    lock = threading.Lock()

    def answer(request: Received) -> tuple[int, float]:
        with lock:
            return (remaining.pop(0) if remaining else 200), 0.0

    return answer
