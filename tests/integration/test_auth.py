"""Access control: keys on every protected route, admin scope, revocation, hashing, limits."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from backburner.auth import store
from backburner.auth.middleware import is_protected
from backburner.auth.tables import api_keys
from backburner.clock import utcnow
from tests.conftest import MakeSettings
from tests.support.app import asgi_client, make_key, started_app
from tests.support.routes import api_routes


@pytest.fixture
async def keyed_app(make_settings: MakeSettings, database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(database_url=database_url, auth_mode="keys", submissions_per_minute=2)
    async with started_app(settings) as app:
        yield app


def protected_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, concrete path) of a protected route, read from the app itself."""
    return [
        (method, re.sub(r"\{[^}]+\}", "some-id", path))
        for method, path in api_routes(app)
        if is_protected(path, metrics_closed=False)
    ]


async def test_every_protected_route_needs_a_key(keyed_app: FastAPI) -> None:
    routes = protected_routes(keyed_app)
    # An empty list would pass vacuously: the routes of both protected areas must be in it.
    assert ("POST", "/v1/batches") in routes and ("GET", "/v1/sources/some-id/files") in routes, routes
    assert any(path.startswith("/api/admin/") for _, path in routes), routes
    async with (
        asgi_client(keyed_app) as anonymous,
        asgi_client(keyed_app, "bbk_000000000000_wrong") as forged,
    ):
        for method, path in routes:
            for caller in (anonymous, forged):
                response = await caller.request(method, path)
                assert response.status_code == 401, (method, path, response.text)
                assert "API key" in response.json()["detail"]
                assert response.headers["www-authenticate"] == "Bearer"
    # Open routes stay open.
    async with asgi_client(keyed_app) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/metrics")).status_code == 200


async def test_revoked_key_gets_401(keyed_app: FastAPI) -> None:
    token = await make_key(keyed_app, "acme", admin=True)
    key_id = token.split("_")[1]
    async with asgi_client(keyed_app, token) as caller:
        assert (await caller.get("/v1/nothing-here")).status_code == 404  # authenticated, then routed
        await store.revoke_key(keyed_app.state.runtime.engine, key_id, utcnow())
        assert (await caller.get("/v1/nothing-here")).status_code == 401


async def test_non_admin_key_gets_403_on_admin_routes(keyed_app: FastAPI) -> None:
    token = await make_key(keyed_app, "acme", admin=False)
    admin_routes = [(m, p) for m, p in protected_routes(keyed_app) if p.startswith("/api/admin/")]
    assert ("GET", "/api/admin/scheduler/status") in admin_routes, admin_routes
    admin_routes.append(("GET", "/api/admin/anything"))
    async with asgi_client(keyed_app, token) as caller:
        for method, path in admin_routes:
            response = await caller.request(method, path)
            assert response.status_code == 403, (method, path)
            assert "admin" in response.json()["detail"]


async def test_keys_are_stored_hashed(keyed_app: FastAPI) -> None:
    token = await make_key(keyed_app, "acme", admin=False)
    secret = token.split("_", 2)[2]
    async with keyed_app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(api_keys))).mappings().all()
    assert len(rows) == 1
    stored = " ".join(str(value) for value in rows[0].values())
    assert secret not in stored
    assert len(rows[0]["secret_hash"]) == 64


async def test_submissions_are_rate_limited_per_key(keyed_app: FastAPI) -> None:
    first = await make_key(keyed_app, "acme", admin=False)
    second = await make_key(keyed_app, "globex", admin=False)
    async with asgi_client(keyed_app, first) as a, asgi_client(keyed_app, second) as b:
        for _ in range(2):
            assert (await a.post("/v1/batches", json={})).status_code != 429
        limited = await a.post("/v1/batches", json={})
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "per minute" in limited.json()["detail"]
        # Another key has its own budget.
        assert (await b.post("/v1/batches", json={})).status_code != 429


async def test_oversized_body_gets_413(keyed_app: FastAPI) -> None:
    token = await make_key(keyed_app, "acme", admin=False)
    async with asgi_client(keyed_app, token) as caller:
        response = await caller.post(
            "/v1/sources", content=b"x" * (2 * 1024 * 1024), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert "the limit set by api_max_body_bytes" in response.json()["detail"]


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backburner", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_keys_cli_creates_lists_and_revokes(sqlite_url: str, tmp_path: Path) -> None:
    env = {"BACKBURNER_DATABASE_URL": sqlite_url}
    created = run_cli("keys", "create", "--org", "acme", "--admin", "--name", "ops", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("bbk_")
    listed = run_cli("keys", "list", env={**env, "COLUMNS": "200"}, cwd=tmp_path)
    assert listed.returncode == 0
    key_id = token.split("_")[1]
    assert key_id in listed.stdout and "acme" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout
    revoked = run_cli("keys", "revoke", key_id, env=env, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    again = run_cli("keys", "revoke", key_id, env=env, cwd=tmp_path)
    assert again.returncode == 1 and "already revoked" in again.stderr
    unknown = run_cli("keys", "revoke", "nope", env=env, cwd=tmp_path)
    assert unknown.returncode == 1 and "no key 'nope'" in unknown.stderr


def test_auth_mode_none_on_a_public_address_stops_start_up(tmp_path: Path) -> None:
    result = run_cli("serve", "--host", "0.0.0.0", env={"BACKBURNER_AUTH_MODE": "none"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "auth_mode 'none'" in result.stderr and "loopback" in result.stderr
    assert "0.0.0.0" in result.stderr and "Traceback" not in result.stderr
