"""A blob as a local file, for code that reads paths (parsers in pool processes), on any instance.

The local store hands out its own file. Other stores stream the blob into a temporary copy in
`scratch_dir`, removed afterwards. A blob that cannot be found, or a store that does not answer,
is tried again a few times over a few seconds (a store just written through another host, a
replica behind, a network blip) before the error is raised, naming the store and the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backburner.files.blobs.base import BlobNotFound, BlobStore, BlobStoreUnavailable
from backburner.files.blobs.local import close_in_thread, open_for_writing, remove_files_older_than

COPY_PREFIX = "backburner-blob-"


@dataclass(frozen=True)
class ReadRetry:
    attempts: int = 5
    first_delay_s: float = 0.25  # doubling: 0.25 + 0.5 + 1 + 2 = 3.75 s in all

    def delays(self) -> list[float]:
        """The waits before the second and later attempts."""
        return [self.first_delay_s * 2**n for n in range(self.attempts - 1)]


DEFAULT_READ_RETRY = ReadRetry()


class BlobUnreadable(BlobNotFound):
    """Still missing after every attempt; the message names the store, the key and the tries."""

    def __init__(self, store: BlobStore, key: str, retry: ReadRetry) -> None:
        super().__init__(
            key,
            store.name,
            detail=f"{store.describe(key)} was not found after {retry.attempts} attempts "
            f"over {sum(retry.delays()):g} s",
        )


class BlobStoreDown(BlobStoreUnavailable):
    """The store still failed after every attempt."""


@contextlib.asynccontextmanager
async def local_path(
    store: BlobStore,
    key: str,
    scratch_dir: Path | None = None,
    *,
    retry: ReadRetry = DEFAULT_READ_RETRY,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[Path]:
    """A path holding the blob: the store's own file, or a temporary copy removed afterwards."""
    own = store.path_for(key)
    if own is not None:
        await _with_retries(store, key, retry, sleep, lambda: _require_file(store, key, own))
        yield own
        return
    if scratch_dir is not None:
        await asyncio.to_thread(scratch_dir.mkdir, parents=True, exist_ok=True)
    handle, name = await asyncio.to_thread(tempfile.mkstemp, prefix=COPY_PREFIX, dir=scratch_dir)
    await asyncio.to_thread(os.close, handle)
    copy = Path(name)
    try:
        await _with_retries(store, key, retry, sleep, lambda: _copy(store, key, copy))
        yield copy
    finally:
        await asyncio.to_thread(copy.unlink, True)


async def remove_stale_copies(scratch_dir: Path, older_than: datetime) -> int:
    """Remove copies left in `scratch_dir` by a process that died while using them."""
    return await asyncio.to_thread(remove_files_older_than, scratch_dir, older_than.timestamp(), COPY_PREFIX)


async def _with_retries(
    store: BlobStore,
    key: str,
    retry: ReadRetry,
    sleep: Callable[[float], Awaitable[None]],
    attempt: Callable[[], Awaitable[None]],
) -> None:
    delays = retry.delays()
    while True:
        try:
            await attempt()
            return
        except (BlobNotFound, BlobStoreUnavailable) as exc:
            if not delays:
                if isinstance(exc, BlobNotFound):
                    raise BlobUnreadable(store, key, retry) from exc
                raise BlobStoreDown(f"{store.describe(key)} could not be read: {exc}") from exc
        await sleep(delays.pop(0))


async def _require_file(store: BlobStore, key: str, path: Path) -> None:
    if not await asyncio.to_thread(path.is_file):
        raise BlobNotFound(key, store.name)


async def _copy(store: BlobStore, key: str, target: Path) -> None:
    out = await open_for_writing(target)  # truncates what a failed attempt wrote
    try:
        async for chunk in store.open(key):
            await asyncio.to_thread(out.write, chunk)
    finally:
        await close_in_thread(out)
