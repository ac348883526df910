"""Functions for pool processes to run in tests (a pool process imports them by name)."""

from __future__ import annotations

import os
import time


class Unpicklable(Exception):
    def __init__(self, handle: object) -> None:
        super().__init__("holds a lock")
        self.handle = handle


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def fail_unpicklably() -> None:
    import threading

    raise Unpicklable(threading.Lock())


def spin(seconds: float) -> int:
    """Burn CPU for `seconds` of wall time; returns the pid."""
    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        count += 1
    return os.getpid()


def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


def die() -> None:
    os._exit(3)
