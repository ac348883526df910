"""Options and helpers shared by every `backburner` sub-command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from backburner.settings_loader import LoadedSettings, SettingsError, load_settings

EXIT_BAD_CONFIG = 2
DEFAULT_SERVER_URL = "http://127.0.0.1:8283"

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML settings file (also BACKBURNER_CONFIG).", show_default=False),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile", help="`development` or `production` (also BACKBURNER_PROFILE).", show_default=False
    ),
]
UrlOption = Annotated[
    str, typer.Option("--url", envvar="BACKBURNER_URL", help="Address of a running Backburner server.")
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="BACKBURNER_API_KEY", help="API key for the server.", show_default=False
    ),
]


def load_or_exit(config: Path | None, profile: str | None, **flags: Any) -> LoadedSettings:
    """Load settings; on any problem print every message and exit with status 2, no traceback."""
    try:
        return load_settings(flags=flags, config_path=config, profile=profile)
    except SettingsError as exc:
        typer.echo("Invalid configuration:", err=True)
        for problem in exc.problems:
            typer.echo(f"  - {problem}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None


# --- talking to a running server -----------------------------------------------------------------

EXIT_BAD_INPUT = 2
EXIT_SERVER_ERROR = 1
CLIENT_TIMEOUT_S = 60.0
# Answers that refuse the caller's input: the command exits 2, as for input refused locally.
INPUT_REFUSED = frozenset({400, 404, 409, 413, 422})


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def error_detail(response: httpx.Response) -> str:
    """The server's `detail`, with each invalid field of a 422 as `field: message`."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text
    if isinstance(detail, list):
        parts = []
        for error in detail:
            if isinstance(error, dict):
                loc = [str(p) for p in error.get("loc", []) if p not in ("body", "query", "path")]
                parts.append(f"{'.'.join(loc) or 'input'}: {error.get('msg', '')}")
        return "; ".join(parts) or response.text
    return str(detail)


def call_server(url: str, api_key: str | None, method: str, path: str, **kwargs: Any) -> Any:
    """One request to the server; its JSON answer, or exit 2 (input refused) or 1 (anything else)."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=CLIENT_TIMEOUT_S) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the server at {url}: {exc}", EXIT_SERVER_ERROR)
    if response.is_success:
        return response.json() if response.content else None
    code = EXIT_BAD_INPUT if response.status_code in INPUT_REFUSED else EXIT_SERVER_ERROR
    fail(f"the server answered {response.status_code}: {error_detail(response)}", code)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))
