"""Every error of the API is JSON and names the problem: hostile bytes in bodies, names, cursors;
a database that goes away; a route that fails; and the headers browsers are given."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from backburner.api.errors import json_safe
from backburner.text import is_blank
from tests.conftest import MakeSettings
from tests.integration.test_file_api import upload
from tests.support.app import asgi_client, make_key, started_app
from tests.support.processes import free_port
from tests.support.tcpproxy import TcpProxy

JSON = {"content-type": "application/json"}


@pytest.fixture
async def app(make_settings: MakeSettings, database_url: str) -> AsyncIterator[FastAPI]:
    async with started_app(make_settings(database_url=database_url, file_processing_processes=1)) as built:
        yield built


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"name": "\\ud800"}', 400, "no low surrogate"),
        (b'{"name": "a", "description": "x\\udfffy"}', 400, "surrogate"),
        (b'{"name": "\xed\xa0\x80"}', 400, "not valid UTF-8"),
        (b'{"name": "a", "description": NaN}', 400, "not valid JSON"),
        (b'{"name": "a", "description": 1e400}', 400, "infinity"),
        (b'{"name": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400, "depth"),
        (b'{"name": "a\\u0000b"}', 422, "NUL"),
        (b'{"name": "a", "description": "\\\\u0000 is text"}', 201, ""),
    ],
)
async def test_hostile_json_bodies_get_a_json_4xx_and_change_nothing(
    app: FastAPI, body: bytes, status: int, words: str
) -> None:
    async with asgi_client(app) as c:
        response = await c.post("/v1/sources", content=body, headers=JSON)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        if status >= 400:
            assert words in str(response.json()["detail"])
            assert (await c.get("/v1/sources")).json() == []


@pytest.mark.parametrize("name", ["   ", "\u3000\u2003", "\u00a0\u200b\u2060", "\u3164"])
async def test_names_of_blank_characters_are_refused(app: FastAPI, name: str) -> None:
    async with asgi_client(app) as c:
        response = await c.post("/v1/sources", json={"name": name})
        assert response.status_code == 422, response.text
        assert "visible character" in str(response.json()["detail"])
        assert (await c.post("/v1/sources", json={"name": f"{name}x{name}"})).status_code == 201


async def test_control_characters_in_names_are_refused(app: FastAPI) -> None:
    async with asgi_client(app) as c:
        response = await c.post("/v1/sources", json={"name": "a\tb"})
    assert response.status_code == 422 and "control characters" in str(response.json()["detail"])


def test_blank_is_what_shows_nothing() -> None:
    assert is_blank("") and is_blank(" \u3000\u205f\ufeff\u180e")
    assert not is_blank("a") and not is_blank("\u3000.") and not is_blank("名")


async def test_every_cursor_that_this_listing_did_not_give_is_a_400(app: FastAPI) -> None:
    async with asgi_client(app) as c:
        source = (await c.post("/v1/sources", json={"name": "docs"})).json()["id"]
        other = (await c.post("/v1/sources", json={"name": "other"})).json()["id"]
        for name in ("a.txt", "b.txt"):
            assert (await upload(c, source, name, b"some words " + name.encode())).status_code == 201
        assert (await upload(c, other, "c.txt", b"other words")).status_code == 201
        first = (await c.get(f"/v1/sources/{source}/files", params={"limit": 1})).json()
        assert first["next_cursor"] is not None
        second = await c.get(f"/v1/sources/{source}/files", params={"after": first["next_cursor"]})
        assert second.status_code == 200 and len(second.json()["files"]) == 1
        foreign = (await c.get(f"/v1/sources/{other}/files", params={"limit": 1})).json()["next_cursor"]
        bad = {
            "another source's cursor": foreign,
            "an unknown file": "file-0000",
            "a NUL": "file\x00x",
            "a surrogate": "file-\ud800",
            "base64 of a date": base64.urlsafe_b64encode(b"9999-12-31T23:59:59-14:00|x").decode(),
            "not an id": "!!!",
            "too long": "f" * 5000,
            "empty": "",
        }
        for what, cursor in bad.items():
            encoded = quote(cursor.encode("utf-8", "surrogatepass"), safe="")
            response = await c.get(f"/v1/sources/{source}/files?after={encoded}")
            assert response.status_code in (400, 422), (what, response.text)
            assert response.headers["content-type"] == "application/json"
            if response.status_code == 400:
                assert "cursor" in response.json()["detail"], what
        unknown_source = await c.get("/v1/sources/source-none/files", params={"after": foreign})
        assert unknown_source.status_code in (400, 404)
        assert (await c.get("/v1/sources", params={"after": "source-none"})).status_code == 400
        assert (await c.get("/v1/sources", params={"after": other})).status_code == 200


def test_the_validation_answer_can_echo_any_input() -> None:
    hostile: Any = {
        "a\ud800": ["\udfff" * 1000, b"\xff\x00", float("nan"), object(), {"deep": [[[[["x"]]]]]}]
    }
    safe = json_safe(hostile)
    text = httpx.Response(200, json=safe).text  # encodes as strict UTF-8
    assert "\\ud800" in text and "\\udfff" in text and len(text) < 2000


async def test_the_validation_handler_survives_a_surrogate_in_the_input(app: FastAPI) -> None:
    @app.get("/v1/echo-test")
    async def echo() -> None:
        raise RequestValidationError([{"type": "x", "loc": ("query", "q"), "msg": "bad", "input": "\ud800"}])

    async with asgi_client(app) as c:
        response = await c.get("/v1/echo-test")
    assert response.status_code == 422
    assert response.json()["detail"][0]["input"] == "\\ud800"


async def test_a_failing_route_answers_json_without_a_traceback(app: FastAPI) -> None:
    @app.get("/v1/fail-test")
    async def fail() -> None:
        raise RuntimeError("secret internals at line 42")

    async with asgi_client(app) as c:
        response = await c.get("/v1/fail-test")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert "internal error" in response.json()["detail"]
    assert "secret" not in response.text and "Traceback" not in response.text


async def test_pages_get_strict_headers_and_cors_is_off(app: FastAPI) -> None:
    async with asgi_client(app) as c:
        page = await c.get("/dashboard")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self';" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        preflight = await c.options(
            "/v1/sources",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        simple = await c.get("/v1/sources", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers


async def test_cors_answers_the_allowed_origins_only(make_settings: MakeSettings, sqlite_url: str) -> None:
    settings = make_settings(
        database_url=sqlite_url, cors_allowed_origins="https://app.example, http://localhost:3000"
    )
    async with started_app(settings) as app, asgi_client(app) as c:
        for origin, allowed in (("https://app.example", True), ("https://evil.example", False)):
            preflight = await c.options(
                "/v1/sources",
                headers={
                    "origin": origin,
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "authorization, content-type",
                },
            )
            assert (preflight.headers.get("access-control-allow-origin") == origin) is allowed, origin


def test_cors_origins_are_checked(make_settings: MakeSettings) -> None:
    from backburner.settings_loader import SettingsError

    for bad in ("*", "https://app.example/path", "app.example", "ftp://x"):
        with pytest.raises(SettingsError, match="cors_allowed_origins"):
            make_settings(cors_allowed_origins=bad)


@pytest.mark.postgres
async def test_while_the_database_is_away_routes_answer_503_and_health_still_answers(
    make_settings: MakeSettings, postgres_url: str
) -> None:
    proxy = TcpProxy(free_port())
    await proxy.start()
    url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.listen_port}")
    try:
        async with started_app(make_settings(database_url=url, auth_mode="keys", db_pool_timeout=2)) as app:
            token = await make_key(app, "acme", admin=True)
            async with asgi_client(app, token) as c:
                assert (await c.get("/v1/sources")).status_code == 200
                await proxy.stop()
                for path in ("/v1/sources", "/api/admin/dashboard", "/v1/files/file-x"):
                    response = await c.get(path)
                    assert response.status_code == 503, (path, response.text)
                    assert response.headers["content-type"] == "application/json"
                    assert int(response.headers["retry-after"]) > 0
                    assert "database" in response.json()["detail"]
                health = await c.get("/healthz")  # with the key: it is not looked up
                assert health.status_code == 200, health.text
                ready = await c.get("/readyz")
                assert ready.status_code == 503 and "database" in ready.json()["failing"]
                assert (await c.get("/metrics")).status_code == 200
    finally:
        await proxy.stop()
