"""Options and helpers shared by every `backburner` sub-command."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from backburner.listen import PortUnavailable, bind
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


def conventional_usage(command: Any) -> Any:
    """Usage lines as in most tools (`submit [OPTIONS] FILE`), not Typer's `{file}`.

    Typer writes a required argument's name in braces and lowercase; this gives every argument
    of `command` and its sub-commands the usual form: `NAME`, `[NAME]` when optional, `NAME...`
    when it takes several.
    """
    # Duck-typed: Typer ships its own copy of Click, whose classes are not `click`'s.
    for param in command.params:
        if getattr(param, "param_type_name", None) == "argument":
            name = (param.name or "arg").upper()
            shown = name if param.required else f"[{name}]"
            usage = shown + ("..." if param.nargs != 1 else "")
            param.make_metavar = lambda *_a, _usage=usage, **_k: _usage
    for sub in getattr(command, "commands", {}).values():
        conventional_usage(sub)
    return command


def bind_or_exit(host: str, port: int, *, how_to_change: str) -> socket.socket:
    """A listening socket, or exit 2 naming the port and how to choose another."""
    try:
        return bind(host, port, how_to_change=how_to_change)
    except PortUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None


def load_or_exit(config: Path | None, profile: str | None, **flags: Any) -> LoadedSettings:
    """Load settings; on any problem print every message and exit with status 2, no traceback."""
    try:
        return load_settings(flags=flags, config_path=config, profile=profile)
    except SettingsError as exc:
        typer.echo("Invalid configuration:", err=True)
        for problem in exc.problems:
            typer.echo(f"  - {problem}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None
