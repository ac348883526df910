"""A file opened or closed in a thread for a caller that was cancelled meanwhile is closed all
the same, never left to the garbage collector."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backburner.files.blobs.local import close_in_thread, open_for_writing

DEADLINE_S = 10.0


def _open_by_this_process(path: Path) -> bool:
    fds = Path("/proc/self/fd")
    return any(os.path.realpath(fds / fd) == str(path) for fd in os.listdir(fds))


async def test_a_cancelled_open_leaves_no_file_open(tmp_path: Path) -> None:
    path = tmp_path / "blob.part"
    task = asyncio.create_task(open_for_writing(path))
    await asyncio.sleep(0)  # the thread has the call
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists() or _open_by_this_process(path):
        assert time.monotonic() < deadline, "the file the thread opened is still open"
        await asyncio.sleep(0.01)


async def test_an_open_that_is_not_cancelled_returns_the_file(tmp_path: Path) -> None:
    out = await open_for_writing(tmp_path / "blob.part")
    try:
        out.write(b"x")
    finally:
        out.close()
    assert (tmp_path / "blob.part").read_bytes() == b"x"


async def test_a_cancelled_close_still_closes_on_a_busy_thread_pool(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:
        loop.set_default_executor(pool)
        release = threading.Event()
        busy = loop.run_in_executor(None, release.wait)  # the pool's one thread is taken
        handle = (tmp_path / "blob.part").open("wb")
        task = asyncio.create_task(close_in_thread(handle))
        await asyncio.sleep(0)  # the close is queued behind the busy thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await busy
        deadline = time.monotonic() + DEADLINE_S
        while not handle.closed:
            assert time.monotonic() < deadline, "the close was dropped with its cancelled caller"
            await asyncio.sleep(0.01)
