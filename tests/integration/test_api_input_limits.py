"""Input checked before the routes: every listing's `limit` is at most `api_max_page_size` (422
above it, the schema says so, a default page is never larger), and odd ids and parameters on any
route (a NUL, which PostgreSQL refuses; over-long or non-ASCII ids) get a 4xx, never a 5xx."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import MakeSettings
from tests.support.app import asgi_client, started_app
from tests.support.routes import api_routes

CAP = 7


def limited_listings(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Path -> the `limit` parameter's schema, for every GET operation that has one."""
    found = {}
    for path, operations in schema["paths"].items():
        for parameter in operations.get("get", {}).get("parameters", []):
            if parameter["in"] == "query" and parameter["name"] == "limit":
                found[path] = parameter["schema"]
    return found


async def test_every_listing_limit_is_capped_by_the_setting(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    async with (
        started_app(make_settings(database_url=sqlite_url, api_max_page_size=CAP)) as app,
        asgi_client(app) as client,
    ):
        schema = (await client.get("/openapi.json")).json()
        listings = limited_listings(schema)
        assert {"/v1/batches", "/v1/sources", "/v1/sources/{source_id}/files"} <= set(listings)
        for path, parameter in listings.items():
            assert parameter["maximum"] == CAP, (path, parameter)
            concrete = re.sub(r"\{[^}]+\}", "some-id", path)
            for too_many in (str(CAP + 1), "0" * 30 + str(CAP + 1), "9" * 40):
                response = await client.get(concrete, params={"limit": too_many})
                assert response.status_code == 422, (path, too_many, response.text)
                [error] = response.json()["detail"]
                assert error["loc"] == ["query", "limit"], error
                assert f"at most {CAP} (api_max_page_size)" in error["msg"], error
            at_cap = await client.get(concrete, params={"limit": str(CAP)})
            assert at_cap.status_code != 422, (path, at_cap.text)

        # The default page (100 sources) is cut to the cap; `after` continues.
        for n in range(CAP + 1):
            assert (await client.post("/v1/sources", json={"name": f"s{n}"})).status_code == 201
        first = (await client.get("/v1/sources")).json()
        assert [s["name"] for s in first] == [f"s{n}" for n in range(CAP)]
        rest = (await client.get("/v1/sources", params={"after": first[-1]["id"]})).json()
        assert [s["name"] for s in rest] == [f"s{CAP}"]


ODD_IDS = ("%00", "a%00b", "x" * 300, "%F0%9F%90%98", "..%2F..%2Fetc", "%FF")
ODD_QUERY = {"limit": "1", "after": "a\x00b", "before": "\x00", "name": "\x00", "q": "\x00", "status": "\x00"}


async def test_odd_ids_and_parameters_never_get_a_server_error(
    make_settings: MakeSettings, database_url: str
) -> None:
    # A server error comes back as a 500 answer, for the assertion to see.
    async with (
        started_app(make_settings(database_url=database_url)) as app,
        asgi_client(app, raise_app_exceptions=False) as client,
    ):
        routes = [(m, p) for m, p in api_routes(app) if "{" in p]
        assert len(routes) >= 10, routes
        for method, template in routes:
            for odd in ODD_IDS:
                path = re.sub(r"\{[^}]+\}", odd, template)
                response = await client.request(method, path)
                assert response.status_code < 500, (method, path, response.text)
            response = await client.request(
                method, re.sub(r"\{[^}]+\}", "some-id", template), params=ODD_QUERY
            )
            assert response.status_code < 500, (method, template, response.text)
            if response.status_code == 422 and "NUL" in response.text:
                [error] = response.json()["detail"]
                assert error["loc"][0] == "query", error
