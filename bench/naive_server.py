"""The straightforward file-ingestion server that `bench/files.py` measures Backburner against.

It speaks the same HTTP routes the benchmark's client uses and does the same work with the same
parts and settings (Backburner's `BACKBURNER_` environment, its parsers, chunker, embedders,
batch size and database schema), the plain way: an upload is stored and recorded, and one task
processes the files one at a time, in upload order, one embedding request at a time, each batch
of passages written in its own transaction.

    .venv/bin/python bench/naive_server.py --port P   (settings from the environment)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import utcnow
from backburner.db import migrate
from backburner.db.engine import create_engine
from backburner.files.embedding.cache import CachedEmbedder, MemoryEmbeddingCache
from backburner.files.embedding.embedders import Embedder, HashEmbedder, build_embedder
from backburner.files.embedding.strategy import embedder_options
from backburner.files.embedding.vectors import vector_to_bytes
from backburner.files.pipeline.budget import FileBudget
from backburner.files.pipeline.parse_job import parse_and_chunk
from backburner.files.states import FileStatus
from backburner.files.tables import files, passages, sources
from backburner.ids import new_id
from backburner.settings import Settings
from backburner.settings_loader import load_settings

ORG = "org-default"
COPY_CHUNK_BYTES = 1024 * 1024


def build_naive_embedder(settings: Settings) -> Embedder:
    """The configured embedder, as Backburner builds it (remote ones behind the same cache)."""
    embedder = build_embedder(settings.embedder, **embedder_options(settings))
    return (
        embedder if isinstance(embedder, HashEmbedder) else CachedEmbedder(embedder, MemoryEmbeddingCache())
    )


class NaivePipeline:
    def __init__(self, settings: Settings, engine: AsyncEngine, embedder: Embedder) -> None:
        self.settings = settings
        self.engine = engine
        self.embedder = embedder
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            file_id = await self.queue.get()
            try:
                await self.process(file_id)
            except Exception as exc:
                await self.set_status(file_id, FileStatus.ERROR, error_message=str(exc)[:500])

    async def set_status(self, file_id: str, status: FileStatus, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(files)
                .where(files.c.id == file_id)
                .values(status=status.value, updated_at=utcnow(), **values)
            )

    async def process(self, file_id: str) -> None:
        async with self.engine.connect() as conn:
            file = (await conn.execute(select(files).where(files.c.id == file_id))).one()
        await self.set_status(file_id, FileStatus.PARSING)
        path = self.settings.blob_dir / file.blob_key
        document = await asyncio.to_thread(
            parse_and_chunk,
            str(path),
            file.file_name,
            file.content_type,
            self.settings.chunk_size_chars,
            self.settings.chunk_overlap_chars,
            FileBudget.from_settings(self.settings).parse,
        )
        await self.set_status(
            file_id,
            FileStatus.EMBEDDING,
            total_chunks=len(document.texts),
            embedding_model=self.embedder.model,
        )
        size = self.settings.embedding_batch_size
        for start in range(0, len(document.texts), size):
            batch = document.texts[start : start + size]
            vectors = await self.embedder.embed(batch)
            now = utcnow()
            rows = [
                {
                    "organization_id": ORG,
                    "source_id": file.source_id,
                    "file_id": file_id,
                    "chunk_index": start + offset,
                    "text": text,
                    "embedding": vector_to_bytes(vector),
                    "created_at": now,
                }
                for offset, (text, vector) in enumerate(zip(batch, vectors, strict=True))
            ]
            async with self.engine.begin() as conn:
                await conn.execute(insert(passages), rows)
                await conn.execute(
                    update(files)
                    .where(files.c.id == file_id)
                    .values(chunks_embedded=files.c.chunks_embedded + len(rows), updated_at=now)
                )
        await self.set_status(file_id, FileStatus.COMPLETED, finished_at=utcnow())


def create_naive_app(settings: Settings) -> FastAPI:
    engine = create_engine(settings)
    pipeline = NaivePipeline(settings, engine, build_naive_embedder(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate.upgrade(engine)
        task = asyncio.create_task(pipeline.run())
        yield
        task.cancel()
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/sources", status_code=201)
    async def create_source(body: dict[str, Any]) -> dict[str, str]:
        source_id = new_id("source")
        async with engine.begin() as conn:
            await conn.execute(
                insert(sources).values(
                    id=source_id, organization_id=ORG, name=body["name"], created_at=utcnow()
                )
            )
        return {"id": source_id}

    @app.post("/v1/sources/{source_id}/files", status_code=201)
    async def upload(source_id: str, request: Request) -> dict[str, str]:
        form = await request.form()
        upload = form["file"]
        assert not isinstance(upload, str)
        file_id = new_id("file")
        key = f"files/{file_id}"
        target = settings.blob_dir / key
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with target.open("wb") as out:
            while chunk := await upload.read(COPY_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        now = utcnow()
        async with engine.begin() as conn:
            await conn.execute(
                insert(files).values(
                    id=file_id,
                    organization_id=ORG,
                    source_id=source_id,
                    file_name=upload.filename or "upload",
                    content_type=upload.content_type,
                    size_bytes=size,
                    sha256=digest.hexdigest(),
                    blob_key=key,
                    status=FileStatus.PENDING.value,
                    attempts=0,
                    chunks_embedded=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        pipeline.queue.put_nowait(file_id)
        return {"id": file_id}

    @app.get("/v1/sources/{source_id}/files")
    async def list_files(source_id: str, limit: int = 100, after: str | None = None) -> dict[str, Any]:
        query = select(files.c.id, files.c.status).where(files.c.source_id == source_id)
        if after is not None:
            query = query.where(files.c.id > after)
        async with engine.connect() as conn:
            rows = (await conn.execute(query.order_by(files.c.id).limit(limit))).all()
        page = [{"id": row.id, "status": row.status} for row in rows]
        return {"files": page, "next_cursor": page[-1]["id"] if len(page) == limit else None}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import os

    settings = load_settings(environ=dict(os.environ)).settings
    shutil.rmtree(settings.blob_dir, ignore_errors=True)
    uvicorn.run(create_naive_app(settings), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
