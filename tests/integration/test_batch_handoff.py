"""Completion handoff through the webhook: signed, retried with backoff, recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backburner.batches.handoff import SIGNATURE_HEADER, HandlerNotFound, resolve_handler
from tests.support import batch_env as _support
from tests.support.batch_env import FakeClock, runtime_env

shared_emulator = _support.shared_emulator  # fixtures of the batch tests
emulator = _support.emulator

SECRET = "webhook-secret"


class Receiver:
    """A webhook endpoint answering with the statuses it is given, recording every request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/batches"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver([500])
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()
    thread.join(5)


async def test_webhook_is_signed_retried_and_recorded(make_settings, database_url, emulator, receiver):
    clock = FakeClock()
    async with runtime_env(
        make_settings,
        database_url,
        emulator,
        clock,
        batch_completion_handler=None,
        batch_completion_webhook_url=receiver.url,
        batch_completion_webhook_secret=SECRET,
    ) as env:
        created = await env.submit("openai", ["w-1", "w-error-2"])
        await env.admin.end_batch(created["provider_batch_id"])
        await env.poll()  # ends the batch; the first POST gets a 500
        [delivery] = await env.component.store.deliveries(created["id"])
        assert (delivery.channel, delivery.status, delivery.attempts) == ("webhook", "pending", 1)
        assert "HTTP 500" in (delivery.last_error or "")

        clock.advance(5)
        assert await env.component.handoff.deliver_due(env.leadership) == 1
        [delivery] = await env.component.store.deliveries(created["id"])
        assert (delivery.status, delivery.attempts) == ("delivered", 2)

    assert len(receiver.received) == 2
    for headers, body in receiver.received:
        timestamp, signature = (
            part.split("=", 1)[1] for part in headers[SIGNATURE_HEADER.lower()].split(",")
        )
        expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, expected)
        assert headers["idempotency-key"] == f"{created['id']}:completed"
        payload = json.loads(body)
        assert (payload["batch_id"], payload["status"]) == (created["id"], "completed")
        assert payload["counts"]["succeeded"] == 1 and payload["counts"]["errored"] == 1


def test_a_wrong_handler_reference_is_named() -> None:
    with pytest.raises(HandlerNotFound, match="cannot import no_such_module"):
        resolve_handler("no_such_module:handle")
    with pytest.raises(HandlerNotFound, match="not a callable"):
        resolve_handler("tests.support.batch_handlers:CALLS_NOPE")
    assert callable(resolve_handler("tests.support.batch_handlers:record"))
