"""`backburner keys create|list|revoke`: API keys, managed directly in the configured database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.auth import store
from backburner.cli_common import ConfigOption, ProfileOption, load_or_exit
from backburner.clock import utcnow
from backburner.db import migrate
from backburner.db.engine import create_engine

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
T = TypeVar("T")


def _with_engine(
    config: ConfigOption, profile: ProfileOption, work: Callable[[AsyncEngine], Awaitable[T]]
) -> T:
    loaded = load_or_exit(config, profile)

    async def run() -> T:
        engine = create_engine(loaded.settings)
        try:
            await migrate.upgrade(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@keys_app.command("create")
def create(
    org: Annotated[str, typer.Option("--org", help="Organization name; created if new.")],
    admin: Annotated[
        bool, typer.Option("--admin", help="May use the /api/admin routes, for its organization.")
    ] = False,
    deployment_admin: Annotated[
        bool,
        typer.Option(
            "--deployment-admin",
            help="An admin key that may also act on the whole deployment (pause jobs, see every "
            "organization's counts).",
        ),
    ] = False,
    name: Annotated[str, typer.Option("--name", help="A label to recognise the key by.")] = "",
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    org = org.strip()
    if not org or len(org) > 200:
        typer.echo("--org must be a non-empty name of at most 200 characters", err=True)
        raise typer.Exit(2)
    info, token = _with_engine(
        config,
        profile,
        lambda engine: store.create_key(
            engine,
            organization=org,
            name=name or org,
            is_admin=admin,
            is_deployment_admin=deployment_admin,
            now=utcnow(),
        ),
    )
    typer.echo(token)
    role = " (deployment admin)" if info.is_deployment_admin else " (admin)" if info.is_admin else ""
    typer.echo(
        f"key {info.id} for organization {info.organization!r}{role}; this is the only time the key is shown",
        err=True,
    )


@keys_app.command("list")
def list_(config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """List keys (never their secrets)."""
    keys = _with_engine(config, profile, store.list_keys)
    table = Table(title="API keys")
    for column in ("id", "organization", "name", "role", "created", "revoked"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.id,
            key.organization,
            key.name,
            "deployment admin" if key.is_deployment_admin else "admin" if key.is_admin else "member",
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id shown by `keys list`.")],
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    try:
        _with_engine(config, profile, lambda engine: store.revoke_key(engine, key_id, utcnow()))
    except store.UnknownKey as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked {key_id}")
