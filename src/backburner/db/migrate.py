"""Alembic migrations, run programmatically at start-up and by `backburner db upgrade`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.db.transactions import reading

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Arbitrary constant: concurrent instances starting on PostgreSQL migrate one at a time.
MIGRATION_LOCK_KEY = 0x6262_6D69_6772


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        await conn.run_sync(_upgrade_sync, revision)


def _upgrade_sync(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def current_revisions(engine: AsyncEngine) -> set[str]:
    async with reading(engine) as conn:
        return await conn.run_sync(lambda c: set(MigrationContext.configure(c).get_current_heads()))


async def is_current(engine: AsyncEngine) -> bool:
    return await current_revisions(engine) == head_revisions()
