"""Bad input to the sources and files API gets a 4xx, never a 5xx: inputs generated from its schema."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from backburner.api.app import create_app
from backburner.settings_loader import load_settings

FILES_PATHS = "^/v1/(sources|files)"


def _app(data_dir: Path) -> Any:
    flags = {"data_dir": data_dir, "file_processing_processes": 1, "submissions_per_minute": 100_000}
    return create_app(load_settings(flags=flags, environ={}))


# The schema is the app's own (built without starting it); the app that answers is the fixture's.
schema = schemathesis.openapi.from_dict(_app(Path("unused")).openapi()).include(path_regex=FILES_PATHS)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # A server error must come back as a 500 response (the assertion below looks for it).
    app = _app(tmp_path_factory.mktemp("fuzz") / "data")
    with TestClient(app, raise_server_exceptions=False) as started:
        deadline = time.monotonic() + 30
        while started.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the app did not become ready"
            time.sleep(0.1)
        yield started


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error(case: Any, client: TestClient) -> None:
    request = case.as_transport_kwargs(base_url="http://testserver")
    for option in ("timeout", "verify", "allow_redirects", "cert", "cookies"):
        request.pop(option, None)
    if isinstance(request.get("data"), bytes | str):
        request["content"] = request.pop("data")  # raw bodies go as `content`
    try:
        built = client.build_request(**request)
        built.read()  # the body is encoded here, not lazily while the app reads it
    except Exception:
        return  # a generated request the HTTP client itself cannot encode
    response = client.send(built)
    assert response.status_code < 500, (
        case.method,
        case.formatted_path,
        request.get("params"),
        response.text,
    )
