"""Schemathesis against a running `backburner serve`: every route, inputs generated from its own
OpenAPI schema, with an admin key. No answer may be a server error, every answer must match the
schema (its status code documented, its body the documented shape), and no operation may answer
without a valid key.

The operations are collected from the app built with the server's settings (collection happens
before any server runs); the server fixture checks that the running server serves exactly that
schema at `/openapi.json`, so what is fuzzed is the running server's own schema.

The server runs on PostgreSQL (the stricter database: it refuses NUL characters and over-long
strings that SQLite stores) with both providers pointed at an in-process emulator, so nothing
leaves the machine. Generation is derandomized and bounded, so a run is reproducible and short.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from backburner.api.app import create_app
from backburner.emulator.testing import running_emulator
from backburner.settings_loader import load_settings
from tests.support.databases import PostgresDatabases
from tests.support.processes import BackburnerProcess, free_port

pytestmark = pytest.mark.acceptance

EXAMPLES_PER_OPERATION = 30
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    # Each operation is also sent once without the key and once with a wrong one: both must fail.
    ignored_auth,
]


# A JSONL body is text: sent as generated.
schemathesis.serializer.alias("application/jsonl", "text/plain")
# Only the settings that shape the schema matter here; the server gets the same ones.
SCHEMA = create_app(load_settings(flags={"auth_mode": "keys"}, environ={})).openapi()
api = schemathesis.openapi.from_dict(SCHEMA)


@dataclass(frozen=True)
class Server:
    process: BackburnerProcess
    admin_key: str


def _cli(*args: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "backburner", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def server(
    postgres_databases: PostgresDatabases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("fuzz")
    database_url = postgres_databases.new()
    with running_emulator() as emulator:
        env = {
            "BACKBURNER_DATABASE_URL": database_url,
            "BACKBURNER_DATA_DIR": str(work / "data"),
            "BACKBURNER_AUTH_MODE": "keys",
            "BACKBURNER_ANTHROPIC_API_KEY": "fuzz-anthropic-key",
            "BACKBURNER_ANTHROPIC_BASE_URL": emulator.anthropic_base_url,
            "BACKBURNER_OPENAI_API_KEY": "fuzz-openai-key",
            "BACKBURNER_OPENAI_BASE_URL": emulator.openai_base_url,
            "BACKBURNER_PROVIDER_TIMEOUT_SECONDS": "10",
            # Generated submissions and uploads come fast; the per-key limit is tested elsewhere.
            "BACKBURNER_SUBMISSIONS_PER_MINUTE": "1000000",
            "BACKBURNER_FILE_PROCESSING_PROCESSES": "1",
            "BACKBURNER_LOG_LEVEL": "WARNING",
        }
        admin_key = _cli("keys", "create", "--org", "fuzz", "--admin", env=env, cwd=work)
        port = free_port()
        process = BackburnerProcess(
            ["serve", "--port", str(port)], env, cwd=work, log_path=work / "serve.log", port=port
        )
        try:
            process.wait_ready(30)
            served = httpx.get(process.url + "/openapi.json", timeout=10).json()
            assert served == SCHEMA, "the running server's schema differs from the one collected"
            yield Server(process, admin_key)
        finally:
            process.stop()
            postgres_databases.drop(database_url)
    assert "Traceback" not in process.log(), process.log()


@api.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gets_a_server_error_or_an_undocumented_answer(case: Any, server: Server) -> None:
    case.call_and_validate(
        base_url=server.process.url,
        headers={"Authorization": f"Bearer {server.admin_key}"},
        checks=CHECKS,
    )
