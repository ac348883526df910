"""`backburner batches ...` against a served app whose scheduler polls the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from backburner.cli import app as cli
from tests.support import batch_env as _support
from tests.support.batch_env import provider_settings, requests_for
from tests.support.processes import free_port, wait_until
from tests.support.served import served

shared_emulator = _support.shared_emulator  # fixtures of the batch tests
emulator = _support.emulator


@pytest.fixture
def server(make_settings, sqlite_url, emulator) -> Iterator[str]:
    settings = make_settings(
        database_url=sqlite_url,
        enable_batch_job_polling=True,
        poll_running_llm_batches_interval_seconds=1,
        batch_poll_jitter_seconds=0,
        **provider_settings(emulator),
    )
    with served(settings) as url:
        yield url


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["batches", *args])
    return result.exit_code, result.stdout, result.stderr


def test_bad_files_are_refused_before_anything_is_sent(tmp_path: Path, emulator) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # no server: the checks are local
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"custom_id": "a", "params": {}}\n{"custom_id": "b", "params": {\n')
    code, _, err = _run("submit", str(malformed), "--provider", "openai", "--model", "m", "--url", nowhere)
    assert code == 2 and "malformed JSONL at line 2" in err and "nothing was sent" in err

    not_object = tmp_path / "params.jsonl"
    not_object.write_text('{"custom_id": "a", "params": "hello"}\n')
    code, _, err = _run("submit", str(not_object), "--provider", "openai", "--model", "m", "--url", nowhere)
    assert code == 2 and "requests[0].params must be an object, not a string" in err

    duplicates = tmp_path / "dupes.jsonl"
    duplicates.write_text("\n".join(json.dumps(r) for r in requests_for(["a", "a"])))
    code, _, err = _run(
        "submit", str(duplicates), "--provider", "anthropic", "--model", "m", "--url", nowhere
    )
    assert code == 2 and "'a' duplicates requests[0]" in err

    code, _, err = _run("submit", str(tmp_path / "absent.jsonl"), "--provider", "openai", "--model", "m")
    assert code == 2 and "cannot read" in err
    assert emulator.state.stats.snapshot()["requests"] == {}


def test_submit_list_show_cancel_results(server: str, tmp_path: Path, emulator) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in requests_for(["q-1", "q-2", "q-error-3"])) + "\n")
    code, out, err = _run(
        "submit", str(source), "--provider", "anthropic", "--model", "claude-x", "--url", server
    )
    assert code == 0, err
    created = json.loads(out)
    assert (created["status"], created["request_count"]) == ("running", 3)

    code, out, _ = _run("list", "--json", "--url", server)
    assert code == 0 and [b["id"] for b in json.loads(out)["data"]] == [created["id"]]
    code, out, _ = _run("list", "--url", server)
    assert code == 0 and created["id"] in out

    httpx.post(f"{emulator.base_url}/_emulator/batches/{created['provider_batch_id']}/end").raise_for_status()

    def finished() -> bool:
        code, out, _ = _run("show", created["id"], "--url", server)
        return code == 0 and json.loads(out)["status"] == "completed"

    wait_until(finished, 30, "the server's poller to finish the batch")
    target = tmp_path / "results.jsonl"
    code, _, err = _run("results", created["id"], "--output", str(target), "--url", server)
    assert code == 0, err
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert {line["custom_id"]: line["status"] for line in lines} == {
        "q-1": "succeeded",
        "q-2": "succeeded",
        "q-error-3": "errored",
    }

    code, out, err = _run("resubmit", created["id"], "--items", "errored", "--url", server)
    assert code == 0, err
    again = json.loads(out)
    assert (again["resubmitted_from"], again["request_count"], again["status"]) == (
        created["id"],
        1,
        "running",
    )
    code, _, err = _run("resubmit", created["id"], "--items", "all", "--url", server)
    assert code == 2 and "--items must be expired, errored or unfinished" in err

    code, _, err = _run("cancel", created["id"], "--url", server)
    assert code == 1 and "409" in err and "already ended" in err
    code, _, err = _run("show", "batch-missing", "--url", server)
    assert code == 1 and "404" in err
