"""End to end on SQLite and PostgreSQL: submit through the API, poll, store, hand off, read back."""

from __future__ import annotations

import pytest

from tests.support import batch_env as _support
from tests.support import batch_handlers
from tests.support.batch_env import batch_env

shared_emulator = _support.shared_emulator  # fixtures of the batch tests
emulator = _support.emulator


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_submit_poll_ingest_handoff(make_settings, database_url, emulator, provider):
    custom_ids = [f"item-{i}" for i in range(7)] + ["item-error-7"]
    async with batch_env(make_settings, database_url, emulator) as env:
        created = await env.submit(provider, custom_ids)
        assert created["status"] == "running"
        assert created["provider_batch_id"]

        report = await env.poll()  # still running at the provider
        assert (report.polled, report.completed) == (1, 0)
        assert (await env.batch(created["id"])).status == "running"

        await env.admin.end_batch(created["provider_batch_id"])
        report = await env.poll()
        assert (report.completed, report.items_ingested) == (1, 8)

        shown = (await env.client.get(f"/v1/batches/{created['id']}")).json()
        assert shown["status"] == "completed"
        assert shown["counts"] == {"succeeded": 7, "errored": 1, "canceled": 0, "expired": 0, "missing": 0}

        lines = await env.results(created["id"])
        assert sorted(line["custom_id"] for line in lines) == sorted(custom_ids)
        by_id = {line["custom_id"]: line for line in lines}
        assert by_id["item-error-7"]["status"] == "errored" and by_id["item-error-7"]["error"]
        assert by_id["item-0"]["status"] == "succeeded" and by_id["item-0"]["result"]

        assert [c.batch_id for c in batch_handlers.CALLS] == [created["id"]]
        assert batch_handlers.CALLS[0].idempotency_key == f"{created['id']}:completed"
        await env.poll()
        await env.component.handoff.deliver_due(env.leadership)
        assert len(batch_handlers.CALLS) == 1  # delivered once, never again
