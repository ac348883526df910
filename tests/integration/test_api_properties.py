"""No input gets a server error, on every route, driven by the app's own OpenAPI schema.

For each operation and each input it takes (every path parameter, query parameter and field of a
JSON body, nested ones included), Hypothesis sends arbitrary text there: lone UTF-16
surrogates, NUL, Unicode blanks, huge numbers, base64 that decodes to anything (what a cursor
looks like), while the other inputs hold plausible values (the ids of real objects among them).
The answer is never a 5xx, and an error is always JSON. Routes added later are covered as soon
as they are in the schema. Runs on SQLite and on PostgreSQL (which refuses NUL in text).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from backburner.api.app import create_app
from backburner.emulator.testing import running_emulator
from backburner.settings_loader import load_settings
from tests.support.databases import PostgresDatabases

EXAMPLES_PER_INPUT = 30
# Operations whose body is not JSON: their JSON-free inputs (path and query) are still covered.
JSON_MEDIA = "application/json"

SETTINGS = {"file_processing_processes": 1, "submissions_per_minute": 1_000_000}
SCHEMA = create_app(load_settings(flags={"data_dir": Path("unused"), **SETTINGS}, environ={})).openapi()

_ANY_CHARACTER = st.characters(min_codepoint=0, max_codepoint=0x10FFFF)  # surrogates included
# Characters that databases, encoders and validators trip over: one is put in most strings.
_TRICKY_CHARACTER = st.sampled_from(
    ["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\u3000", "\u200b", "\ufffe"]
)
HOSTILE_TEXT = st.one_of(
    st.tuples(
        st.text(_ANY_CHARACTER, max_size=10), _TRICKY_CHARACTER, st.text(_ANY_CHARACTER, max_size=10)
    ).map("".join),
    st.text(_ANY_CHARACTER, max_size=40),
    st.sampled_from(
        [
            "\ud800",
            "x\udfffy",
            "\x00",
            "a\x00b",
            "",
            " ",
            "\u3000\u2003\u200b",
            "9" * 40,
            "-1",
            "1e400",
            "NaN",
            "../../etc/passwd",
            "%00",
            "\ufeff",
        ]
    ),
    st.binary(max_size=40).map(lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")),
    st.text(_ANY_CHARACTER, max_size=30).map(
        lambda text: base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode().rstrip("=")
    ),
    st.sampled_from(
        [
            base64.urlsafe_b64encode(raw).decode().rstrip("=")
            for raw in (b"2024-01-01T00:00:00+00:00|\x00", b"9999-12-31T23:59:59-14:00|file-x", b"|")
        ]
    ),
)
HOSTILE_JSON = st.one_of(
    HOSTILE_TEXT, st.sampled_from([10**30, -(10**30), 1.7e308, -1, 0, True, None, [], {}])
)


@dataclass
class Operation:
    method: str
    path: str
    path_params: list[str]
    query_params: list[str]
    body: dict[str, Any] | None  # the JSON body schema, refs resolved
    inputs: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = SCHEMA["components"]["schemas"][name]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:  # the first option that is not null
            options = [_resolve(option) for option in schema[combinator]]
            return next((o for o in options if o.get("type") != "null"), options[0])
    return schema


def _field_paths(
    schema: dict[str, Any], prefix: tuple[Any, ...] = (), depth: int = 0
) -> Iterator[tuple[Any, ...]]:
    schema = _resolve(schema)
    if depth > 0:
        yield prefix
    if depth >= 3:
        return
    if schema.get("type") == "object" or "properties" in schema:
        for name, child in schema.get("properties", {}).items():
            yield from _field_paths(child, (*prefix, name), depth + 1)
    elif schema.get("type") == "array" and "items" in schema:
        yield from _field_paths(schema["items"], (*prefix, 0), depth + 1)


def plausible(schema: dict[str, Any]) -> Any:
    """A value that fits `schema` well enough to get past the first checks."""
    schema = _resolve(schema)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: plausible(child) for name, child in schema.get("properties", {}).items()}
    if kind == "array":
        return [plausible(schema.get("items", {}))] if schema.get("minItems", 0) or "items" in schema else []
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    return "valid-name-1"


def operations() -> list[Operation]:
    found = []
    for path, methods in SCHEMA["paths"].items():
        for method, operation in methods.items():
            parameters = operation.get("parameters", [])
            content = operation.get("requestBody", {}).get("content", {})
            body = _resolve(content[JSON_MEDIA]["schema"]) if JSON_MEDIA in content else None
            op = Operation(
                method.upper(),
                path,
                [p["name"] for p in parameters if p["in"] == "path"],
                [p["name"] for p in parameters if p["in"] == "query"],
                body,
            )
            op.inputs = [("path", (name,)) for name in op.path_params]
            op.inputs += [("query", (name,)) for name in op.query_params]
            op.inputs += [("body", path) for path in _field_paths(body)] if body else []
            if body is not None:
                op.inputs.append(("body", ()))  # the whole body replaced
            if op.inputs:
                found.append(op)
    return found


OPERATIONS = operations()


def test_the_schema_yields_every_kind_of_input() -> None:
    """An empty list would pass vacuously: the walk must find paths, queries, cursors and fields."""
    kinds = {(kind, where[-1] if where else "") for op in OPERATIONS for kind, where in op.inputs}
    for expected in (("path", "file_id"), ("query", "after"), ("query", "limit"), ("body", "name")):
        assert expected in kinds, (expected, sorted(kinds))
    assert any(op.path == "/v1/batches" and op.body for op in OPERATIONS)


@dataclass
class Target:
    client: TestClient
    ids: dict[str, str]


def _encode(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _set(body: Any, where: tuple[Any, ...], value: Any) -> Any:
    if not where:
        return value
    head, rest = where[0], where[1:]
    if isinstance(head, int):
        items = list(body) if isinstance(body, list) and body else [None]
        items[0] = _set(items[0], rest, value)
        return items
    container = dict(body) if isinstance(body, dict) else {}
    container[head] = _set(container.get(head), rest, value)
    return container


def _app(work: Path, database_url: str, emulator: Any) -> Any:
    # Both providers at the emulator: a plausible submission is accepted, as in production.
    flags = {
        "data_dir": work / "data",
        "database_url": database_url,
        "anthropic_api_key": "emulated",
        "anthropic_base_url": emulator.anthropic_base_url,
        "openai_api_key": "emulated",
        "openai_base_url": emulator.openai_base_url,
        **SETTINGS,
    }
    return create_app(load_settings(flags=flags, environ={}))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases,
) -> Iterator[Target]:
    work = tmp_path_factory.mktemp("properties")
    url = postgres_databases.new() if request.param == "postgres" else f"sqlite:///{work / 'db.sqlite'}"
    try:
        with (
            running_emulator() as emulator,
            TestClient(_app(work, url, emulator), raise_server_exceptions=False) as client,
        ):
            deadline = time.monotonic() + 30
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "the app did not become ready"
                time.sleep(0.1)
            source = client.post("/v1/sources", json={"name": "docs"}).json()["id"]
            file = client.post(
                f"/v1/sources/{source}/files", files={"file": ("a.txt", b"some words", "text/plain")}
            ).json()["id"]
            yield Target(client, {"source_id": source, "file_id": file, "job_id": "heartbeat"})
    finally:
        if request.param == "postgres":
            postgres_databases.drop(url)


INPUTS = [(op, where) for op in OPERATIONS for where in op.inputs]


@pytest.mark.parametrize(
    ("operation", "where"),
    INPUTS,
    ids=[f"{op.id} {kind}:{'.'.join(map(str, at))}" for op, (kind, at) in INPUTS],
)
@settings(
    max_examples=EXAMPLES_PER_INPUT,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_no_input_gets_a_server_error(
    operation: Operation, where: tuple[str, tuple[Any, ...]], target: Target, data: st.DataObject
) -> None:
    kind, where = where
    value = data.draw(HOSTILE_JSON if kind == "body" else HOSTILE_TEXT, label="value")
    path = operation.path
    for name in operation.path_params:
        chosen = value if (kind, where) == ("path", (name,)) else target.ids.get(name, "valid-id-1")
        path = path.replace("{" + name + "}", _encode(str(chosen)))
    query = [f"{_encode(where[0])}={_encode(str(value))}"] if kind == "query" else []
    headers: dict[str, str] = {}
    content = None
    if operation.body is not None:
        body = plausible(operation.body)
        if kind == "body":
            body = _set(body, where, value)
        content = json.dumps(body).encode()  # ensure_ascii: surrogates go as \\ud800 escapes
        headers["content-type"] = JSON_MEDIA
    url = path + ("?" + "&".join(query) if query else "")
    response = target.client.request(operation.method, url, content=content, headers=headers)
    assert response.status_code < 500, (operation.id, kind, where, repr(value), response.text[:500])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith(JSON_MEDIA), (operation.id, response.text[:200])
        assert "detail" in response.json()
