"""`backburner schedules ...` against a served app whose leader fires to a local receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from backburner.cli import app as cli
from tests.conftest import MakeSettings
from tests.support.processes import free_port, wait_until
from tests.support.receiver import Receiver, running_receiver
from tests.support.served import served


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture
def server(make_settings: MakeSettings, sqlite_url: str, receiver: Receiver) -> Iterator[str]:
    settings = make_settings(
        database_url=sqlite_url,
        schedule_webhook_allowed_urls=[receiver.prefix],
        schedule_poll_interval_seconds=0.2,
    )
    with served(settings) as url:
        yield url


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["schedules", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str) -> Any:
    code, out, err = run(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_create_list_show_pause_resume_trigger_runs_delete(server: str, receiver: Receiver) -> None:
    url = ["--url", server]
    created = run_json(
        "create",
        "wake the agent",
        "--cron",
        "0 9 * * 1-5",
        "--timezone",
        "Europe/Berlin",
        "--webhook",
        receiver.prefix + "agent",
        "--payload",
        '{"messages": [{"role": "user", "content": "Good morning"}]}',
        "--catch-up",
        "skip",
        "--overlap",
        "buffer_one",
        *url,
    )
    schedule_id = created["id"]
    assert (created["cron"], created["timezone"], created["catch_up"], created["overlap"]) == (
        "0 9 * * 1-5",
        "Europe/Berlin",
        "skip",
        "buffer_one",
    )
    assert created["payload"]["messages"][0]["content"] == "Good morning"
    assert len(created["next_fire_times"]) == 5 and created["signing_secret"].startswith("bbs_")

    every = run_json("create", "twice a minute", "--every", "30s", "--webhook", receiver.prefix, *url)
    assert every["interval_seconds"] == 30.0
    once = run_json(
        "create",
        "once",
        "--at",
        "2099-12-08T09:00",
        "--timezone",
        "Europe/Berlin",
        "--webhook",
        receiver.prefix,
        *url,
    )
    assert once["at"] == "2099-12-08T08:00:00+00:00"

    listed = run_json("list", *url)
    assert [s["id"] for s in listed["data"]] == [schedule_id, every["id"], once["id"]]
    assert [len(s["next_fire_times"]) for s in listed["data"]] == [3, 3, 1]
    code, table, _ = run("list", *url)
    assert code == 0 and "wake the agent" in table and "every 30s" in table

    assert run_json("show", schedule_id, *url)["next_fire_times"] == created["next_fire_times"]
    code, table, _ = run("show", schedule_id, *url)
    assert code == 0 and "next fire times" in table and "signing secret" not in table

    paused = run_json("pause", schedule_id, "--note", "holiday", *url)
    assert paused["paused"] is True and paused["note"] == "holiday" and paused["next_fire_times"] == []
    assert run_json("resume", schedule_id, *url)["paused"] is False
    assert run_json("trigger", schedule_id, *url)["trigger_at"] is not None

    def delivered() -> list[dict[str, Any]] | None:
        runs: list[dict[str, Any]] = run_json("runs", schedule_id, *url)
        return runs if runs and runs[0]["outcome"] == "succeeded" else None

    [fire] = wait_until(delivered, 20, "the triggered fire to be delivered")
    assert {"fire_time", "outcome", "attempts", "epoch"} <= set(fire)
    assert (fire["attempts"], fire["epoch"] >= 1) == (1, True)
    code, table, _ = run("runs", schedule_id, *url)
    assert code == 0 and "succeeded" in table and "manual" in table
    assert receiver.count() == 1

    assert run_json("delete", schedule_id, *url) == {"deleted": schedule_id}
    code, _, err = run("show", schedule_id, *url)
    assert code == 2 and "404" in err and f"no schedule '{schedule_id}'" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["x", "--webhook", "http://a/"], "give exactly one timing: --cron | --every | --at (got none)"),
        (["x", "--cron", "* * * * *", "--every", "5m", "--webhook", "http://a/"], "got --cron, --every"),
        (["x", "--every", "5m"], "give exactly one action: --webhook | --handler"),
        (["x", "--every", "5 minutes", "--webhook", "http://a/"], "not a duration"),
        (
            ["x", "--every", "5m", "--webhook", "http://a/", "--payload", "{nope"],
            "--payload is not valid JSON",
        ),
        (["x", "--at", "next tuesday", "--webhook", "http://a/"], "not an ISO 8601 moment"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(args: list[str], says: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # no server: the checks are local
    code, _, err = run("create", *args, "--url", nowhere)
    assert code == 2 and says in err and "nothing was sent" in err, err


def test_the_server_refusing_input_exits_2_naming_the_field(server: str, receiver: Receiver) -> None:
    code, _, err = run(
        "create",
        "x",
        "--cron",
        "0 9 * * *",
        "--timezone",
        "Mars/Base",
        "--webhook",
        receiver.prefix,
        "--url",
        server,
    )
    assert code == 2 and "422" in err and "timezone: unknown time zone 'Mars/Base'" in err
    code, _, err = run(
        "create", "x", "--every", "1m", "--webhook", "https://elsewhere.example/", "--url", server
    )
    assert code == 2 and "webhook_url:" in err and "not allowed" in err
    code, _, err = run("create", "x", "--every", "0s", "--webhook", receiver.prefix, "--url", server)
    assert code == 2 and "interval_seconds: must be between 1" in err
    code, _, err = run("list", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach the server" in err
    assert run_json("list", "--url", server)["data"] == []
