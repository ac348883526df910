"""Secrets never appear in logs, error messages, `config show` or diagnostics.

A full run with every kind of secret set: a PostgreSQL role with a password, a Redis user with a
password (the embedding cache), provider keys, an embeddings key, a webhook secret and API keys.
It submits batches that complete and are handed to a (refusing) webhook, uploads a file that is
embedded and searched, reads every admin and diagnostic route, makes requests that fail, and runs
the CLI (`config show`, `config validate` with an error, `keys list`, `db upgrade` against an
unreachable database, client commands). Everything printed, logged or answered is captured and
searched for each secret.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from backburner.emulator.config import EmulatorConfig
from backburner.emulator.testing import running_emulator
from tests.support.databases import _pg_admin
from tests.support.embedding_endpoint import EmbeddingEndpoint
from tests.support.processes import BackburnerProcess, free_port, wait_until
from tests.support.s3server import S3Server

pytestmark = pytest.mark.acceptance


@dataclass
class Captured:
    """Every text the run produced, by where it came from."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, text: str) -> None:
        self.texts[f"{len(self.texts):02d} {where}"] = text

    def response(self, where: str, response: httpx.Response) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.add(where, f"{response.status_code}\n{headers}\n{response.text}")
        return response

    def leaks(self, secret: str) -> list[str]:
        return [where for where, text in self.texts.items() if secret in text]


@pytest.fixture
def database_role() -> Iterator[tuple[str, str]]:
    """A PostgreSQL role with a password, owning a fresh empty database: (url, password)."""
    name = f"bb_secret_{uuid.uuid4().hex[:10]}"
    password = f"pg-pass-{secrets.token_hex(12)}"
    asyncio.run(
        _pg_admin(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'", f'CREATE DATABASE "{name}" OWNER {name}')
    )
    try:
        yield f"postgresql://{name}:{password}@127.0.0.1:5432/{name}", password
    finally:
        asyncio.run(
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f"DROP ROLE IF EXISTS {name}")
        )


@pytest.fixture
def redis_user() -> Iterator[tuple[str, str]]:
    """A Redis ACL user with a password, limited to the embedding cache's keys: (url, password)."""
    name = f"bb_secret_{uuid.uuid4().hex[:10]}"
    password = f"redis-pass-{secrets.token_hex(12)}"
    admin = redis.Redis(host="127.0.0.1", port=6379)
    admin.acl_setuser(
        name, enabled=True, passwords=[f"+{password}"], keys=["backburner:*"], commands=["+@all"]
    )
    try:
        yield f"redis://{name}:{password}@127.0.0.1:6379/0", password
    finally:
        admin.acl_deluser(name)
        admin.close()


def run_cli(captured: Captured, *args: str, env: dict[str, str], cwd: Path, record: bool = True) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "backburner", *args],
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "300", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    command = " ".join(args[:2])  # not the options: they may hold a key
    if record:
        captured.add(f"cli {command} (stdout)", result.stdout)
    captured.add(f"cli {command} (stderr, exit {result.returncode})", result.stderr)
    return result.stdout


# A whole deployment's life with a dozen processes; on a busy 2-core machine it takes about a minute.
@pytest.mark.timeout(240)
def test_a_full_run_shows_no_secret_anywhere(
    database_role: tuple[str, str], redis_user: tuple[str, str], tmp_path: Path, s3_server: S3Server
) -> None:
    database_url, database_password = database_role
    redis_url, redis_password = redis_user
    provider_keys = {name: f"sk-{name}-{secrets.token_hex(16)}" for name in ("anthropic", "openai")}
    embedding_key = f"sk-embed-{secrets.token_hex(16)}"
    webhook_secret = f"whsec-{secrets.token_hex(16)}"
    s3_secret = f"s3-{secrets.token_hex(16)}"
    captured = Captured()
    emulator_config = EmulatorConfig(complete_after_s=0.5, validating_s=0.0, finalizing_s=0.0)
    with running_emulator(emulator_config) as emulator, EmbeddingEndpoint() as embeddings:
        env = {
            "BACKBURNER_DATABASE_URL": database_url,
            "BACKBURNER_DATA_DIR": str(tmp_path / "data"),
            "BACKBURNER_AUTH_MODE": "keys",
            "BACKBURNER_LOG_LEVEL": "DEBUG",
            "BACKBURNER_ANTHROPIC_API_KEY": provider_keys["anthropic"],
            "BACKBURNER_ANTHROPIC_BASE_URL": emulator.anthropic_base_url,
            "BACKBURNER_OPENAI_API_KEY": provider_keys["openai"],
            "BACKBURNER_OPENAI_BASE_URL": emulator.openai_base_url,
            "BACKBURNER_ENABLE_BATCH_JOB_POLLING": "true",
            "BACKBURNER_POLL_RUNNING_LLM_BATCHES_INTERVAL_SECONDS": "1",
            "BACKBURNER_BATCH_POLL_JITTER_SECONDS": "0",
            # The emulator has no such route: every delivery fails, and the failure is logged.
            "BACKBURNER_BATCH_COMPLETION_WEBHOOK_URL": emulator.base_url + "/hooks/batch-done",
            "BACKBURNER_BATCH_COMPLETION_WEBHOOK_SECRET": webhook_secret,
            "BACKBURNER_EMBEDDER": "openai",
            "BACKBURNER_EMBEDDING_BASE_URL": embeddings.base_url,
            "BACKBURNER_EMBEDDING_API_KEY": embedding_key,
            "BACKBURNER_REDIS_URL": redis_url,
            "BACKBURNER_FILE_PROCESSING_PROCESSES": "1",
            "BACKBURNER_FILE_POLL_INTERVAL_SECONDS": "0.1",
            **{
                f"BACKBURNER_{name.upper()}": str(value)
                for name, value in s3_server.settings(s3_server.new_bucket()).items()
            },
            "BACKBURNER_S3_SECRET_ACCESS_KEY": s3_secret,
        }
        admin_key = run_cli(
            captured, "keys", "create", "--org", "acme", "--admin", env=env, cwd=tmp_path, record=False
        )
        user_key = run_cli(captured, "keys", "create", "--org", "acme", env=env, cwd=tmp_path, record=False)
        admin_key, user_key = admin_key.strip(), user_key.strip()
        assert admin_key.startswith("bbk_") and user_key.startswith("bbk_"), captured.texts
        # As in an operator's shell: the client commands' key is exported too (the server ignores it).
        env["BACKBURNER_API_KEY"] = user_key

        port = free_port()
        server = BackburnerProcess(
            ["serve", "--port", str(port)], env, tmp_path, tmp_path / "serve.log", port
        )
        try:
            server.wait_ready(30)
            _exercise(server, captured, admin_key, user_key)
            for args in (["batches", "list"], ["files", "list"], ["scheduler", "status"]):
                run_cli(captured, *args, env={**env, "BACKBURNER_URL": server.url}, cwd=tmp_path)
            for args in (
                ["config", "show"],
                ["config", "show", "--json"],
                ["keys", "list"],
                ["blobs", "verify"],
            ):
                run_cli(captured, *args, env=env, cwd=tmp_path)
            for command in ("batches list", "files list", "config show", "keys list", "blobs verify"):
                assert any(f"cli {command} (stderr, exit 0)" in where for where in captured.texts), command
        finally:
            server.stop()
            captured.add("serve log", server.log())

    # Errors: a bad setting next to the secrets, a bad secret setting, a database that does not answer.
    run_cli(captured, "config", "validate", env={**env, "BACKBURNER_DB_POOL_SIZE": "0"}, cwd=tmp_path)
    bad_driver = database_url.replace("postgresql://", "mysql://")
    run_cli(captured, "config", "validate", env={**env, "BACKBURNER_DATABASE_URL": bad_driver}, cwd=tmp_path)
    unreachable = database_url.replace(":5432/", f":{free_port()}/")
    run_cli(captured, "db", "upgrade", env={**env, "BACKBURNER_DATABASE_URL": unreachable}, cwd=tmp_path)

    shown = "\n".join(captured.texts.values())
    # The run did reach every path that handles a secret, and masked what it showed.
    for expected in (
        "batch.delivery_failed",
        "completed",
        "greater than 0",
        "driver 'mysql' is not supported",
        "Migration failed",
    ):
        assert expected in shown, expected
    assert re.search(r"postgresql://bb_secret_\w+:\*{8}@127\.0\.0\.1:5432/", shown), "masked URL missing"
    secrets_by_name = {
        "database password": database_password,
        "redis password": redis_password,
        "anthropic key": provider_keys["anthropic"],
        "openai key": provider_keys["openai"],
        "embedding key": embedding_key,
        "webhook secret": webhook_secret,
        "S3 secret access key": s3_secret,
        "admin API key secret": admin_key.split("_", 2)[2],
        "user API key secret": user_key.split("_", 2)[2],
    }
    leaks = {name: captured.leaks(secret) for name, secret in secrets_by_name.items()}
    assert not any(leaks.values()), {name: where for name, where in leaks.items() if where}


def _exercise(server: BackburnerProcess, captured: Captured, admin_key: str, user_key: str) -> None:
    admin = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {admin_key}"}, timeout=30)
    user = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {user_key}"}, timeout=30)
    with admin, user:
        batch_ids = []
        for provider in ("anthropic", "openai"):
            body = {
                "provider": provider,
                "model": "test-model",
                "requests": [
                    {
                        "custom_id": f"r-{n}",
                        "params": {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                    }
                    for n in range(3)
                ],
            }
            submitted = captured.response(f"submit {provider}", user.post("/v1/batches", json=body))
            assert submitted.status_code == 201, submitted.text
            batch_ids.append(submitted.json()["id"])
        # Refused by the provider (no max_tokens) and by our checks: error paths with their messages.
        refused = {"provider": "anthropic", "model": "m", "requests": [{"custom_id": "x", "params": {}}]}
        captured.response("refused batch", user.post("/v1/batches", json=refused))
        captured.response("invalid batch", user.post("/v1/batches", content=b"{not json"))

        source = captured.response("source", user.post("/v1/sources", json={"name": "docs"})).json()
        note = b"The walrus basks on the ice floe while the gulls wheel overhead.\n" * 20
        uploaded = captured.response(
            "upload",
            user.post(f"/v1/sources/{source['id']}/files", files={"file": ("note.txt", note, "text/plain")}),
        )
        assert uploaded.status_code == 201, uploaded.text
        file_id = uploaded.json()["id"]

        def file_done() -> bool:
            return user.get(f"/v1/files/{file_id}").json()["status"] == "completed"

        def batches_done() -> bool:
            return all(user.get(f"/v1/batches/{b}").json()["status"] == "completed" for b in batch_ids)

        wait_until(file_done, 30, "the file to be embedded")
        wait_until(batches_done, 30, "the batches to complete")
        wait_until(lambda: "batch.delivery_failed" in server.log(), 30, "a webhook delivery to fail")
        for batch_id in batch_ids:
            captured.response("batch", user.get(f"/v1/batches/{batch_id}"))
            captured.response("results", user.get(f"/v1/batches/{batch_id}/results"))
        captured.response("search", user.get(f"/v1/sources/{source['id']}/search", params={"q": "walrus"}))
        captured.response("file", user.get(f"/v1/files/{file_id}"))

        # Every admin and diagnostic route that needs no id, and the open ones.
        schema = captured.response("openapi", admin.get("/openapi.json")).json()
        for path, operations in schema["paths"].items():
            if (
                "get" in operations
                and "{" not in path
                and path.startswith(("/api/admin/", "/readyz", "/healthz"))
            ):
                captured.response(path, admin.get(path))
        captured.response("metrics", admin.get("/metrics"))
        # Refusals: no key, a forged key, a user key on an admin route.
        captured.response("no key", httpx.get(server.url + "/v1/batches"))
        forged = admin_key[: admin_key.rindex("_") + 1] + "forged"
        captured.response(
            "forged key", httpx.get(server.url + "/v1/batches", headers={"authorization": f"Bearer {forged}"})
        )
        captured.response("not admin", user.get("/api/admin/scheduler/status"))
