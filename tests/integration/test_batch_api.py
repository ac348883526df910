"""The batch routes: bad input is refused before anything is sent or stored; reads; admin view."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from backburner.batches.intake import SPOOL_MEMORY_BYTES
from backburner.batches.tables import llm_batch_items, llm_batches
from tests.support import batch_env as _support
from tests.support.batch_env import batch_env, requests_for

shared_emulator = _support.shared_emulator  # fixtures of the batch tests
emulator = _support.emulator


async def _stored_rows(env) -> tuple[int, int]:
    async with env.runtime.engine.connect() as conn:
        batches = (await conn.execute(select(func.count()).select_from(llm_batches))).scalar_one()
        items = (await conn.execute(select(func.count()).select_from(llm_batch_items))).scalar_one()
    return batches, items


def _body(provider: str = "anthropic", requests=None, **extra):
    return {
        "provider": provider,
        "model": "m",
        "requests": requests_for(["a", "b"]) if requests is None else requests,
        **extra,
    }


BAD_JSON_BODIES = {
    "duplicate custom ids": (
        _body(requests=requests_for(["a", "b", "a"])),
        422,
        "'a' duplicates requests[0]",
    ),
    "unknown provider": (_body(provider="gemini"), 422, "unknown provider 'gemini'"),
    "params not an object": (
        _body(requests=[{"custom_id": "a", "params": ["not", "an", "object"]}]),
        422,
        "requests[0].params must be an object, not a list",
    ),
    "one request larger than a whole batch": (
        _body(provider="openai", requests=[{"custom_id": "big", "params": {"text": "x" * 5000}}]),
        413,
        "requests[0] alone is",
    ),
    "bad anthropic custom id": (
        _body(requests=requests_for(["has space"])),
        422,
        "custom_id 'has space' is invalid",
    ),
    "no requests": (_body(requests=[]), 422, "requests must be a non-empty list"),
}


async def test_bad_input_is_refused_naming_the_problem_and_nothing_is_sent(
    make_settings,
    database_url,
    emulator,
):
    async with batch_env(make_settings, database_url, emulator, openai_batch_max_bytes=4096) as env:
        for name, (body, status, message) in BAD_JSON_BODIES.items():
            response = await env.client.post("/v1/batches", json=body)
            assert response.status_code == status, (name, response.text)
            assert message in response.json()["detail"], (name, response.json())

        malformed = b'{"custom_id": "a", "params": {}}\n{"custom_id": "b", "params": \n'
        response = await env.client.post(
            "/v1/batches?provider=openai&model=m",
            content=malformed,
            headers={"content-type": "application/jsonl"},
        )
        assert response.status_code == 422
        assert "malformed JSONL at line 2" in response.json()["detail"]

        response = await env.client.post(
            "/v1/batches", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]

        assert await env.provider_requests() == 0  # the emulator saw no request at all
        assert await _stored_rows(env) == (0, 0)


async def test_jsonl_submission_and_reads(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator) as env:
        lines = "\n".join(json.dumps(r) for r in requests_for(["j-1", "j-2", "j-3"])).encode()
        response = await env.client.post(
            "/v1/batches?provider=openai&model=gpt-test",
            content=lines,
            headers={"content-type": "application/jsonl"},
        )
        assert response.status_code == 201, response.text
        created = response.json()
        assert (created["provider"], created["model"], created["request_count"]) == ("openai", "gpt-test", 3)

        others = [await env.submit("anthropic", [f"x-{i}"]) for i in range(3)]
        page = (await env.client.get("/v1/batches", params={"limit": 2})).json()
        assert [b["id"] for b in page["data"]] == [others[2]["id"], others[1]["id"]] and page["has_more"]
        rest = (
            await env.client.get("/v1/batches", params={"limit": 2, "before": page["next_before"]})
        ).json()
        assert [b["id"] for b in rest["data"]] == [others[0]["id"], created["id"]] and not rest["has_more"]
        only = (await env.client.get("/v1/batches", params={"status": "completed"})).json()
        assert only["data"] == []

        assert (await env.client.get("/v1/batches/batch-nope")).status_code == 404
        assert (await env.client.get("/v1/batches/batch-nope/results")).status_code == 404
        assert (await env.client.get("/v1/batches", params={"limit": 100_000})).status_code == 422

        # Items are readable (pending) while the batch runs.
        pending = await env.client.get(f"/v1/batches/{created['id']}/results")
        assert pending.headers["x-batch-status"] == "running"
        assert [json.loads(line)["status"] for line in pending.text.splitlines()] == ["pending"] * 3


async def test_idempotency_key_returns_the_first_batch(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator) as env:
        body = _body()
        first = await env.client.post("/v1/batches", json=body, headers={"idempotency-key": "order-42"})
        again = await env.client.post("/v1/batches", json=body, headers={"idempotency-key": "order-42"})
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"]
        assert await env.admin.request_count("anthropic.batches.create") == 1


async def test_provider_refusal_and_cancel_conflicts(make_settings, database_url, emulator):
    async with batch_env(make_settings, database_url, emulator) as env:
        # Anthropic's own validation refuses a request without max_tokens: the record is failed.
        refused = await env.client.post(
            "/v1/batches",
            json={
                "provider": "anthropic",
                "model": "m",
                "requests": [{"custom_id": "a", "params": {"messages": []}}],
            },
        )
        # The caller's input was refused: a 4xx, not a server error.
        assert refused.status_code == 422 and "HTTP 400" in refused.json()["detail"]
        assert refused.json()["batch"]["status"] == "failed"

        await env.admin.add_fault(route="openai.files.create", kind="rate_limit", retry_after_s=7)
        throttled = await env.client.post("/v1/batches", json=_body(provider="openai"))
        assert throttled.status_code == 503 and throttled.headers["retry-after"] == "7"

        created = await env.submit("anthropic", ["c-1"])
        cancelled = await env.client.post(f"/v1/batches/{created['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["provider_status"] == "canceling"
        assert (
            await env.client.post(f"/v1/batches/{refused.json()['batch']['id']}/cancel")
        ).status_code == 409


async def test_admin_batch_jobs(make_settings, database_url, emulator):
    prices = {"test-model": {"input": 3.0, "output": 15.0}}
    async with batch_env(make_settings, database_url, emulator, batch_prices=prices) as env:
        empty = (await env.client.get("/api/admin/batch-jobs")).json()
        assert empty == {"counts": {}, "running": [], "queued": [], "last_cycle": None, "spend": []}

        running = await env.submit("openai", ["a-1"])
        ended = await env.submit("anthropic", ["b-1", "b-2"])
        await env.admin.end_batch(ended["provider_batch_id"])
        await env.admin.add_fault(route="openai.batches.retrieve", kind="server_error")
        await env.poll()

        view = (await env.client.get("/api/admin/batch-jobs")).json()
        assert view["counts"] == {"anthropic": {"completed": 1}, "openai": {"running": 1}}
        [entry] = view["running"]
        assert set(entry) == {
            "id",
            "provider",
            "status",
            "parent_batch_id",
            "provider_batch_id",
            "last_polled_at",
            "next_poll_at",
            "consecutive_errors",
            "last_error",
        }
        assert (entry["id"], entry["consecutive_errors"]) == (running["id"], 1)
        assert "500" in entry["last_error"]
        cycle = view["last_cycle"]
        assert set(cycle) == {
            "started_at",
            "duration_s",
            "polled",
            "completed",
            "failed",
            "items_ingested",
            "errors",
        }
        assert (cycle["polled"], cycle["completed"], cycle["items_ingested"], cycle["errors"]) == (2, 1, 2, 1)
        # Usage of b-1 and b-2 as the emulator reports it: 10 + len(custom id) in, 12 out each.
        [spend] = view["spend"]
        assert (spend["provider"], spend["model"], spend["input_tokens"], spend["output_tokens"]) == (
            "anthropic",
            "test-model",
            26,
            24,
        )
        assert spend["estimated_cost_usd"] == pytest.approx((26 * 3.0 + 24 * 15.0) / 1e6 * 0.5)
        shown = (await env.client.get(f"/v1/batches/{ended['id']}")).json()
        assert (shown["usage"]["input_tokens"], shown["usage"]["output_tokens"]) == (26, 24)
        assert shown["usage"]["estimated_cost_usd"] == spend["estimated_cost_usd"]

        metrics = (await env.client.get("/metrics")).text
        assert 'backburner_batch_items_ingested_total{provider="anthropic"} 2.0' in metrics
        assert 'backburner_batch_provider_errors_total{provider="openai",status_code="500"} 1.0' in metrics
        assert 'backburner_batches{provider="anthropic",status="completed"} 1.0' in metrics
        assert "backburner_batch_poll_cycle_duration_seconds_count 1.0" in metrics
        assert 'backburner_batch_tokens{kind="input",model="test-model",provider="anthropic"} 26.0' in metrics
        assert 'backburner_batch_estimated_cost_usd{model="test-model",provider="anthropic"}' in metrics


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_unconfigured_provider_is_refused_before_anything_is_written(
    make_settings,
    database_url,
    emulator,
    provider,
):
    async with batch_env(make_settings, database_url, emulator, **{f"{provider}_api_key": None}) as env:
        response = await env.client.post("/v1/batches", json=_body(provider=provider))
        assert response.status_code == 503 and f"set {provider}_api_key" in response.json()["detail"]
        assert await _stored_rows(env) == (0, 0)


def _large_requests(count: int, prefix: str) -> list[dict[str, object]]:
    """About 3 kB a request: a few thousand outgrow the body's memory spool."""
    content = "z" * 3000
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "params": {"max_tokens": 8, "messages": [{"role": "user", "content": content}]},
        }
        for i in range(count)
    ]


async def test_a_body_past_the_memory_spool_is_checked_in_a_process_and_stored(
    make_settings, database_url, emulator
):
    count = SPOOL_MEMORY_BYTES // 3000 + 200
    async with batch_env(
        make_settings, database_url, emulator, openai_batch_max_bytes=2 * SPOOL_MEMORY_BYTES
    ) as env:
        response = await env.client.post("/v1/batches", json=_body("anthropic", _large_requests(count, "a")))
        assert response.status_code == 201, response.text
        assert response.json()["request_count"] == count

        lines = "\n".join(json.dumps(r) for r in _large_requests(count, "j")).encode()
        response = await env.client.post(
            "/v1/batches?provider=openai&model=m",
            content=lines,
            headers={"content-type": "application/jsonl"},
        )
        assert response.status_code == 201, response.text
        assert await _stored_rows(env) == (2, 2 * count)

        # What the checking process finds keeps its status and names the problem.
        duplicated = [*_large_requests(count, "d"), *_large_requests(1, "d")]
        response = await env.client.post("/v1/batches", json=_body("anthropic", duplicated))
        assert response.status_code == 422 and "duplicates requests[0]" in response.json()["detail"]
        one_too_big = _large_requests(count, "b")
        one_too_big[-1]["params"] = {"content": "x" * (2 * SPOOL_MEMORY_BYTES)}
        response = await env.client.post("/v1/batches", json=_body("openai", one_too_big))
        assert response.status_code == 413, response.text
        assert await _stored_rows(env) == (2, 2 * count)
