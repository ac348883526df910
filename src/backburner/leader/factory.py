"""Choose the elector from the database URL: PostgreSQL advisory lock, or a file lock for SQLite."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock
from backburner.leader.config import ElectionConfig
from backburner.leader.filelock import FileElector, lock_file_path
from backburner.leader.pg_lock import asyncpg_dsn, looks_like_transaction_pooler
from backburner.leader.postgres import PostgresElector
from backburner.logs import log_event
from backburner.settings import Settings, async_database_url

log = logging.getLogger("backburner.leader")

AnyElector = PostgresElector | FileElector


def election_config(settings: Settings, instance_id: str) -> ElectionConfig:
    return ElectionConfig(
        election=settings.leader_election_name,
        instance_id=instance_id,
        lease_s=settings.leader_lease_seconds,
        mode=settings.leader_election_mode,
        retry_interval_s=float(settings.poll_lock_retry_interval_seconds),
    )


def create_elector(settings: Settings, engine: AsyncEngine, instance_id: str, clock: Clock) -> AnyElector:
    config = election_config(settings, instance_id)
    url = settings.effective_database_url
    if not settings.is_postgres:
        path = lock_file_path(url, settings.data_dir, config.election)
        return FileElector(engine=engine, path=path, config=config, clock=clock)
    if settings.leader_database_url is None and looks_like_transaction_pooler(url):
        log_event(
            log,
            logging.WARNING,
            "leader.pooler_suspected",
            detail="database_url looks like PgBouncer (port 6432 or `pgbouncer` in it); in transaction "
            "mode an advisory lock does not stay with its session: set leader_database_url to a "
            "direct PostgreSQL URL for the lock connection",
        )
    lock_url = async_database_url(settings.leader_database_url) if settings.leader_database_url else url
    return PostgresElector(engine=engine, dsn=asyncpg_dsn(lock_url), config=config, clock=clock)
