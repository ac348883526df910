"""The lifecycle of batches against the emulator, through the API and the SDKs, on both databases:
split submissions, expiry and resubmission, enqueued-token budgets, provider files, named
providers, an unreachable provider, a transient 404, and cycles that survive what they cannot
record."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from backburner.batches.tables import llm_batch_items, llm_batches
from backburner.db.tables import organizations
from tests.support import batch_env as _support
from tests.support.batch_env import BatchEnv, batch_env, requests_for
from tests.support.processes import free_port

shared_emulator = _support.shared_emulator  # fixtures of the batch tests
emulator = _support.emulator

DAY_S = 24 * 3600


async def _submit(env: BatchEnv, provider: str, custom_ids: list[str], **kwargs: Any) -> Any:
    return await env.client.post(  # type: ignore[union-attr]
        "/v1/batches",
        json={"provider": provider, "model": "test-model", "requests": requests_for(custom_ids)},
        **kwargs,
    )


async def _show(env: BatchEnv, batch_id: str) -> dict[str, Any]:
    response = await env.client.get(f"/v1/batches/{batch_id}")  # type: ignore[union-attr]
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _end_all(env: BatchEnv, view: dict[str, Any]) -> None:
    for part in view["parts"] or [view]:
        await env.admin.end_batch(part["provider_batch_id"])


async def _count_rows(env: BatchEnv) -> tuple[int, int]:
    async with env.runtime.engine.connect() as conn:
        batches = (await conn.execute(select(func.count()).select_from(llm_batches))).scalar_one()
        items = (await conn.execute(select(func.count()).select_from(llm_batch_items))).scalar_one()
    return batches, items


@pytest.mark.timeout(900)
# At the providers' real limits, each provider once and on a database of its own: the split is the
# same on both databases, and the stored results go through the same store for both providers.
@pytest.mark.parametrize(
    ("database_url", "provider", "parts"),
    [("sqlite", "anthropic", 2), ("postgres", "openai", 3)],
    indirect=["database_url"],
)
async def test_a_120k_submission_is_split_into_parts_and_every_item_stored_once(
    make_settings, database_url, emulator, provider, parts
):
    count = 120_000
    settings = {"batch_results_chunk_size": 5000, "provider_timeout_seconds": 60.0}
    async with batch_env(make_settings, database_url, emulator, **settings) as env:
        response = await _submit(env, provider, [f"r{n}" for n in range(count)])
        assert response.status_code == 201, response.text
        created = response.json()
        assert (created["request_count"], created["part_count"], created["status"]) == (
            count,
            parts,
            "running",
        )
        assert [p["status"] for p in created["parts"]] == ["running"] * parts
        assert sum(p["request_count"] for p in created["parts"]) == count
        assert len({p["provider_batch_id"] for p in created["parts"]}) == parts
        listed = (await env.client.get("/v1/batches")).json()["data"]  # type: ignore[union-attr]
        assert [b["id"] for b in listed] == [created["id"]]  # one batch, not one per part

        await _end_all(env, created)
        completed = 0
        for _ in range(5):  # a results stream cut on a loaded machine is read again next cycle
            report = await env.poll()
            completed += report.completed
            assert report.failed == 0
            if completed == parts:
                break
        assert completed == parts
        done = await _show(env, created["id"])
        assert done["status"] == "completed" and done["counts"]["succeeded"] == count
        seen = Counter[str]()
        async with env.client.stream("GET", f"/v1/batches/{created['id']}/results") as results:  # type: ignore[union-attr]
            async for line in results.aiter_lines():
                if line:
                    seen[line.split('"', 4)[3]] += 1
        assert len(seen) == count and set(seen.values()) == {1}
        assert done["usage"]["input_tokens"] == sum(10 + len(f"r{n}") for n in range(count))


async def test_an_expired_batch_keeps_its_finished_items_and_the_rest_are_resubmitted(
    make_settings, database_url, emulator
):
    async with batch_env(make_settings, database_url, emulator) as env:
        await env.admin.set_scenario(complete_after_s=40 * 3600)  # 24 of 40 hours: 60 % done in time
        created = (await _submit(env, "openai", [f"x{n:02d}" for n in range(20)])).json()
        await env.admin.advance_clock(DAY_S)
        await env.poll()
        expired = await _show(env, created["id"])
        assert expired["status"] == "expired"
        assert (expired["counts"]["succeeded"], expired["counts"]["expired"]) == (12, 8)
        rows = await env.results(created["id"])
        late = [r for r in rows if r["status"] == "expired"]
        assert [r["custom_id"] for r in late] == [f"x{n:02d}" for n in range(12, 20)]
        assert all(r["error"].startswith("batch_expired:") for r in late)  # the provider's reason

        await env.admin.set_scenario()
        response = await env.client.post(f"/v1/batches/{created['id']}/resubmit?items=expired")  # type: ignore[union-attr]
        assert response.status_code == 201, response.text
        again = response.json()
        assert (again["resubmitted_from"], again["request_count"]) == (created["id"], 8)
        await env.admin.end_batch(again["provider_batch_id"])
        await env.poll()
        finished = await _show(env, again["id"])
        assert (finished["status"], finished["counts"]["succeeded"]) == ("completed", 8)
        assert sorted(r["custom_id"] for r in await env.results(again["id"])) == [
            f"x{n:02d}" for n in range(12, 20)
        ]
        conflict = await env.client.post(f"/v1/batches/{again['id']}/resubmit?items=errored")  # type: ignore[union-attr]
        assert conflict.status_code == 409 and "no errored items" in conflict.json()["detail"]
        bad = await env.client.post(f"/v1/batches/{again['id']}/resubmit?items=everything")  # type: ignore[union-attr]
        assert bad.status_code == 422


async def test_a_token_budget_queues_a_batch_until_the_first_ends_and_refunds_on_cancel(
    make_settings, database_url, emulator
):
    # Each request is about 22 tokens: three fit in 100, six do not.
    budget = {"openai_enqueued_token_limits": {"test-model": 100}}
    async with batch_env(make_settings, database_url, emulator, **budget) as env:
        first = (await _submit(env, "openai", ["a1", "a2", "a3"])).json()
        second = (await _submit(env, "openai", ["b1", "b2", "b3"])).json()
        assert (first["status"], second["status"]) == ("running", "queued")
        assert second["provider_batch_id"] is None
        await env.poll()
        assert (await _show(env, second["id"]))["status"] == "queued"  # the first still holds the budget

        await env.admin.end_batch(first["provider_batch_id"])
        await env.poll()  # the first ends, and the same cycle sends the second
        assert (await _show(env, first["id"]))["status"] == "completed"
        sent = await _show(env, second["id"])
        assert sent["status"] == "running" and sent["provider_batch_id"] is not None

        third = (await _submit(env, "openai", ["c1", "c2", "c3"])).json()
        assert third["status"] == "queued"
        cancelled = await env.client.post(f"/v1/batches/{second['id']}/cancel")  # type: ignore[union-attr]
        assert cancelled.status_code == 200
        await env.admin.end_batch(sent["provider_batch_id"])  # the provider finishes cancelling
        await env.poll()
        assert (await _show(env, second["id"]))["status"] == "cancelled"
        assert (await _show(env, third["id"]))["status"] == "running"  # refunded, so it went


async def test_a_token_limit_answer_from_the_provider_puts_the_batch_back_in_the_queue(
    make_settings, database_url, emulator
):
    async with batch_env(make_settings, database_url, emulator) as env:
        emulator.state.config.openai_enqueued_token_limits["test-model"] = 100
        try:
            first = (await _submit(env, "openai", ["a1", "a2", "a3"])).json()
            second = (await _submit(env, "openai", ["b1", "b2", "b3"])).json()
            assert (first["status"], second["status"]) == ("running", "queued")
            assert "enqueued-token limit" in second["last_error"]
            await env.admin.end_batch(first["provider_batch_id"])
            await env.poll()
            assert (await _show(env, second["id"]))["status"] == "running"
        finally:
            emulator.state.config.openai_enqueued_token_limits.clear()


async def test_provider_files_are_deleted_once_every_item_is_stored(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator) as env:
        openai_batch = (await _submit(env, "openai", ["o-1", "o-error-2"])).json()
        anthropic_batch = (await _submit(env, "anthropic", ["a-1"])).json()
        assert (await env.admin.stats())["files"] == 3  # the input file and the two result files
        for created in (openai_batch, anthropic_batch):
            await env.admin.end_batch(created["provider_batch_id"])
        report = await env.poll()
        assert report.files_deleted == 2
        stats = await env.admin.stats()
        assert stats["files"] == 0 and stats["batches"]["anthropic"] == 0
        assert len(await env.results(openai_batch["id"])) == 2  # stored before anything was deleted
        assert (await env.poll()).files_deleted == 0  # each deleted once


async def test_files_are_kept_when_asked(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator, batch_delete_provider_files=False) as env:
        created = (await _submit(env, "openai", ["o-1"])).json()
        await env.admin.end_batch(created["provider_batch_id"])
        assert (await env.poll()).files_deleted == 0
        assert (await env.admin.stats())["files"] == 3  # the input file and both result files


async def test_a_named_openai_compatible_provider(make_settings, database_url, emulator):
    named = {"compat": {"kind": "openai", "base_url": emulator.openai_base_url, "api_key": "other-key"}}
    async with batch_env(make_settings, database_url, emulator, providers=named) as env:
        created = (await _submit(env, "compat", ["n-1", "n-2"])).json()
        assert (created["provider"], created["status"]) == ("compat", "running")
        await env.admin.end_batch(created["provider_batch_id"])
        report = await env.poll()
        assert report.completed == 1
        assert (await _show(env, created["id"]))["counts"]["succeeded"] == 2
        metrics = (await env.client.get("/metrics")).text  # type: ignore[union-attr]
        assert 'backburner_batches{provider="compat",status="completed"} 1.0' in metrics
        unknown = await _submit(env, "groq", ["g-1"])
        assert (
            unknown.status_code == 422 and "configured providers: anthropic, openai, compat" in unknown.text
        )


async def test_an_unreachable_provider_is_answered_at_once_and_leaves_nothing(
    make_settings, database_url, emulator
):
    closed = f"http://127.0.0.1:{free_port()}"
    async with batch_env(make_settings, database_url, emulator, anthropic_base_url=closed) as env:
        started = time.monotonic()
        response = await _submit(env, "anthropic", ["u-1"], headers={"idempotency-key": "k-1"})
        assert time.monotonic() - started < 10  # not a timeout: the connection was refused
        assert response.status_code == 503 and response.headers["retry-after"]
        detail = response.json()["detail"]
        assert closed in detail and "nothing was sent" in detail
        assert await _count_rows(env) == (0, 0)
        # The key is free: the same request may go elsewhere, and is created anew.
        again = await _submit(env, "openai", ["u-1"], headers={"idempotency-key": "k-1"})
        assert again.status_code == 201


async def test_an_idempotency_key_is_reusable_after_a_429_on_create(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator) as env:
        await env.admin.add_fault(route="anthropic.batches.create", kind="rate_limit", retry_after_s=3)
        refused = await _submit(env, "anthropic", ["k-1"], headers={"idempotency-key": "same"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
        assert refused.json()["batch"]["status"] == "failed"
        retried = await _submit(env, "anthropic", ["k-1"], headers={"idempotency-key": "same"})
        assert retried.status_code == 201, retried.text
        assert retried.json()["id"] != refused.json()["batch"]["id"]
        assert retried.json()["status"] == "running"
        repeat = await _submit(env, "anthropic", ["k-1"], headers={"idempotency-key": "same"})
        assert (repeat.status_code, repeat.json()["id"]) == (200, retried.json()["id"])


async def test_a_404_just_after_creation_is_retried(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator, batch_poll_max_consecutive_errors=1) as env:
        await env.admin.set_scenario(not_found_polls=2)
        created = (await _submit(env, "anthropic", ["t-1"])).json()
        for _ in range(2):
            report = await env.poll()
            assert (report.errors, report.failed) == (1, 0)
            shown = await _show(env, created["id"])
            assert (shown["status"], shown["consecutive_errors"]) == ("running", 0)
        await env.admin.end_batch(created["provider_batch_id"])
        assert (await env.poll()).completed == 1


async def test_the_cycle_names_failed_batches_as_failed(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator, batch_poll_max_consecutive_errors=1) as env:
        created = (await _submit(env, "openai", ["f-1"])).json()
        await env.admin.add_fault(route="openai.batches.retrieve", kind="server_error")
        report = await env.poll()
        assert (report.completed, report.failed) == (0, 1)
        view = (await env.client.get("/api/admin/batch-jobs")).json()  # type: ignore[union-attr]
        assert (view["last_cycle"]["completed"], view["last_cycle"]["failed"]) == (0, 1)
        assert (await _show(env, created["id"]))["status"] == "failed"


async def test_the_cycle_survives_a_batch_whose_outcome_cannot_be_recorded(
    make_settings, database_url, emulator
):
    async with batch_env(make_settings, database_url, emulator) as env:
        async with env.runtime.engine.begin() as conn:
            await conn.execute(organizations.insert().values(id="org-b", name="b", created_at=func.now()))
        doomed = (await _submit(env, "anthropic", ["d-1"])).json()
        other = await env.submit("openai", ["o-1"])
        async with env.runtime.engine.begin() as conn:  # a row the database refuses to change
            await conn.execute(
                text("UPDATE llm_batches SET organization_id = 'org-b' WHERE id = :id"), {"id": other["id"]}
            )
            await _refuse_updates_of(conn, doomed["id"])
        for created in (doomed, other):
            await env.admin.end_batch(created["provider_batch_id"])
        report = await env.poll()
        assert report.completed == 1 and report.errors >= 1
        moved = await env.component.store.unit(other["id"])
        assert moved is not None and moved.status == "completed"  # the other organization's batch
        stuck = await _show(env, doomed["id"])
        assert stuck["status"] == "running"
        assert (await env.client.get("/api/admin/batch-jobs")).json()["last_cycle"] is not None  # type: ignore[union-attr]


async def _refuse_updates_of(
    conn: Any, batch_id: str, table: str = "llm_batches", column: str = "id"
) -> None:
    """A trigger that makes the database refuse to change this batch's rows of `table`."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text(
                "CREATE FUNCTION refuse_update() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'this row cannot change'; END $$ LANGUAGE plpgsql"
            )
        )
        await conn.execute(
            text(
                f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} FOR EACH ROW "
                f"WHEN (OLD.{column} = '{batch_id}') EXECUTE FUNCTION refuse_update()"
            )
        )
    else:
        await conn.execute(
            text(
                f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} WHEN OLD.{column} = '{batch_id}' "
                "BEGIN SELECT RAISE(ABORT, 'this row cannot change'); END"
            )
        )


async def test_tenants_read_a_short_clean_reason(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator) as env:
        created = (await _submit(env, "anthropic", ["c-1"])).json()
        async with env.runtime.engine.begin() as conn:  # its results cannot be stored
            await _refuse_updates_of(conn, created["id"], "llm_batch_items", "batch_id")
        await env.admin.end_batch(created["provider_batch_id"])
        report = await env.poll()
        assert report.errors == 1
        shown = await _show(env, created["id"])
        assert shown["status"] == "ingesting" and shown["consecutive_errors"] == 1
        assert shown["last_error"] is not None and len(shown["last_error"]) < 300
        for leaked in ("SELECT", "INSERT", "Traceback", "[parameters", "llm_batch", "cannot change"):
            assert leaked not in shown["last_error"]


async def test_a_timeout_after_sending_is_reconciled_within_a_minute(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator, provider_timeout_seconds=1.0) as env:
        for provider in ("anthropic", "openai"):
            await env.admin.add_fault(route=f"{provider}.batches.create", kind="delay", delay_s=2.0)
            response = await _submit(env, provider, [f"{provider}-1", f"{provider}-2"])
            assert response.status_code == 504, response.text
            batch_id = response.json()["batch"]["id"]
            assert response.json()["batch"]["status"] == "submitting"
            deadline = time.monotonic() + 60
            while (shown := await _show(env, batch_id))["status"] == "submitting":
                assert time.monotonic() < deadline, f"{provider}: not reconciled within a minute"
                await asyncio.sleep(0.2)
            assert shown["status"] == "running" and shown["provider_batch_id"] is not None
            assert (await env.admin.stats())["batches"][provider] == 1  # adopted, not sent twice


async def test_concurrent_submissions_are_capped(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator, batch_max_concurrent_submissions=1) as env:
        await env.admin.add_fault(route="anthropic.batches.create", kind="delay", delay_s=1.0, count=2)
        started = time.monotonic()
        first, second = await asyncio.gather(
            _submit(env, "anthropic", ["c-1"]), _submit(env, "anthropic", ["c-2"])
        )
        assert (first.status_code, second.status_code) == (201, 201)
        assert time.monotonic() - started >= 2.0  # one after the other, never both at once


async def test_listing_cursors_answer_400_when_unknown_or_malformed(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator) as env:
        created = (await _submit(env, "anthropic", ["l-1"])).json()
        ok = await env.client.get("/v1/batches", params={"before": created["id"]})  # type: ignore[union-attr]
        assert ok.status_code == 200 and ok.json()["data"] == []
        for cursor in ("batch-unknown", "not a cursor", "x" * 100, "\u00e9t\u00e9"):
            response = await env.client.get("/v1/batches", params={"before": cursor})  # type: ignore[union-attr]
            assert response.status_code == 400, (cursor, response.text)
            assert "before" in response.json()["detail"]


async def test_old_results_are_removed_by_the_retention_job(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator, batch_retention_days=1) as env:
        created = (await _submit(env, "anthropic", ["r-1", "r-2"])).json()
        await env.admin.end_batch(created["provider_batch_id"])
        await env.poll()
        retention = env.component.retention
        assert await retention.run_once(env.leadership) == 0  # ended moments ago: kept
        ended = await env.batch(created["id"])
        assert ended.ended_at is not None
        async with env.runtime.engine.begin() as conn:  # as if it had ended two days ago
            await conn.execute(
                llm_batches.update()
                .where(llm_batches.c.id == created["id"])
                .values(ended_at=ended.ended_at - timedelta(days=2))
            )
        assert await retention.run_once(env.leadership) == 2
        gone = await env.client.get(f"/v1/batches/{created['id']}/results")  # type: ignore[union-attr]
        assert gone.status_code == 410 and "batch_retention_days" in gone.json()["detail"]
        shown = await _show(env, created["id"])
        assert shown["counts"]["succeeded"] == 2 and shown["usage"]["output_tokens"] == 24  # totals stay
        assert shown["results_removed_at"] is not None
        assert await _count_rows(env) == (1, 0)
        assert "batches.retention" in [job.id for job in env.runtime.jobs.specs()]
