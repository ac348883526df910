"""A file opened in a thread for a caller that was cancelled meanwhile is closed at once."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from backburner.files.blobs.local import open_for_writing

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
