"""`backburner blobs migrate|verify`: file contents moved between stores and checked, directly
against the configured database and stores (no server needed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import StrEnum
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.cli_common import EXIT_BAD_CONFIG, ConfigOption, ProfileOption, load_or_exit
from backburner.cli_output import print_table
from backburner.clock import SystemClock
from backburner.db import migrate as schema
from backburner.db.engine import create_engine
from backburner.db.errors import permanent_problem
from backburner.files.blobs.base import BlobStore, BlobStoreUnavailable, StoreName
from backburner.files.blobs.factory import build_blob_store
from backburner.files.blobs.migration import DEFAULT_CONCURRENCY, MigrationReport, migrate_blobs
from backburner.files.blobs.references import BlobReferences
from backburner.files.blobs.verification import BlobProblem, ProgressCallback, VerifyReport, verify_blobs
from backburner.logs import describe_error
from backburner.settings import Settings

EXIT_PROBLEMS = 1
T = TypeVar("T")

blobs_app = typer.Typer(
    help="Move file contents between blob stores and check them (runs against the configured database).",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class Target(StrEnum):
    database = "database"
    s3 = "s3"


class BadInput(Exception):
    """A problem with what was asked: exit status 2."""


@blobs_app.command("migrate")
def migrate(
    to: Annotated[Target, typer.Option("--to", help="The store to copy every file's blob to.")],
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="Blobs copied at once.")
    ] = DEFAULT_CONCURRENCY,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Copy every file's blob from the configured store to another, checking each SHA-256.

    Run it again after an interruption: blobs already copied are skipped. Then set `blob_store`
    to the new store on every instance.
    """
    settings = load_or_exit(config, profile).settings
    target: StoreName = to.value
    if target == settings.effective_blob_store:
        _exit_bad_input(f"the configured blob store is {target} already: there is nothing to migrate")
    if target == "s3" and settings.s3_bucket is None:
        _exit_bad_input("--to s3 needs s3_bucket (and the other s3_ settings) in the configuration")

    async def work(engine: AsyncEngine, references: BlobReferences, total_bytes: int) -> MigrationReport:
        clock = SystemClock()
        async with (
            build_blob_store(settings, engine, clock) as source,
            build_blob_store(settings, engine, clock, name=target) as destination,
        ):
            await _require_working(source, destination)
            with _progress(total_bytes, f"{source.name} → {destination.name}", as_json) as advance:
                return await migrate_blobs(source, destination, references, advance, concurrency=concurrency)

    report = _run(settings, work)
    lines = [
        f"copied {report.copied} blobs ({report.bytes_copied} bytes) from the {report.source} store to "
        f"the {report.target} store; {report.skipped} were there already; {len(report.problems)} not copied"
    ]
    if not report.problems:
        lines.append(f"set blob_store={report.target} on every instance to use it")
    _finish(report, report.problems, lines, as_json)


@blobs_app.command("verify")
def verify(as_json: JsonOption = False, config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """Read every file's blob from the configured store and check it against its SHA-256.

    Exit status 1 when a blob is missing or its content no longer matches.
    """
    settings = load_or_exit(config, profile).settings

    async def work(engine: AsyncEngine, references: BlobReferences, total_bytes: int) -> VerifyReport:
        async with build_blob_store(settings, engine, SystemClock()) as store:
            await _require_working(store)
            with _progress(total_bytes, f"verifying {store.name}", as_json) as advance:
                return await verify_blobs(store, references, advance)

    report: VerifyReport = _run(settings, work)
    summary = (
        f"checked {report.checked} blobs ({report.bytes_read} bytes) in the {report.store} store: "
        f"{len(report.problems)} missing or corrupt"
    )
    _finish(report, report.problems, [summary], as_json)


def _run(settings: Settings, work: Callable[[AsyncEngine, BlobReferences, int], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(settings)
        try:
            await schema.upgrade(engine)
            references = BlobReferences(engine)
            _, total_bytes = await references.totals()
            return await work(engine, references, total_bytes)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except BadInput as exc:
        _exit_bad_input(str(exc))
    except BlobStoreUnavailable as exc:
        _fail(str(exc))
    except Exception as exc:
        problem = permanent_problem(exc, settings.effective_database_url)
        if problem is not None:  # a missing database, a refused login: waiting will not help
            _exit_bad_input(problem)
        _fail(describe_error(exc))


async def _require_working(*stores: BlobStore) -> None:
    for store in stores:
        problem = await store.check()
        if problem is not None:
            raise BadInput(f"the {store.name} blob store cannot be used: {problem}")


@contextmanager
def _progress(total_bytes: int, label: str, quiet: bool) -> Iterator[ProgressCallback]:
    progress = Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=quiet,
    )
    task = progress.add_task(label, total=total_bytes)
    with progress:
        yield lambda size: progress.advance(task, size)


def _finish(report: Any, problems: list[BlobProblem], lines: list[str], as_json: bool) -> None:
    """Print the report (a table of problems and `lines`, or JSON); exit 1 if there are problems."""
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
    else:
        if problems:
            print_table(
                "Blobs missing or corrupt",
                ("file", "organization", "name", "key", "problem", "detail"),
                [(p.file_id, p.organization_id, p.file_name, p.key, p.problem, p.detail) for p in problems],
                keep_whole=("file", "key"),
            )
        for line in lines:
            typer.echo(line)
    if problems:
        raise typer.Exit(EXIT_PROBLEMS)


def _exit_bad_input(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_CONFIG)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_PROBLEMS)
