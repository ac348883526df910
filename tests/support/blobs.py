"""Every blob store for the behaviour suite, each with ways to look behind it: what a crash
leaves, what is half written, and content changed without the store knowing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import SystemClock
from backburner.files.blobs import BlobStore, DatabaseBlobStore, InMemoryBlobStore, LocalBlobStore
from backburner.files.blobs.s3 import S3BlobStore
from backburner.files.blobs.tables import blob_chunks, blobs
from tests.support.s3server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server

STORES = ("local", "memory", "database", "s3")
S3_PREFIX = "bb"


@dataclass
class StoreKit:
    store: BlobStore
    engine: AsyncEngine
    tmp_path: Path
    s3_server: S3Server | None = None
    bucket: str | None = None

    @property
    def name(self) -> str:
        return self.store.name

    async def leftovers(self) -> int:
        """Unfinished writes in the store: temporary files, pending rows (and any chunk of no
        blob row), unfinished multipart uploads."""
        store = self.store
        if isinstance(store, LocalBlobStore):
            temp = store.root / ".tmp"
            return len(list(temp.iterdir())) if temp.exists() else 0
        if isinstance(store, DatabaseBlobStore):
            async with self.engine.connect() as conn:
                pending = (
                    await conn.execute(select(func.count()).select_from(blobs).where(blobs.c.key.is_(None)))
                ).scalar_one()
                stray = (
                    await conn.execute(
                        select(func.count())
                        .select_from(blob_chunks)
                        .where(blob_chunks.c.blob_id.not_in(select(blobs.c.id)))
                    )
                ).scalar_one()
            return int(pending) + int(stray)
        if isinstance(store, S3BlobStore):
            assert self.s3_server is not None
            found = self.s3_server.client().list_multipart_uploads(Bucket=self.bucket)
            return len(found.get("Uploads", []))
        return 0

    async def leave_stale_upload(self) -> None:
        """What a request that crashed mid-upload leaves behind."""
        store = self.store
        if isinstance(store, LocalBlobStore):
            (store.root / ".tmp").mkdir(parents=True, exist_ok=True)
            (store.root / ".tmp" / f"{uuid.uuid4().hex}.part").write_bytes(b"half an upload")
        elif isinstance(store, DatabaseBlobStore):
            blob_id = uuid.uuid4().hex
            async with self.engine.begin() as conn:
                await conn.execute(
                    blobs.insert().values(
                        id=blob_id, key=None, size_bytes=0, chunk_count=0, started_at=SystemClock().now()
                    )
                )
                await conn.execute(blob_chunks.insert().values(blob_id=blob_id, seq=0, data=b"half"))
        elif isinstance(store, S3BlobStore):
            assert self.s3_server is not None
            client = self.s3_server.client()
            started = client.create_multipart_upload(Bucket=self.bucket, Key=f"{S3_PREFIX}/files/crashed")
            client.upload_part(
                Bucket=self.bucket,
                Key=f"{S3_PREFIX}/files/crashed",
                UploadId=started["UploadId"],
                PartNumber=1,
                Body=b"half an upload",
            )

    async def corrupt(self, key: str, data: bytes) -> None:
        """Change a blob's content without the store's knowledge (bit rot, a bad copy)."""
        store = self.store
        if isinstance(store, LocalBlobStore):
            store.path_for(key).write_bytes(data)
        elif isinstance(store, DatabaseBlobStore):
            async with self.engine.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE blob_chunks SET data = :data WHERE seq = 0 AND blob_id = "
                        "(SELECT id FROM blobs WHERE key = :key)"
                    ),
                    {"data": data, "key": key},
                )
        elif isinstance(store, S3BlobStore):
            assert self.s3_server is not None
            self.s3_server.client().put_object(Bucket=self.bucket, Key=f"{S3_PREFIX}/{key}", Body=data)
        else:
            await store.write_bytes(key, data)


def s3_store(server: S3Server, bucket: str, **overrides: object) -> S3BlobStore:
    values: dict[str, object] = {
        "bucket": bucket,
        "prefix": S3_PREFIX,
        "endpoint_url": server.endpoint_url,
        "region": REGION,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
    }
    values.update(overrides)
    return S3BlobStore(**values)  # type: ignore[arg-type]


async def make_kit(
    name: str, engine: AsyncEngine, tmp_path: Path, s3_server: S3Server | None
) -> AsyncIterator[StoreKit]:
    """The store called `name`, closed afterwards."""
    kit: StoreKit
    if name == "local":
        kit = StoreKit(LocalBlobStore(tmp_path / "blobs", fsync=False), engine, tmp_path)
    elif name == "memory":
        kit = StoreKit(InMemoryBlobStore(), engine, tmp_path)
    elif name == "database":
        kit = StoreKit(DatabaseBlobStore(engine, SystemClock()), engine, tmp_path)
    else:
        assert s3_server is not None
        bucket = s3_server.new_bucket()
        kit = StoreKit(s3_store(s3_server, bucket), engine, tmp_path, s3_server, bucket)
    try:
        yield kit
    finally:
        await kit.store.aclose()
