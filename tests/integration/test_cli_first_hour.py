"""What a new user meets on the command line, through the real `backburner` command in a
subprocess: help that reads conventionally, whole ids in a pipe, `--json` on every list, keys
that reach what was made before keys were on, and errors that say what to do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from backburner.clock import utcnow
from backburner.db.engine import create_engine
from backburner.db.tables import DEFAULT_ORGANIZATION_ID
from backburner.files.tables import sources
from backburner.membership import store as membership_store
from backburner.membership.roles import shown_role
from backburner.settings_loader import load_settings
from tests.conftest import MakeSettings
from tests.support.processes import free_port
from tests.support.served import served

UPLOAD_LIMIT_BYTES = 4096


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real command, its output a pipe (not a terminal), no developer environment."""
    return subprocess.run(
        [sys.executable, "-m", "backburner", *args],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@dataclass
class Server:
    url: str
    database_url: str
    env: dict[str, str]


@pytest.fixture
def server(make_settings: MakeSettings, sqlite_url: str, tmp_path: Path) -> Iterator[Server]:
    settings = make_settings(
        database_url=sqlite_url,
        auth_mode="keys",
        file_processing_processes=1,
        file_upload_max_bytes=UPLOAD_LIMIT_BYTES,
    )
    with served(settings) as url:
        yield Server(url, sqlite_url, {"BACKBURNER_DATABASE_URL": sqlite_url, "BACKBURNER_URL": url})


def test_help_reads_as_in_most_tools() -> None:
    root = run("--help")
    assert root.returncode == 0 and "--version" in root.stdout and "<bool>" not in root.stdout
    submit = run("batches", "submit", "--help")
    assert "batches submit [OPTIONS] FILE" in submit.stdout and "{file}" not in submit.stdout
    upload = run("files", "upload", "--help")
    assert "files upload [OPTIONS] PATHS..." in upload.stdout
    emulator = run("emulator", "--help")
    assert emulator.returncode == 0 and "--complete-after" in emulator.stdout
    assert "COMMAND" not in emulator.stdout
    assert run("--version").stdout.startswith("backburner ")


def _key(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return run("keys", "create", *args, env=server.env)


async def test_a_key_for_org_default_reaches_what_was_made_before_keys(server: Server) -> None:
    engine = create_engine(load_settings(flags={"database_url": server.database_url}, environ={}).settings)
    try:
        async with engine.begin() as conn:  # made while auth_mode was none
            await conn.execute(
                insert(sources).values(
                    id="source-before-keys",
                    organization_id=DEFAULT_ORGANIZATION_ID,
                    name="notes",
                    description=None,
                    created_at=utcnow(),
                )
            )
    finally:
        await engine.dispose()
    for org in ("org-default", "default"):
        created = _key(server, "--org", org, "--admin")
        assert created.returncode == 0, created.stderr
        assert "(org-default)" in created.stderr and "new organization" not in created.stderr
        listed = run(
            "files", "list", "--json", env={**server.env, "BACKBURNER_API_KEY": created.stdout.strip()}
        )
        assert listed.returncode == 0, listed.stderr
        sources_listed = run(
            "files",
            "list",
            "--source",
            "notes",
            env={**server.env, "BACKBURNER_API_KEY": created.stdout.strip()},
        )
        assert sources_listed.returncode == 0, sources_listed.stderr
    fresh = _key(server, "--org", "acme")
    assert fresh.returncode == 0 and "new organization" in fresh.stderr and "--org default" in fresh.stderr
    blank = _key(server, "--org", "\u3000\u2003")
    assert blank.returncode == 2 and "visible character" in blank.stderr
    keys = json.loads(run("keys", "list", "--json", env=server.env).stdout)
    assert {k["organization_id"] for k in keys} >= {"org-default"} and len(keys) == 3


def test_piped_lists_are_whole_and_tab_separated(server: Server, tmp_path: Path) -> None:
    token = _key(server, "--org", "default", "--admin").stdout.strip()
    env = {**server.env, "BACKBURNER_API_KEY": token}
    note = tmp_path / "a-rather-long-file-name-that-a-narrow-table-would-cut.md"
    note.write_text("# Notes\n\nSome words to store.\n")
    uploaded = run("files", "upload", str(note), "--source", "docs", env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    listed = run("files", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert rows[0] == ["source", "id", "name", "status", "chunks", "size", "error"]
    file_id, name = rows[1][1], rows[1][2]
    assert name == note.name and "…" not in listed.stdout
    status = run("files", "status", file_id, env=env)  # the id pastes as it is
    assert status.returncode == 0 and f"id\t{file_id}" in status.stdout
    batches = run("batches", "list", env=env)
    assert batches.stdout.splitlines()[0].split("\t")[:3] == ["id", "provider", "status"]
    for args in (["files", "list"], ["batches", "list"], ["scheduler", "status"], ["keys", "list"]):
        result = run(*args, "--json", env=env)
        assert result.returncode == 0, (args, result.stderr)
        json.loads(result.stdout)


def test_search_from_the_command_line(server: Server, tmp_path: Path) -> None:
    env = {**server.env, "BACKBURNER_API_KEY": _key(server, "--org", "default").stdout.strip()}
    keys, weather = tmp_path / "keys.md", tmp_path / "weather.txt"
    keys.write_text("# Keys\n\nMarta Quintero keeps the spare keys in the blue drawer.\n")
    weather.write_text("The weather was fine all week, with keys of sunlight.\n")
    uploaded = run("files", "upload", str(keys), str(weather), "--source", "docs", "--wait", env=env)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr

    found = run("files", "search", "Where does Quintero keep the spare keys?", "--source", "docs", env=env)
    assert found.returncode == 0, found.stderr
    rows = [line.split("\t") for line in found.stdout.splitlines()]
    assert rows[0] == ["rank", "score", "file", "file_id", "chunk", "text"]
    assert rows[1][0] == "1" and rows[1][2] == "keys.md" and "blue drawer" in rows[1][5]
    assert len(rows) == 3  # the source's two passages

    only = run(
        "files", "search", "keys", "--source", "docs", "--mode", "lexical", "--file-name", "*.txt", env=env
    )
    assert only.returncode == 0, only.stderr
    assert [line.split("\t")[2] for line in only.stdout.splitlines()[1:]] == ["weather.txt"]
    as_json = json.loads(
        run("files", "search", "drawer", "--source", "docs", "-k", "1", "--json", env=env).stdout
    )
    assert as_json["mode"] == "hybrid" and len(as_json["results"]) == 1
    assert as_json["results"][0]["file_name"] == "keys.md"

    unknown = run("files", "search", "keys", "--source", "nope", env=env)
    assert unknown.returncode == 2 and "no source named 'nope'" in unknown.stderr
    too_many = run("files", "search", "keys", "--source", "docs", "-k", "1000", env=env)
    assert too_many.returncode == 2 and "k: Input should be less than or equal to" in too_many.stderr


def test_errors_say_what_to_do(server: Server, tmp_path: Path) -> None:
    no_key = run("batches", "list", env=server.env)
    assert no_key.returncode == 2
    assert "--api-key" in no_key.stderr and "BACKBURNER_API_KEY" in no_key.stderr
    wrong = run("files", "list", env={**server.env, "BACKBURNER_API_KEY": "bbk_000000000000_nope"})
    assert wrong.returncode == 2 and "refused this API key" in wrong.stderr
    token = _key(server, "--org", "default").stdout.strip()
    big = tmp_path / "big.txt"
    big.write_text("word " * (UPLOAD_LIMIT_BYTES // 2))
    refused = run(
        "files", "upload", str(big), "--source", "docs", env={**server.env, "BACKBURNER_API_KEY": token}
    )
    assert refused.returncode == 1
    assert "4,096 bytes" in refused.stdout + refused.stderr
    assert "file_upload_max_bytes" in refused.stdout + refused.stderr
    nowhere = run("files", "list", env={"BACKBURNER_URL": f"http://127.0.0.1:{free_port()}"})
    assert nowhere.returncode == 1 and "backburner serve" in nowhere.stderr


def test_a_busy_port_is_named_with_how_to_choose_another(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = str(busy.getsockname()[1])
    try:
        for args, hint in (
            (["serve", "--port", port], "BACKBURNER_PORT"),
            (["emulator", "--port", port], "--port"),
        ):
            result = run(*args, env={"BACKBURNER_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
            assert result.returncode == 2, result.stderr
            assert f"port {port} on 127.0.0.1 is already in use" in result.stderr and hint in result.stderr
            assert "Errno" not in result.stderr and "Traceback" not in result.stderr
    finally:
        busy.close()


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_missing_database_stops_with_how_to_create_it(tmp_path: Path, command: str) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/bb_no_such_database"
    args = [command, "--port", str(free_port())] if command == "serve" else [command]
    result = run(
        *args, env={"BACKBURNER_DATABASE_URL": url, "BACKBURNER_DATA_DIR": str(tmp_path)}, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "'bb_no_such_database' does not exist" in result.stderr and "createdb" in result.stderr
    assert "db.unusable" in result.stderr and "Traceback" not in result.stderr


async def test_only_the_current_term_holder_is_shown_as_leader(server: Server) -> None:
    token = _key(server, "--org", "default", "--admin").stdout.strip()
    env = {**server.env, "BACKBURNER_API_KEY": token}
    live = json.loads(run("scheduler", "status", "--json", env=env).stdout)
    leader_id = live["leader"]["instance_id"]
    engine = create_engine(load_settings(flags={"database_url": server.database_url}, environ={}).settings)
    try:
        async with engine.begin() as conn:  # a leader that was killed 30 s ago and still has its row
            dead = membership_store.InstanceRow(
                "dead-leader", "elsewhere", 1, "leader", "serve", utcnow(), utcnow() - timedelta(seconds=30)
            )
            await membership_store.upsert(conn, dead)
    finally:
        await engine.dispose()
    status = json.loads(run("scheduler", "status", "--json", env=env).stdout)
    roles = {i["instance_id"]: i["role"] for i in status["instances"]}
    assert roles == {leader_id: "leader", "dead-leader": "stale"}
    seen = next(i for i in status["instances"] if i["instance_id"] == "dead-leader")["last_seen_seconds_ago"]
    assert seen >= 29
    table = run("scheduler", "status", env=env).stdout
    assert "dead-leader\tstale" in table and "# Instances" in table


def test_roles_follow_the_term_and_the_heartbeats() -> None:
    now = utcnow()
    assert shown_role("a", "a", now - timedelta(seconds=100), now, 2.0) == "leader"
    assert shown_role("b", "a", now - timedelta(seconds=1), now, 2.0) == "follower"
    assert shown_role("b", "a", now - timedelta(seconds=7), now, 2.0) == "stale"
    assert shown_role("b", None, now, now, 2.0) == "follower"


async def test_connections_to_the_listening_socket_send_without_delay() -> None:
    """Answers go out at once: each connection has Nagle's algorithm off (with it on, a small
    answer waited 40 ms for the client's delayed ACK)."""
    import asyncio
    import socket

    from backburner.listen import bind

    sock = bind("127.0.0.1", 0, how_to_change="choose another port")
    accepted: asyncio.Queue[int] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = writer.get_extra_info("socket")
        accepted.put_nowait(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(accepted.get(), 10) == 1
        writer.close()
