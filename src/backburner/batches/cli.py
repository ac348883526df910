"""`backburner batches ...`: submit and inspect LLM batches on a running server over HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from backburner.batches.validation import (
    SubmissionError,
    any_target,
    check_header,
    check_requests,
    parse_jsonl_requests,
)
from backburner.cli_common import DEFAULT_SERVER_URL, ApiKeyOption, UrlOption
from backburner.cli_http import (
    EXIT_BAD_INPUT,
    EXIT_SERVER_ERROR,
    ServerError,
    check,
    client,
    fail,
    request,
    unreachable,
)
from backburner.cli_output import print_table

batches_app = typer.Typer(
    help="Submit LLM batches and read their status and results from a running server.", no_args_is_help=True
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


@batches_app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(help="JSONL file: one {custom_id, params} object per line.")],
    provider: Annotated[
        str,
        typer.Option(
            "--provider", help="`anthropic`, `openai` or a provider named in the server's settings."
        ),
    ],
    model: Annotated[str, typer.Option("--model", help="Model for requests whose params name none.")],
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Repeat-safe key: a resubmission returns the batch."),
    ] = None,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Check FILE.jsonl locally (nothing is sent if it is invalid), then submit it.

    A file larger than one provider batch is split into parts by the server."""
    try:
        with file.open("rb") as handle:
            target, checked_model = check_header({"provider": provider, "model": model}, any_target)

            def again() -> Any:
                handle.seek(0)
                return parse_jsonl_requests(handle)

            check_requests(target, checked_model, again)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    except SubmissionError as exc:
        fail(f"{file}: {exc.message}; nothing was sent", EXIT_BAD_INPUT)
    headers = {"content-type": "application/jsonl"}
    if idempotency_key:
        headers["idempotency-key"] = idempotency_key
    with file.open("rb") as body:
        _print_json(
            request(
                url,
                api_key,
                "POST",
                "/v1/batches",
                params={"provider": provider, "model": model},
                content=body,
                headers=headers,
            )
        )


@batches_app.command("list")
def list_batches(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most batches to show.")] = 50,
    status: Annotated[str | None, typer.Option("--status", help="Only batches in this status.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """List batches, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    page = request(url, api_key, "GET", "/v1/batches", params=params)
    if as_json:
        _print_json(page)
        return
    columns = ("id", "provider", "status", "requests", "succeeded", "errored", "missing", "created")
    rows = [
        (
            batch["id"],
            batch["provider"],
            batch["status"],
            batch["request_count"],
            batch["counts"]["succeeded"],
            batch["counts"]["errored"],
            batch["counts"]["missing"],
            batch["created_at"],
        )
        for batch in page["data"]
    ]
    print_table("LLM batches", columns, rows)


@batches_app.command("show")
def show(batch_id: str, url: UrlOption = DEFAULT_SERVER_URL, api_key: ApiKeyOption = None) -> None:
    """Print one batch as JSON."""
    _print_json(request(url, api_key, "GET", f"/v1/batches/{batch_id}"))


@batches_app.command("cancel")
def cancel(batch_id: str, url: UrlOption = DEFAULT_SERVER_URL, api_key: ApiKeyOption = None) -> None:
    """Ask the provider to cancel a running batch (its partial results are kept)."""
    _print_json(request(url, api_key, "POST", f"/v1/batches/{batch_id}/cancel"))


@batches_app.command("resubmit")
def resubmit(
    batch_id: str,
    items: Annotated[
        str,
        typer.Option(
            "--items", help="`expired`, `errored` or `unfinished` (every item that did not succeed)."
        ),
    ] = "unfinished",
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Repeat-safe key: a repeat returns the batch.")
    ] = None,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Submit a new batch, linked to BATCH_ID, of the requests of its items that did not succeed."""
    if items not in ("expired", "errored", "unfinished"):
        fail(f"--items must be expired, errored or unfinished, not {items!r}", EXIT_BAD_INPUT)
    headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
    _print_json(
        request(
            url, api_key, "POST", f"/v1/batches/{batch_id}/resubmit", params={"items": items}, headers=headers
        )
    )


@batches_app.command("results")
def results(
    batch_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the JSONL here instead of stdout.")
    ] = None,
    url: UrlOption = DEFAULT_SERVER_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Stream the item results as JSONL: {custom_id, status, result, error} per line."""
    try:
        with (
            client(url, api_key) as session,
            session.stream("GET", f"/v1/batches/{batch_id}/results") as response,
        ):
            if not response.is_success:
                response.read()
                check(response)  # raises
            sink = output.open("wb") if output else sys.stdout.buffer
            try:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
            finally:
                if output:
                    sink.close()
                else:
                    sink.flush()
    except httpx.HTTPError as exc:
        fail(unreachable(url, exc), EXIT_SERVER_ERROR)
    except ServerError as exc:
        fail(str(exc), exc.exit_code)
