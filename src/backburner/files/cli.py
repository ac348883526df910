"""`backburner files upload|list|status|search|reembed`: files on a running server, over HTTP."""

from __future__ import annotations

import json
import mimetypes
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from backburner.cli_common import DEFAULT_SERVER_URL, ApiKeyOption, UrlOption
from backburner.cli_http import EXIT_SERVER_ERROR, ServerError, check, client, fail, unreachable
from backburner.cli_output import print_fields, print_table
from backburner.files.search.modes import SearchMode

EXIT_FAILED = 1
EXIT_USAGE = 2
TERMINAL = ("completed", "error")
MAX_RETRY_AFTER_S = 60.0
SOURCES_PAGE_SIZE = 100


class OnConflict(StrEnum):
    ALLOW = "allow"
    REPLACE = "replace"
    ERROR = "error"


files_app = typer.Typer(
    help="Upload files and follow their processing on a running server.", no_args_is_help=True
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SourceOption = Annotated[str, typer.Option("--source", help="Source name; created if it does not exist.")]


def _json(response: httpx.Response) -> Any:
    return check(response)


def _source_id(client: httpx.Client, name: str, *, create: bool) -> str:
    for source in _json(client.get("/v1/sources", params={"name": name})):
        return str(source["id"])
    if not create:
        raise ServerError(f"no source named {name!r}", EXIT_USAGE)
    return str(_json(client.post("/v1/sources", json={"name": name}))["id"])


def _upload_one(client: httpx.Client, source_id: str, path: Path, params: dict[str, str]) -> dict[str, Any]:
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    while True:
        with path.open("rb") as handle:  # httpx streams the file object in chunks
            response = client.post(
                f"/v1/sources/{source_id}/files",
                files={"file": (path.name, handle, content_type)},
                params=params,
            )
        if response.status_code != 429:  # over the uploads per minute: wait as told, then again
            break
        time.sleep(min(float(response.headers.get("retry-after", "1") or 1), MAX_RETRY_AFTER_S))
    result: dict[str, Any] = _json(response)
    return result


@files_app.command("upload")
def upload(
    paths: Annotated[
        list[Path], typer.Argument(help="Files to upload.", exists=True, dir_okay=False, readable=True)
    ],
    source: SourceOption,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show a progress bar per file until each is COMPLETED or ERROR.")
    ] = False,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Seconds between status checks.")
    ] = 0.5,
    replaces: Annotated[
        str | None,
        typer.Option(
            "--replaces",
            help="Upload a new version of this file id (one path only): it takes the file's place "
            "in search when it completes.",
        ),
    ] = None,
    on_conflict: Annotated[
        OnConflict | None,
        typer.Option(
            "--on-conflict",
            help="A file of the same name in the source: keep both (allow), upload a new version "
            "of it (replace), or refuse (error).",
        ),
    ] = None,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload files to a source; exit 1 if any upload is refused or (with --wait) any file fails."""
    if replaces is not None and len(paths) != 1:
        fail("--replaces names one file: give exactly one path", EXIT_USAGE)
    if replaces is not None and on_conflict is not None:
        fail("give either --replaces or --on-conflict, not both", EXIT_USAGE)
    params = {"replaces": replaces} if replaces is not None else {}
    if on_conflict is not None:
        params["on_conflict"] = on_conflict.value
    console = Console(soft_wrap=True)  # a line with an id is never broken
    failed = False
    uploaded: list[tuple[Path, dict[str, Any]]] = []
    try:
        with client(url, api_key) as session:
            source_id = _source_id(session, source, create=True)
            for path in paths:
                try:
                    file = _upload_one(session, source_id, path, params)
                except ServerError as exc:
                    console.print(f"[red]refused[/red] {path}: {exc}")
                    failed = True
                    continue
                note = _upload_note(file)
                console.print(f"uploaded {path} as {file['id']}{note}")
                uploaded.append((path, file))
            if wait and uploaded:
                failed = _follow(session, uploaded, console, poll_interval) or failed
    except httpx.HTTPError as exc:
        fail(unreachable(url, exc), EXIT_SERVER_ERROR)
    except ServerError as exc:
        fail(str(exc), exc.exit_code)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _upload_note(file: dict[str, Any]) -> str:
    if file.get("unchanged"):
        return " (unchanged: the file already holds this content)"
    if file.get("duplicate"):
        return " (same content already uploaded)"
    if file.get("replaces"):
        return f" (new version of {file['replaces']})"
    return ""


def _follow(
    client: httpx.Client, uploaded: list[tuple[Path, dict[str, Any]]], console: Console, poll_interval: float
) -> bool:
    """Follow every file to its end with a progress bar each; True if any ended in ERROR."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TimeElapsedColumn(),
    )
    states: dict[str, dict[str, Any]] = {file["id"]: file for _, file in uploaded}
    names = {file["id"]: path.name for path, file in uploaded}
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, TaskID] = {
            file_id: progress.add_task(_describe(names[file_id], file), total=None)
            for file_id, file in states.items()
        }
        while True:
            for file_id, task in tasks.items():
                file = states[file_id]
                if file["status"] not in TERMINAL:
                    file = states[file_id] = _json(client.get(f"/v1/files/{file_id}"))
                total = file.get("total_chunks")
                done = file.get("chunks_embedded", 0)
                if file["status"] == "completed" and total is not None:
                    done = total
                progress.update(
                    task, description=_describe(names[file_id], file), total=total, completed=done
                )
            if all(file["status"] in TERMINAL for file in states.values()):
                break
            time.sleep(poll_interval)
    for file_id, file in states.items():
        if file["status"] == "error":
            console.print(f"[red]error[/red] {names[file_id]} ({file_id}): {file.get('error_message')}")
    return any(file["status"] == "error" for file in states.values())


def _describe(name: str, file: dict[str, Any]) -> str:
    status = file["status"]
    colour = {"completed": "green", "error": "red"}.get(status, "yellow")
    return f"{name} [{colour}]{status}[/{colour}]"


@files_app.command("list")
def list_files(
    source: Annotated[
        str | None, typer.Option("--source", help="Only this source (default: every source).")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """List files with their status (timeouts are applied as they are listed)."""
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        with client(url, api_key) as session:
            sources = _all_sources(session, source)
            for entry in sources:
                if source is not None and entry["name"] != source:
                    continue
                rows.extend((entry["name"], file) for file in _all_files(session, entry["id"]))
            if source is not None and not any(entry["name"] == source for entry in sources):
                raise ServerError(f"no source named {source!r}")
    except httpx.HTTPError as exc:
        fail(unreachable(url, exc), EXIT_SERVER_ERROR)
    except ServerError as exc:
        fail(str(exc), exc.exit_code)
    if as_json:
        typer.echo(json.dumps([{"source": name, **file} for name, file in rows], indent=2))
        return
    columns = ("source", "id", "name", "status", "chunks", "size", "error")
    table_rows = [
        (
            name,
            file["id"],
            file["file_name"],
            file["status"],
            f"{file['chunks_embedded']}/{'?' if file['total_chunks'] is None else file['total_chunks']}",
            file["size_bytes"],
            file.get("error_message") or "",
        )
        for name, file in rows
    ]
    print_table("Files", columns, table_rows)


def _all_sources(client: httpx.Client, name: str | None) -> list[dict[str, Any]]:
    """Every source (a page at a time), or the one named `name` (names are unique)."""
    if name is not None:
        return list(_json(client.get("/v1/sources", params={"name": name})))
    sources: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": SOURCES_PAGE_SIZE}
    while True:
        page = _json(client.get("/v1/sources", params=params))
        sources.extend(page)
        if len(page) < SOURCES_PAGE_SIZE:
            return sources
        params["after"] = page[-1]["id"]


def _all_files(client: httpx.Client, source_id: str) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"check_status_updates": "true", "limit": 100}
        if cursor is not None:
            params["after"] = cursor
        page = _json(client.get(f"/v1/sources/{source_id}/files", params=params))
        files.extend(page["files"])
        cursor = page["next_cursor"]
        if cursor is None:
            return files


@files_app.command("status")
def status(
    file_id: Annotated[str, typer.Argument(help="The file's id.")],
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Show a file's status, error, warnings, progress and time per stage."""
    try:
        with client(url, api_key) as session:
            file = _json(session.get(f"/v1/files/{file_id}"))
    except httpx.HTTPError as exc:
        fail(unreachable(url, exc), EXIT_SERVER_ERROR)
    except ServerError as exc:
        fail(str(exc), exc.exit_code)
    if as_json:
        typer.echo(json.dumps(file, indent=2))
        return
    fields: list[tuple[str, Any]] = [("id", file_id)]
    for key in (
        "file_name",
        "status",
        "error_message",
        "total_chunks",
        "chunks_embedded",
        "attempts",
        "size_bytes",
    ):
        fields.append((key, file.get(key)))
    for stage, seconds in file["stage_seconds"].items():
        fields.append((f"{stage} (s)", None if seconds is None else f"{seconds:.3f}"))
    for warning in file.get("warnings") or []:
        fields.append(("warning", warning))
    print_fields(f"File {file_id}", fields)


@files_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    source: Annotated[str, typer.Option("--source", help="The source's name.")],
    mode: Annotated[
        SearchMode,
        typer.Option("--mode", help="hybrid (both rankings fused by reciprocal rank), vector or lexical."),
    ] = SearchMode.HYBRID,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many passages.")] = 10,
    file_ids: Annotated[
        list[str] | None, typer.Option("--file-id", help="Only this file (repeat for several).")
    ] = None,
    file_name: Annotated[
        str | None, typer.Option("--file-name", help="Only files whose name matches this glob (* and ?).")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Search a source's passages, best first. Exits 2 when the source or the query is refused."""
    params: dict[str, Any] = {"q": query, "k": k, "mode": mode.value}
    if file_ids:
        params["file_ids"] = file_ids
    if file_name is not None:
        params["file_name"] = file_name
    try:
        with client(url, api_key) as session:
            source_id = _source_id(session, source, create=False)
            found = _refusal_is_usage(session.get(f"/v1/sources/{source_id}/search", params=params))
    except httpx.HTTPError as exc:
        fail(unreachable(url, exc), EXIT_SERVER_ERROR)
    except ServerError as exc:
        fail(str(exc), exc.exit_code)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    columns = ("rank", "score", "file", "file_id", "chunk", "text")
    rows = [
        (
            hit["rank"],
            f"{hit['score']:.4g}",
            hit["file_name"],
            hit["file_id"],
            hit["chunk_index"],
            " ".join(hit["text"].split()),
        )
        for hit in found["results"]
    ]
    print_table(f"{mode.value} search of {source!r}", columns, rows, keep_whole=("file_id",))


@files_app.command("reembed")
def reembed(
    source: Annotated[str, typer.Option("--source", help="The source's name.")],
    to: Annotated[str, typer.Option("--to", help="The target model, e.g. hash-512 or an endpoint's model.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Start without asking.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start and return; do not follow.")] = False,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Seconds between progress checks.")
    ] = 0.5,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Re-embed a source with another model: print the estimate, start it in the background and
    follow it until search switches to the new model. Ctrl-C stops following, not the work.
    Exits 2 when the source or the model is refused, 1 when not confirmed."""
    console = Console(soft_wrap=True)
    try:
        with client(url, api_key) as session:
            path = f"/v1/sources/{_source_id(session, source, create=False)}/reembed"
            estimate = _refusal_is_usage(session.post(path, json={"model": to, "dry_run": True}))
            console.print(_estimate_line(source, estimate))
            if not yes and not typer.confirm("Start the re-embedding?", default=False):
                console.print("nothing started")
                raise typer.Exit(EXIT_FAILED)
            started = _refusal_is_usage(session.post(path, json={"model": to}))
            console.print(f"started re-embedding {source!r} to {started['model']}")
            if no_wait:
                console.print(f"follow it with GET {path}")
                return
            try:
                _follow_reembed(session, path, started, console, poll_interval)
            except KeyboardInterrupt:
                console.print("stopped following; the re-embedding goes on in the background")
    except httpx.HTTPError as exc:
        fail(unreachable(url, exc), EXIT_SERVER_ERROR)
    except ServerError as exc:
        fail(str(exc), exc.exit_code)


def _refusal_is_usage(response: httpx.Response) -> Any:
    """As `check`, but a refusal of the request (4xx but 429, too many requests) exits 2: the
    input was wrong."""
    try:
        return check(response)
    except ServerError as exc:
        if 400 <= response.status_code < 500 and response.status_code != 429:
            raise ServerError(str(exc), EXIT_USAGE) from None
        raise


def _estimate_line(source: str, estimate: dict[str, Any]) -> str:
    cost = estimate["cost_usd"]
    priced = f"about ${cost:.4f}" if cost is not None else f"cost unknown (no price for {estimate['model']})"
    return (
        f"{source}: {estimate['from_model']} -> {estimate['model']}: {estimate['passages']} passages, "
        f"about {estimate['tokens']} tokens, {priced}"
    )


def _follow_reembed(
    client: httpx.Client, path: str, state: dict[str, Any], console: Console, poll_interval: float
) -> None:
    """Until the source searches with the target model, with one progress bar."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("passages"))
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"re-embedding to {state['model']}", total=state["total"])
        while True:
            progress.update(task, total=state["total"], completed=state["done"])
            if state["status"] != "running":
                break
            time.sleep(poll_interval)
            state = _json(client.get(path))
    console.print(f"[green]switched[/green]: search now uses {state['active_model']}")
