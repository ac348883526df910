"""The `backburner` command line."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from backburner import __version__
from backburner.auth.cli import keys_app
from backburner.batches.cli import batches_app
from backburner.cli_common import (
    EXIT_BAD_CONFIG,
    ConfigOption,
    ProfileOption,
    bind_or_exit,
    conventional_usage,
    load_or_exit,
)
from backburner.cli_output import print_table
from backburner.emulator.cli import emulator
from backburner.files.blobs.cli import blobs_app
from backburner.files.cli import files_app
from backburner.logs import configure_logging, describe_error
from backburner.scheduler.cli import scheduler_app
from backburner.schedules.cli import schedules_app
from backburner.settings_loader import LoadedSettings

app = typer.Typer(
    name="backburner",
    help="Background processing for LLM agent servers: scheduler, LLM batches, files, watchdog.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and check the effective configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(batches_app, name="batches")
app.command("emulator")(emulator)
app.add_typer(files_app, name="files")
app.add_typer(blobs_app, name="blobs")
app.add_typer(scheduler_app, name="scheduler")
app.add_typer(schedules_app, name="schedules")

PORT_HINT = "choose another with --port or BACKBURNER_PORT (e.g. BACKBURNER_PORT=8284 make run)"
HostOption = Annotated[str | None, typer.Option("--host", help="Listen address.", show_default=False)]
PortOption = Annotated[int | None, typer.Option("--port", help="Listen port.", show_default=False)]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"backburner {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Backburner runs the work of an agent server that happens when no request waits for it."""


@app.command()
def serve(
    host: HostOption = None,
    port: PortOption = None,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Run the API and the background work (scheduler, pollers, file workers)."""
    import uvicorn

    from backburner.api.app import create_app
    from backburner.api.server import GracefulServer

    loaded = load_or_exit(config, profile, host=host, port=port)
    settings = loaded.settings
    configure_logging(settings.log_level, settings.log_format)
    sock = bind_or_exit(settings.host, settings.port, how_to_change=PORT_HINT)
    fatal: list[str] = []

    def stop(reason: str) -> None:  # a problem that waiting will not fix: stop and say it
        fatal.append(reason)
        server.should_exit = True

    server = GracefulServer(
        uvicorn.Config(
            create_app(loaded, on_fatal=stop),
            host=settings.host,
            port=settings.port,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_seconds)),
            access_log=False,
        )
    )
    server.run(sockets=[sock])
    if fatal:
        typer.echo(f"error: {fatal[0]}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG)
    if not server.started:
        raise typer.Exit(1)


@app.command()
def worker(config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """Run the background work only (no API): scheduler when leading, file workers always."""
    loaded = load_or_exit(config, profile)
    configure_logging(loaded.settings.log_level, loaded.settings.log_format)
    asyncio.run(_run_worker(loaded))


async def _run_worker(loaded: LoadedSettings) -> None:
    from backburner.runtime import Runtime, run_as_process

    stop = asyncio.Event()
    fatal: list[str] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def stop_for(reason: str) -> None:
        fatal.append(reason)
        stop.set()

    async with run_as_process(Runtime(loaded, role="worker", on_fatal=stop_for)):
        await stop.wait()
    if fatal:
        typer.echo(f"error: {fatal[0]}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG)


@app.command()
def demo(
    port: Annotated[int, typer.Option("--port", help="Port of the demo's server.")] = 8290,
    emulator_port: Annotated[
        int, typer.Option("--emulator-port", help="Port of the provider emulator.")
    ] = 8766,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Keep the demo's database and logs here (default: a temporary one)."),
    ] = None,
) -> None:
    """Start the emulator and a server, submit a batch per provider, upload and search sample files."""
    from backburner.demo.run import DemoFailed, run_demo

    # Ctrl-C stops the demo even where its parent ignored SIGINT (a background job of a script
    # does): Python then leaves SIGINT ignored, and the demo asks for Ctrl-C. SIGTERM alike.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        run_demo("127.0.0.1", port, emulator_port, data_dir)
    except DemoFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG if "already in use" in str(exc) else 1) from None
    except KeyboardInterrupt:
        typer.echo("Stopped: the server and the emulator have exited.")


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    profile: ProfileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print every effective setting and where its value came from (secrets masked)."""
    loaded = load_or_exit(config, profile)
    described = loaded.describe()
    if as_json:
        typer.echo(json.dumps({"settings": described}, indent=2, default=str))
        return
    rows = [
        (name, json.dumps(entry["value"], default=str), entry["source"]) for name, entry in described.items()
    ]
    print_table("Backburner settings", ("setting", "value", "source"), rows, keep_whole=("setting",))


@config_app.command("validate")
def config_validate(config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """Check the configuration: exit 0 when valid, 2 with every problem named when not."""
    loaded = load_or_exit(config, profile)
    where = f" ({loaded.config_path})" if loaded.config_path else ""
    typer.echo(f"configuration is valid{where}")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """Apply every pending migration to the configured database."""
    from backburner.db import migrate
    from backburner.db.engine import create_engine

    loaded = load_or_exit(config, profile)

    async def run() -> set[str]:
        engine = create_engine(loaded.settings)
        try:
            await migrate.upgrade(engine)
            return await migrate.current_revisions(engine)
        finally:
            await engine.dispose()

    try:
        revisions = asyncio.run(run())
    except Exception as exc:
        typer.echo(f"Migration failed: {describe_error(exc)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"database at {', '.join(sorted(revisions))}")


def main() -> None:
    try:
        conventional_usage(typer.main.get_command(app))(prog_name="backburner")
    except KeyboardInterrupt:
        sys.exit(130)
