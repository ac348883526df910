"""Completion handoff through the webhook: signed, retried with backoff, recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from backburner.batches.handoff import HandlerNotFound, resolve_handler
from tests.support import batch_env as _support
from tests.support.batch_env import FakeClock, runtime_env
from tests.support.receiver import Receiver, running_receiver, signature_valid, statuses

shared_emulator = _support.shared_emulator  # fixtures of the batch tests
emulator = _support.emulator

SECRET = "webhook-secret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(statuses(500)) as receiver:
        yield receiver


async def test_webhook_is_signed_retried_and_recorded(make_settings, database_url, emulator, receiver):
    clock = FakeClock()
    async with runtime_env(
        make_settings,
        database_url,
        emulator,
        clock,
        batch_completion_handler=None,
        batch_completion_webhook_url=receiver.prefix + "batches",
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
    for request in receiver.received:
        assert request.path == "/hooks/batches" and signature_valid(SECRET, request)
        assert request.headers["idempotency-key"] == f"{created['id']}:completed"
        payload = json.loads(request.body)
        assert (payload["batch_id"], payload["status"]) == (created["id"], "completed")
        assert payload["counts"]["succeeded"] == 1 and payload["counts"]["errored"] == 1


def test_a_wrong_handler_reference_is_named() -> None:
    with pytest.raises(HandlerNotFound, match="cannot import no_such_module"):
        resolve_handler("no_such_module:handle")
    with pytest.raises(HandlerNotFound, match="not a callable"):
        resolve_handler("tests.support.batch_handlers:CALLS_NOPE")
    assert callable(resolve_handler("tests.support.batch_handlers:record"))
