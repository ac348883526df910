"""`backburner scheduler status`: the leader, the jobs and the instances, from a running server."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from backburner.cli_common import DEFAULT_SERVER_URL, ApiKeyOption, UrlOption

STATUS_PATH = "/api/admin/scheduler/status"
TIMEOUT_S = 10.0
EXIT_SERVER_ERROR = 1

scheduler_app = typer.Typer(help="Inspect leader election and the scheduler.", no_args_is_help=True)


def fetch_status(url: str, api_key: str | None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url.rstrip("/") + STATUS_PATH, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the server at {url}: {exc}", err=True)
        raise typer.Exit(EXIT_SERVER_ERROR) from None
    if not response.is_success:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        typer.echo(f"error: the server answered {response.status_code}: {detail}", err=True)
        raise typer.Exit(EXIT_SERVER_ERROR)
    body: dict[str, Any] = response.json()
    return body


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def render(status: dict[str, Any], console: Console) -> None:
    election = status["election"]
    leader = status.get("leader") or {}
    overview = Table(title="Leader election", show_header=False)
    overview.add_column("key")
    overview.add_column("value")
    overview.add_row("this instance", status["instance_id"])
    overview.add_row("is leader", "yes" if status["is_leader"] else "no")
    overview.add_row("election", f"{election['name']} ({election['backend']}, mode {election['mode']})")
    overview.add_row("lease", f"{election['lease_seconds']:g} s")
    overview.add_row("state", election["state"])
    overview.add_row("leader", _cell(leader.get("instance_id")))
    overview.add_row("epoch", _cell(leader.get("epoch")))
    overview.add_row("since", _cell(leader.get("since")))
    if status.get("database_error"):
        overview.add_row("database error", status["database_error"])
    console.print(overview)

    jobs = Table(title="Jobs")
    for column in ("id", "name", "trigger", "next run", "last outcome", "duration s", "error"):
        jobs.add_column(column)
    for job in status["jobs"]:
        last = job.get("last_run") or {}
        duration = last.get("duration")
        jobs.add_row(
            job["id"],
            job["name"],
            job["trigger"],
            _cell(job.get("next_run_time")),
            _cell(last.get("outcome")),
            "-" if duration is None else f"{duration:.3f}",
            _cell(last.get("error")),
        )
    console.print(jobs)

    instances = Table(title="Instances")
    for column in ("instance", "role", "process", "last seen"):
        instances.add_column(column)
    for instance in status["instances"]:
        instances.add_row(
            instance["instance_id"], instance["role"], _cell(instance.get("process")), instance["last_seen"]
        )
    console.print(instances)


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
    render(body, Console(width=160))
