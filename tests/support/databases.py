"""Fresh databases for tests: a migrated template made once, copied for every test.

PostgreSQL copies with `CREATE DATABASE ... TEMPLATE ...` (fast, and the migrations run once);
SQLite copies the template file.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import asyncpg

from backburner.db import migrate
from backburner.db.engine import create_sqlite_engine
from backburner.settings import async_database_url

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_BASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/"


async def _pg_admin(*statements: str) -> None:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"PostgreSQL is required by the tests and does not answer at {PG_ADMIN_DSN}: {exc}. "
            "Run `make services` to start it."
        ) from exc
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class PostgresDatabases:
    def __init__(self) -> None:
        self.template = f"bb_template_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []

    def setup(self) -> None:
        asyncio.run(self._setup())

    async def _setup(self) -> None:
        await _pg_admin(f'CREATE DATABASE "{self.template}"')
        engine = create_postgres_engine(PG_BASE_URL + self.template)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    def new(self) -> str:
        name = f"bb_t_{uuid.uuid4().hex[:12]}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.append(name)
        return PG_BASE_URL + name

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def teardown(self) -> None:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))


class SqliteDatabases:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.template = directory / "template.db"

    def setup(self) -> None:
        async def run() -> None:
            engine = create_sqlite_engine(async_database_url(f"sqlite:///{self.template}"))
            try:
                await migrate.upgrade(engine)
            finally:
                await engine.dispose()

        asyncio.run(run())

    def new(self, directory: Path) -> str:
        target = directory / "backburner.db"
        shutil.copyfile(self.template, target)
        return f"sqlite+aiosqlite:///{target}"


def create_postgres_engine(url: str):  # type: ignore[no-untyped-def]
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine(url, pool_size=5, max_overflow=5)
