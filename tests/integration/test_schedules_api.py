"""The schedule routes on both databases, through the real app with API keys of two organizations;
the app's own leader fires the schedules, to a receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from backburner.auth import store as keys
from backburner.clock import utcnow
from backburner.schedules.specs import compile_cron, next_fire_times
from tests.conftest import MakeSettings
from tests.support.app import asgi_client, make_key, started_app
from tests.support.receiver import Receiver, running_receiver, signature_valid
from tests.support.routes import api_routes

HANDLERS = {"record": "tests.support.schedules:record_fire"}
BERLIN = ZoneInfo("Europe/Berlin")


@dataclass
class Api:
    app: FastAPI
    acme: httpx.AsyncClient
    globex: httpx.AsyncClient
    receiver: Receiver

    async def create(self, **body: Any) -> dict[str, Any]:
        body.setdefault("webhook_url", self.receiver.prefix + "agent")
        response = await self.acme.post("/v1/schedules", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


async def _client(app: FastAPI, organization: str, stack: AsyncExitStack) -> httpx.AsyncClient:
    return await stack.enter_async_context(asgi_client(app, await make_key(app, organization)))


@pytest.fixture
async def api(make_settings: MakeSettings, database_url: str, receiver: Receiver) -> AsyncIterator[Api]:
    settings = make_settings(
        database_url=database_url,
        auth_mode="keys",
        schedule_webhook_allowed_urls=[receiver.prefix],
        schedule_handlers=HANDLERS,
        schedule_poll_interval_seconds=0.2,
    )
    async with started_app(settings) as app, AsyncExitStack() as stack:
        acme, globex = await _client(app, "acme", stack), await _client(app, "globex", stack)
        yield Api(app, acme, globex, receiver)


async def wait_for(check: Any, what: str, timeout_s: float = 20.0) -> Any:
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
    while datetime.now(UTC) < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def test_create_list_show_change_and_delete(api: Api) -> None:
    created = await api.create(
        name="wake the agent",
        cron="0 9 * * 1-5",
        timezone="Europe/Berlin",
        payload={"messages": [{"role": "user", "content": "Good morning"}]},
    )
    assert created["id"].startswith("sched-") and created["signing_secret"].startswith("bbs_")
    assert (created["kind"], created["action"], created["catch_up"], created["overlap"]) == (
        "cron",
        "webhook",
        "latest",
        "skip",
    )
    expected = next_fire_times(
        compile_cron("0 9 * * 1-5", "Europe/Berlin"), datetime.fromisoformat(created["created_at"]), 5
    )
    assert created["next_fire_times"] == [m.isoformat() for m in expected]
    assert all(
        datetime.fromisoformat(t).astimezone(BERLIN).strftime("%H:%M") == "09:00"
        for t in created["next_fire_times"]
    )

    listed = (await api.acme.get("/v1/schedules")).json()
    [item] = listed["data"]
    assert item["id"] == created["id"] and len(item["next_fire_times"]) == 3
    assert "signing_secret" not in item and listed["has_more"] is False
    shown = (await api.acme.get(f"/v1/schedules/{created['id']}")).json()
    assert shown["next_fire_times"] == created["next_fire_times"] and "signing_secret" not in shown

    changed = await api.acme.patch(
        f"/v1/schedules/{created['id']}",
        json={"name": "every minute", "interval_seconds": 60, "overlap": "allow"},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["kind"], body["cron"], body["interval_seconds"], body["overlap"]) == (
        "every minute",
        "interval",
        None,
        60.0,
        "allow",
    )
    first = datetime.fromisoformat(body["next_fire_times"][0])
    assert [datetime.fromisoformat(t) - first for t in body["next_fire_times"]] == [
        timedelta(minutes=n) for n in range(5)
    ]
    assert body["payload"] == created["payload"]  # untouched

    assert (await api.acme.delete(f"/v1/schedules/{created['id']}")).status_code == 204
    assert (await api.acme.get(f"/v1/schedules/{created['id']}")).status_code == 404
    assert (await api.acme.get("/v1/schedules")).json()["data"] == []


def _future(days: int = 3) -> str:
    return (utcnow() + timedelta(days=days)).isoformat()


BAD_INPUTS = [
    ({"cron": "0 9 * *"}, "cron", "not five"),
    ({"cron": "0 25 * * *"}, "cron", "not a valid cron expression"),
    ({"cron": "0 9 * * 1-5", "timezone": "Europe/Atlantis"}, "timezone", "IANA name"),
    ({"interval_seconds": 0}, "interval_seconds", "between 1 and"),
    ({"at": "2001-01-01T09:00:00Z"}, "at", "in the past"),
    ({"interval_seconds": 60, "start_at": _future(3), "end_at": _future(2)}, "end_at", "after start_at"),
    ({"interval_seconds": 60, "webhook_url": "https://evil.example.com/hook"}, "webhook_url", "not allowed"),
    ({"interval_seconds": 60, "webhook_url": None, "handler": "nope"}, "handler", "unknown handler 'nope'"),
    ({"cron": "0 9 * * *", "interval_seconds": 60}, "interval_seconds", "exactly one"),
    ({}, "cron", "exactly one"),
    ({"interval_seconds": 60, "webhook_url": None}, "webhook_url", "give `webhook_url`"),
    ({"interval_seconds": 60, "catch_up": "sometimes"}, "catch_up", "'skip', 'latest' or 'all'"),
    ({"interval_seconds": 60, "overlap": "queue"}, "overlap", "'skip', 'buffer_one' or 'allow'"),
    ({"interval_seconds": 60, "catch_up_limit": 0}, "catch_up_limit", "greater than or equal to 1"),
    ({"interval_seconds": 60, "payload": {"x": "y" * 70_000}}, "payload", "schedule_payload_max_bytes"),
    ({"interval_seconds": 60, "name": ""}, "name", "at least 1 character"),
    ({"interval_seconds": 60, "surprise": 1}, "surprise", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("fields", "field", "says"), BAD_INPUTS, ids=[b[1] + ":" + b[2] for b in BAD_INPUTS])
async def test_every_bad_input_is_a_422_naming_the_field_and_nothing_is_stored(
    api: Api, fields: dict[str, Any], field: str, says: str
) -> None:
    body = {"name": "bad", "webhook_url": api.receiver.prefix + "agent", **fields}
    body = {k: v for k, v in body.items() if v is not None}
    response = await api.acme.post("/v1/schedules", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["loc"][-1] == field and says in e["msg"] for e in errors), errors
    assert (await api.acme.get("/v1/schedules")).json()["data"] == []


async def test_a_bad_change_is_refused_and_changes_nothing(api: Api) -> None:
    created = await api.create(name="steady", interval_seconds=3600)
    for change, field in (
        ({"cron": "every day"}, "cron"),
        ({"webhook_url": "http://169.254.169.254/latest/meta-data"}, "webhook_url"),
        ({"timezone": "Nowhere/Else", "cron": "0 9 * * *"}, "timezone"),
        ({"name": None}, "name"),
    ):
        response = await api.acme.patch(f"/v1/schedules/{created['id']}", json=change)
        assert response.status_code == 422, (change, response.text)
        assert response.json()["detail"][0]["loc"][-1] == field
    shown = (await api.acme.get(f"/v1/schedules/{created['id']}")).json()
    assert {k: shown[k] for k in ("name", "kind", "interval_seconds", "webhook_url", "next_fire_at")} == {
        k: created[k] for k in ("name", "kind", "interval_seconds", "webhook_url", "next_fire_at")
    }


async def test_another_organization_gets_404_on_every_schedule_route(api: Api) -> None:
    created = await api.create(name="acme's", interval_seconds=3600)
    routes = [(m, p) for m, p in api_routes(api.app) if "{schedule_id}" in p]
    assert {p for _, p in routes} >= {
        "/v1/schedules/{schedule_id}",
        "/v1/schedules/{schedule_id}/pause",
        "/v1/schedules/{schedule_id}/resume",
        "/v1/schedules/{schedule_id}/trigger",
        "/v1/schedules/{schedule_id}/runs",
    }
    for method, template in routes:
        kwargs: dict[str, Any] = {"json": {"name": "taken"}} if method == "PATCH" else {}
        response = await api.globex.request(method, template.format(schedule_id=created["id"]), **kwargs)
        assert response.status_code == 404, (method, template, response.text)
        unknown = await api.globex.request(method, template.format(schedule_id="sched-nope"), **kwargs)
        assert unknown.status_code == 404 and unknown.json() == {"detail": "no schedule 'sched-nope'"}
    assert (await api.globex.get("/v1/schedules")).json()["data"] == []
    shown = (await api.acme.get(f"/v1/schedules/{created['id']}")).json()
    assert (shown["name"], shown["paused"], shown["trigger_at"]) == ("acme's", False, None)
    assert api.receiver.count() == 0


async def runs_of(api: Api, schedule_id: str, **params: Any) -> dict[str, Any]:
    response = await api.acme.get(f"/v1/schedules/{schedule_id}/runs", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_trigger_pause_resume_and_runs_through_the_api(api: Api) -> None:
    created = await api.create(name="hourly", interval_seconds=3600, payload={"n": 1})
    triggered = await api.acme.post(f"/v1/schedules/{created['id']}/trigger")
    assert triggered.status_code == 202 and triggered.json()["trigger_at"] is not None

    async def delivered(count: int) -> list[dict[str, Any]] | None:
        runs = (await runs_of(api, created["id"]))["data"]
        done = [r for r in runs if r["outcome"] == "succeeded"]
        return runs if len(done) >= count else None

    [run] = await wait_for(lambda: delivered(1), "the manual fire")
    assert (run["trigger"], run["outcome"], run["attempts"], run["http_status"]) == (
        "manual",
        "succeeded",
        1,
        200,
    )
    assert run["epoch"] >= 1 and run["instance_id"] == api.app.state.runtime.instance_id
    assert [a["http_status"] for a in run["attempt_history"]] == [200]
    [request] = api.receiver.received
    assert request.headers["idempotency-key"] == f"{created['id']}:{run['fire_time'].replace('+00:00', 'Z')}"
    assert signature_valid(created["signing_secret"], request)

    paused = (await api.acme.post(f"/v1/schedules/{created['id']}/pause", json={"note": "holiday"})).json()
    assert (paused["paused"], paused["note"], paused["next_fire_at"], paused["next_fire_times"]) == (
        True,
        "holiday",
        None,
        [],
    )
    assert (await api.acme.post(f"/v1/schedules/{created['id']}/trigger")).status_code == 202
    runs = await wait_for(lambda: delivered(2), "a manual fire while paused")
    assert [r["trigger"] for r in runs] == ["manual", "manual"]

    resumed = (await api.acme.post(f"/v1/schedules/{created['id']}/resume")).json()
    assert (resumed["paused"], resumed["note"]) == (False, None)
    assert datetime.fromisoformat(resumed["next_fire_at"]) > utcnow()
    page = await runs_of(api, created["id"], limit=1)
    assert len(page["data"]) == 1 and page["has_more"] is True
    rest = await runs_of(api, created["id"], limit=1, before=page["next_before"])
    assert [r["id"] for r in rest["data"]] == [runs[1]["id"]] and rest["has_more"] is False

    metrics = (await api.acme.get("/metrics")).text
    assert "backburner_schedule_fire_lag_seconds_count 2.0" in metrics
    assert 'backburner_schedule_delivery_attempts_total{action="webhook",result="succeeded"} 2.0' in metrics
    assert 'backburner_schedule_runs_total{outcome="succeeded"} 2.0' in metrics


async def test_a_schedule_fires_on_its_own(api: Api) -> None:
    created = await api.create(name="every second", interval_seconds=1)
    runs = await wait_for(
        lambda: _succeeded(api, created["id"], 2), "two fires of a one-second schedule", timeout_s=30
    )
    moments = sorted(datetime.fromisoformat(r["fire_time"]) for r in runs)
    assert moments[1] - moments[0] == timedelta(seconds=1)
    assert datetime.fromisoformat(created["created_at"]) + timedelta(seconds=1) == moments[0]
    listed = (await api.acme.get("/v1/schedules")).json()["data"][0]
    assert listed["last_fire_at"] is not None


async def _succeeded(api: Api, schedule_id: str, count: int) -> list[dict[str, Any]] | None:
    runs = [r for r in (await runs_of(api, schedule_id))["data"] if r["outcome"] == "succeeded"]
    return runs if len(runs) >= count else None


async def test_odd_ids_and_cursors_are_refused_cleanly(api: Api) -> None:
    for path in ("/v1/schedules/..%2F..%2Fetc", "/v1/schedules/" + "x" * 65):
        assert (await api.acme.get(path)).status_code in (404, 422)
    response = await api.acme.get("/v1/schedules", params={"after": "sched-nope"})
    assert response.status_code == 400 and "after" in response.json()["detail"]
    created = await api.create(name="x", interval_seconds=60)
    response = await api.acme.get(f"/v1/schedules/{created['id']}/runs", params={"before": "yesterday"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "before"]
    assert re.fullmatch(r"sched-[0-9a-f]{32}", created["id"])


async def test_the_dashboard_has_a_schedules_panel(api: Api) -> None:
    created = await api.create(name="panel", interval_seconds=3600)
    paused = await api.create(name="resting", interval_seconds=60, paused=True)
    assert (await api.acme.post(f"/v1/schedules/{created['id']}/trigger")).status_code == 202
    _, token = await keys.create_key(
        api.app.state.runtime.engine, organization="acme", name="admin", is_admin=True, now=utcnow()
    )
    admin = {"authorization": f"Bearer {token}"}

    async def panel_with_a_run() -> dict[str, Any] | None:
        response = await api.acme.get("/api/admin/dashboard", headers=admin)
        assert response.status_code == 200, response.text
        panel: dict[str, Any] = response.json()["schedules"]
        return panel if panel["recent_runs"] else None

    panel = await wait_for(panel_with_a_run, "a run in the panel")
    assert panel["counts"] == {"active": 1, "paused": 1, "ended": 0}
    assert panel["dispatching"] is True
    assert [s["id"] for s in panel["soonest"]] == [created["id"]]  # a paused schedule is not due
    [run] = panel["recent_runs"]
    assert (run["schedule_name"], run["trigger"], run["epoch"] >= 1) == ("panel", "manual", True)
    assert paused["next_fire_at"] is None
    # Another organization's panel shows none of it.
    _, other = await keys.create_key(
        api.app.state.runtime.engine, organization="globex", name="admin", is_admin=True, now=utcnow()
    )
    theirs = (
        await api.globex.get("/api/admin/dashboard", headers={"authorization": f"Bearer {other}"})
    ).json()
    assert theirs["schedules"]["soonest"] == [] and theirs["schedules"]["recent_runs"] == []
    page = (await api.acme.get("/dashboard")).text
    assert 'id="schedules"' in page and 'data-list="schedule-runs"' in page
    script = (await api.acme.get("/dashboard/static/dashboard.js")).text
    assert "schedules: renderSchedules" in script
