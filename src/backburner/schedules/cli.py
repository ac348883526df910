"""`backburner schedules ...`: create and inspect schedules on a running server over HTTP.

Input that can be checked here (one timing, one action, JSON payload, a duration, a moment) is
checked before anything is sent: exit 2. The server refusing the input (a bad field, an unknown
id) also exits 2; an unreachable or failing server exits 1.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer

from backburner.cli_common import DEFAULT_SERVER_URL, ApiKeyOption, UrlOption
from backburner.cli_http import (
    EXIT_BAD_INPUT,
    EXIT_SERVER_ERROR,
    ServerError,
    check,
    client,
    fail,
    unreachable,
)
from backburner.cli_output import print_fields, print_table
from backburner.schedules.policies import CatchUp, Overlap

schedules_app = typer.Typer(
    help="Create schedules that fire webhooks or handlers, and read their runs, on a running server.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
IdArgument = Annotated[str, typer.Argument(help="The schedule's id.")]

# Answers that refuse the caller's input (a field, an id): exit 2, as for input refused here.
INPUT_REFUSED = frozenset({400, 404, 422})
UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)([smhd]))+$")
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration_s(text: str) -> float:
    """`30s`, `5m`, `1h30m`, `2d` or a number of seconds; ValueError naming what is allowed."""
    cleaned = text.strip().lower()
    try:
        return float(cleaned)
    except ValueError:
        pass
    if not DURATION.match(cleaned):
        raise ValueError(f"{text!r} is not a duration; use e.g. 30s, 5m, 1h30m, 2d or a number of seconds")
    return sum(float(number) * UNITS_S[unit] for number, unit in DURATION_PART.findall(cleaned))


def _moment(option: str, text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        fail(f"{option} {text!r} is not an ISO 8601 moment such as 2026-12-08T09:00; nothing was sent", 2)


def _one(option_values: dict[str, Any], what: str) -> None:
    given = [name for name, value in option_values.items() if value is not None]
    if len(given) != 1:
        names = " | ".join(option_values)
        detail = f"got {', '.join(given)}" if given else "got none"
        fail(f"give exactly one {what}: {names} ({detail}); nothing was sent", EXIT_BAD_INPUT)


def field_errors(response: httpx.Response) -> str:
    """The server's `detail`, each invalid field of a 422 as `field: message`."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text
    if not isinstance(detail, list):
        return str(detail)
    parts = []
    for error in detail:
        if isinstance(error, dict):
            where = [str(p) for p in error.get("loc", []) if p not in ("body", "query", "path")]
            parts.append(f"{'.'.join(where) or 'input'}: {error.get('msg', '')}")
    return "; ".join(parts) or response.text


def call_server(url: str, api_key: str | None, method: str, path: str, **kwargs: Any) -> Any:
    """One call; its JSON, or exit 2 (the input was refused) or 1 (anything else)."""
    try:
        with client(url, api_key) as session:
            response = session.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(unreachable(url, exc), EXIT_SERVER_ERROR)
    if response.status_code in INPUT_REFUSED:
        fail(f"the server answered {response.status_code}: {field_errors(response)}", EXIT_BAD_INPUT)
    try:
        return check(response)
    except ServerError as exc:
        fail(str(exc), exc.exit_code)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _timing(schedule: dict[str, Any]) -> str:
    if schedule["kind"] == "cron":
        return f"cron {schedule['cron']} ({schedule['timezone']})"
    if schedule["kind"] == "interval":
        return f"every {schedule['interval_seconds']:g}s"
    return f"at {schedule['at']}"


def _target(schedule: dict[str, Any]) -> str:
    return str(
        schedule["webhook_url"] if schedule["action"] == "webhook" else f"handler {schedule['handler']}"
    )


def _state(schedule: dict[str, Any]) -> str:
    if schedule["paused"]:
        return "paused" + (f" ({schedule['note']})" if schedule.get("note") else "")
    return "active" if schedule["next_fire_at"] else "ended"


def _print_schedule(schedule: dict[str, Any]) -> None:
    rows = [
        ("id", schedule["id"]),
        ("timing", _timing(schedule)),
        ("action", f"{schedule['action']}: {_target(schedule)}"),
        ("state", _state(schedule)),
        ("catch-up", f"{schedule['catch_up']} (grace {schedule['misfire_grace_seconds']:g}s)"),
        ("overlap", schedule["overlap"]),
        ("next fire times", ", ".join(schedule["next_fire_times"]) or "-"),
        ("last fire", _cell(schedule["last_fire_at"])),
        ("missed fires", str(schedule["missed_fires"])),
    ]
    if schedule.get("trigger_at"):
        rows.append(("triggered", schedule["trigger_at"]))
    if schedule.get("signing_secret"):
        rows.append(("signing secret (shown once)", schedule["signing_secret"]))
    print_fields(f"Schedule {schedule['name']}", rows)


def _show(schedule: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(schedule)
    else:
        _print_schedule(schedule)


@schedules_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the schedule.")],
    cron: Annotated[
        str | None, typer.Option("--cron", help="Five cron fields, e.g. '0 9 * * 1-5'.", show_default=False)
    ] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="IANA time zone of --cron and --at.")] = "UTC",
    every: Annotated[
        str | None, typer.Option("--every", help="An interval: 30s, 5m, 1h30m, 2d.", show_default=False)
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="One moment, e.g. 2026-12-08T09:00.", show_default=False)
    ] = None,
    webhook: Annotated[
        str | None, typer.Option("--webhook", help="URL that receives a signed POST.", show_default=False)
    ] = None,
    handler: Annotated[
        str | None,
        typer.Option("--handler", help="A handler name from schedule_handlers.", show_default=False),
    ] = None,
    payload: Annotated[str, typer.Option("--payload", help="JSON sent with every fire.")] = "{}",
    catch_up: Annotated[CatchUp, typer.Option("--catch-up", help="Missed fires.")] = CatchUp.LATEST,
    overlap: Annotated[
        Overlap, typer.Option("--overlap", help="A fire while the last is still delivering.")
    ] = Overlap.SKIP,
    catch_up_limit: Annotated[
        int | None,
        typer.Option("--catch-up-limit", min=1, help="Most missed fires run by `all`.", show_default=False),
    ] = None,
    misfire_grace: Annotated[
        str | None,
        typer.Option(
            "--misfire-grace", help="A fire later than this is missed (e.g. 60s).", show_default=False
        ),
    ] = None,
    start_at: Annotated[
        str | None, typer.Option("--start-at", help="No fire before.", show_default=False)
    ] = None,
    end_at: Annotated[str | None, typer.Option("--end-at", help="No fire after.", show_default=False)] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a schedule; `--json` prints it with its `id` and its signing secret (shown once)."""
    _one({"--cron": cron, "--every": every, "--at": at}, "timing")
    _one({"--webhook": webhook, "--handler": handler}, "action")
    try:
        payload_value = json.loads(payload)
    except ValueError as exc:
        fail(f"--payload is not valid JSON ({exc}); nothing was sent", EXIT_BAD_INPUT)
    body: dict[str, Any] = {
        "name": name,
        "timezone": timezone,
        "payload": payload_value,
        "catch_up": catch_up.value,
        "overlap": overlap.value,
        "paused": paused,
    }
    try:
        if every is not None:
            body["interval_seconds"] = parse_duration_s(every)
        if misfire_grace is not None:
            body["misfire_grace_seconds"] = parse_duration_s(misfire_grace)
    except ValueError as exc:
        fail(f"{exc}; nothing was sent", EXIT_BAD_INPUT)
    if cron is not None:
        body["cron"] = cron
    for key, value in (("at", _moment("--at", at)), ("start_at", _moment("--start-at", start_at))):
        if value is not None:
            body[key] = value
    if (end := _moment("--end-at", end_at)) is not None:
        body["end_at"] = end
    if catch_up_limit is not None:
        body["catch_up_limit"] = catch_up_limit
    if webhook is not None:
        body["webhook_url"] = webhook
    else:
        body["handler"] = handler
    _show(call_server(url, api_key, "POST", "/v1/schedules", json=body), as_json)


@schedules_app.command("list")
def list_schedules(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most schedules to show.")] = 100,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """List schedules, oldest first, with their next fire times."""
    page = call_server(url, api_key, "GET", "/v1/schedules", params={"limit": limit})
    if as_json:
        print_json(page)
        return
    print_table(
        "Schedules",
        ["id", "name", "timing", "state", "next fire times"],
        [
            [
                s["id"],
                s["name"],
                _timing(s),
                _state(s),
                ", ".join(t[:19] for t in s["next_fire_times"]) or "-",
            ]
            for s in page["data"]
        ],
    )


@schedules_app.command("pause")
def pause(
    schedule_id: IdArgument,
    note: Annotated[str | None, typer.Option("--note", help="Why it is paused.", show_default=False)] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Pause a schedule: nothing fires until it is resumed."""
    _show(
        call_server(url, api_key, "POST", f"/v1/schedules/{schedule_id}/pause", json={"note": note}), as_json
    )


def _one_call_command(name: str, method: str, suffix: str, doc: str) -> None:
    """A command that sends one request about a schedule and shows the schedule it answers."""

    def command(
        schedule_id: IdArgument,
        as_json: JsonOption = False,
        url: UrlOption = DEFAULT_SERVER_URL,
        api_key: ApiKeyOption = None,
    ) -> None:
        _show(call_server(url, api_key, method, f"/v1/schedules/{schedule_id}{suffix}"), as_json)

    command.__doc__ = doc
    schedules_app.command(name)(command)


for _name, _method, _suffix, _doc in (
    ("show", "GET", "", "Show one schedule and its next fire times."),
    ("resume", "POST", "/resume", "Resume a paused schedule from its next fire time after now."),
    ("trigger", "POST", "/trigger", "Fire a schedule once now (the leader delivers it like any fire)."),
):
    _one_call_command(_name, _method, _suffix, _doc)


@schedules_app.command("delete")
def delete(
    schedule_id: IdArgument,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a schedule and its runs."""
    call_server(url, api_key, "DELETE", f"/v1/schedules/{schedule_id}")
    if as_json:
        print_json({"deleted": schedule_id})
    else:
        typer.echo(f"deleted {schedule_id}")


@schedules_app.command("runs")
def runs(
    schedule_id: IdArgument,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most runs to show.")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """The runs of a schedule, latest first: fire time, outcome, attempts, HTTP status, epoch."""
    page = call_server(url, api_key, "GET", f"/v1/schedules/{schedule_id}/runs", params={"limit": limit})
    if as_json:
        print_json(page["data"])
        return
    print_table(
        f"Runs of {schedule_id}",
        ["fire time", "trigger", "outcome", "attempts", "http", "error", "epoch", "instance"],
        [
            [
                run["fire_time"],
                run["trigger"],
                run["outcome"],
                run["attempts"],
                _cell(run["http_status"]),
                _cell(run["error"]),
                run["epoch"],
                run["instance_id"],
            ]
            for run in page["data"]
        ],
        keep_whole=("fire time",),
    )
