"""The blob store a deployment's settings choose (`blob_store`), built with what it needs."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock
from backburner.files.blobs.base import BlobStore, StoreName
from backburner.files.blobs.database import DatabaseBlobStore
from backburner.files.blobs.local import LocalBlobStore
from backburner.logs import log_event
from backburner.settings import Settings

log = logging.getLogger(__name__)


def build_blob_store(
    settings: Settings, engine: AsyncEngine, clock: Clock, *, name: StoreName | None = None
) -> BlobStore:
    """The store named by `name`, by default the configured one (`effective_blob_store`)."""
    chosen = name or settings.effective_blob_store
    if chosen == "database":
        return DatabaseBlobStore(engine, clock)
    if chosen == "s3":
        from backburner.files.blobs.s3 import S3BlobStore  # its SDK is imported only when chosen

        if settings.s3_bucket is None:
            raise ValueError("the s3 blob store needs s3_bucket")
        secret = settings.s3_secret_access_key
        return S3BlobStore(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=str(settings.s3_endpoint_url) if settings.s3_endpoint_url else None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
    if chosen == "memory":
        from backburner.files.blobs.memory import InMemoryBlobStore

        return InMemoryBlobStore(clock)
    return LocalBlobStore(settings.blob_dir)


def warn_about_sharing(settings: Settings) -> None:
    """A local store on PostgreSQL works only if every instance mounts the same directory."""
    if settings.effective_blob_store == "local" and settings.is_postgres:
        log_event(
            log,
            logging.WARNING,
            "blobs.local_on_postgres",
            blob_dir=str(settings.blob_dir.resolve()),
            detail="blob_store is local on PostgreSQL: every instance must mount this same directory, "
            "or files uploaded through one instance fail on the others; "
            "blob_store=database or s3 needs no shared directory",
        )
