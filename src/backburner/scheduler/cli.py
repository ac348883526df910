"""`backburner scheduler status`: the leader, the jobs and the instances, from a running server."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from backburner.cli_common import DEFAULT_SERVER_URL, ApiKeyOption, UrlOption
from backburner.cli_http import request
from backburner.cli_output import print_fields, print_table

STATUS_PATH = "/api/admin/scheduler/status"

scheduler_app = typer.Typer(help="Inspect leader election and the scheduler.", no_args_is_help=True)


def fetch_status(url: str, api_key: str | None) -> dict[str, Any]:
    body: dict[str, Any] = request(url, api_key, "GET", STATUS_PATH)
    return body


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _ago(instance: dict[str, Any]) -> str:
    seconds = instance.get("last_seen_seconds_ago")
    return "-" if seconds is None else f"{seconds:g} s ago"


def render(status: dict[str, Any]) -> None:
    election = status["election"]
    leader = status.get("leader") or {}
    overview: list[tuple[str, Any]] = [
        ("this instance", status["instance_id"]),
        ("is leader", "yes" if status["is_leader"] else "no"),
        ("election", f"{election['name']} ({election['backend']}, mode {election['mode']})"),
        ("lease", f"{election['lease_seconds']:g} s"),
        ("state", election["state"]),
        ("leader", _cell(leader.get("instance_id"))),
        ("epoch", _cell(leader.get("epoch"))),
        ("since", _cell(leader.get("since"))),
    ]
    if status.get("database_error"):
        overview.append(("database error", status["database_error"]))
    print_fields("Leader election", overview, heading=True)

    jobs = []
    for job in status["jobs"]:
        last = job.get("last_run") or {}
        duration = last.get("duration")
        jobs.append(
            (
                job["id"],
                job["name"],
                job["trigger"],
                _cell(job.get("next_run_time")),
                _cell(last.get("outcome")),
                "-" if duration is None else f"{duration:.3f}",
                _cell(last.get("error")),
            )
        )
    columns = ("id", "name", "trigger", "next run", "last outcome", "duration s", "error")
    print_table("Jobs", columns, jobs, keep_whole=("id", "name"), heading=True)

    instances = [
        (i["instance_id"], i["role"], _cell(i.get("process")), i["last_seen"], _ago(i))
        for i in status["instances"]
    ]
    print_table(
        "Instances",
        ("instance", "role", "process", "last seen", "seen"),
        instances,
        keep_whole=("instance",),
        heading=True,
    )


@scheduler_app.command("status")
def status(
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Print who leads (instance, epoch, since), each job's trigger, next and last run, and the instances."""
    body = fetch_status(url, api_key)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    render(body)
