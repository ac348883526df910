"""`backburner keys create|list|revoke`: API keys, managed directly in the configured database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, NoReturn, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.auth import store
from backburner.cli_common import EXIT_BAD_CONFIG, ConfigOption, ProfileOption, load_or_exit
from backburner.cli_output import print_table
from backburner.clock import utcnow
from backburner.db import migrate
from backburner.db.engine import create_engine
from backburner.db.tables import DEFAULT_ORGANIZATION_ID
from backburner.text import check_name

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
T = TypeVar("T")
MAX_NAME_CHARS = 200


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
    org: Annotated[
        str,
        typer.Option(
            "--org",
            help="Organization name or id; a new name creates an organization. What was made with "
            "auth_mode=none belongs to `default` (id org-default).",
        ),
    ],
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
    for option, value in (("--org", org), ("--name", name or org)):
        if len(value) > MAX_NAME_CHARS:
            _bad_input(f"{option} must be at most {MAX_NAME_CHARS} characters")
        try:
            check_name(value)
        except ValueError as exc:
            _bad_input(f"{option}: {exc}")
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
        f"key {info.id} for organization {info.organization!r} ({info.organization_id}){role}; "
        "this is the only time the key is shown",
        err=True,
    )
    if info.organization_created:
        typer.echo(
            f"note: {info.organization!r} is a new organization: it sees nothing of any other one's "
            "batches, sources and files. To reach what was made before keys were on, create the key "
            f"with --org default (id {DEFAULT_ORGANIZATION_ID}).",
            err=True,
        )


def _bad_input(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_CONFIG)


@keys_app.command("list")
def list_(
    config: ConfigOption = None,
    profile: ProfileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List keys (never their secrets)."""
    keys = _with_engine(config, profile, store.list_keys)
    if as_json:
        rows = [
            {
                "id": key.id,
                "organization": key.organization,
                "organization_id": key.organization_id,
                "name": key.name,
                "admin": key.is_admin,
                "deployment_admin": key.is_deployment_admin,
                "created_at": key.created_at.isoformat(),
                "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
            }
            for key in keys
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    columns = ("id", "organization", "organization id", "name", "role", "created", "revoked")
    table = [
        (
            key.id,
            key.organization,
            key.organization_id,
            key.name,
            "deployment admin" if key.is_deployment_admin else "admin" if key.is_admin else "member",
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
        for key in keys
    ]
    print_table("API keys", columns, table, keep_whole=("id", "organization id"))


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
