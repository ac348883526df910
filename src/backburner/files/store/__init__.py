"""The SQL of file processing, one module per responsibility; `FileStores` holds them all."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.files.store.catalog import FileCatalog
from backburner.files.store.leases import LeaseStore
from backburner.files.store.passages import PassageStore
from backburner.files.store.reembeds import ReembedStore
from backburner.files.store.sources import SourceStore
from backburner.files.store.timeouts import TimeoutStore


@dataclass(frozen=True)
class FileStores:
    sources: SourceStore
    catalog: FileCatalog
    leases: LeaseStore
    passages: PassageStore
    reembeds: ReembedStore
    timeouts: TimeoutStore

    @classmethod
    def on(cls, engine: AsyncEngine) -> FileStores:
        sources, timeouts = SourceStore(engine), TimeoutStore(engine)
        return cls(
            sources=sources,
            catalog=FileCatalog(engine, sources, timeouts),
            leases=LeaseStore(engine),
            passages=PassageStore(engine),
            reembeds=ReembedStore(engine),
            timeouts=timeouts,
        )
