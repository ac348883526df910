"""Stacks of other threads, formatted without reading source files.

The watchdog formats stacks while the loop is blocked, possibly by slow I/O; ``traceback``
and ``linecache`` would read source files from disk at that moment. Here a frame is only its
file name, line number and function name, read from the frame and its code object.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from types import FrameType

__all__ = [
    "FrameInfo",
    "all_thread_stacks",
    "find_culprit",
    "format_stack",
    "is_idle_in_loop",
    "is_library_file",
    "thread_stack",
    "walk_frames",
]

DEFAULT_DEPTH = 64


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """One stack frame: where it is, not what its source says."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}"

    def as_dict(self) -> dict[str, str | int]:
        return {"file": self.filename, "line": self.lineno, "function": self.function}


def walk_frames(frame: FrameType | None, limit: int = DEFAULT_DEPTH) -> list[FrameInfo]:
    """The frames from ``frame`` outwards, innermost first, at most ``limit`` of them."""
    frames: list[FrameInfo] = []
    while frame is not None and len(frames) < limit:
        code = frame.f_code
        frames.append(FrameInfo(code.co_filename, frame.f_lineno or 0, code.co_name))
        frame = frame.f_back
    return frames


def thread_stack(thread_ident: int, limit: int = DEFAULT_DEPTH) -> list[FrameInfo]:
    """The current stack of another thread, innermost first; empty if the thread is gone."""
    frame = sys._current_frames().get(thread_ident)
    try:
        return walk_frames(frame, limit)
    finally:
        del frame  # a kept frame would keep that thread's locals alive


def all_thread_stacks(limit: int = DEFAULT_DEPTH) -> dict[str, list[FrameInfo]]:
    """Every thread's stack, keyed by ``"<name> (<ident>)"``."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    frames = sys._current_frames()
    try:
        return {
            f"{names.get(ident, 'unknown')} ({ident})": walk_frames(frame, limit)
            for ident, frame in frames.items()
        }
    finally:
        frames.clear()


@cache
def _library_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    # Watchdog and probe frames (a gc callback, say) are never the code to blame.
    roots.add(os.path.dirname(os.path.abspath(__file__)))
    return tuple(os.path.join(os.path.abspath(root), "") for root in roots)


def is_library_file(filename: str) -> bool:
    """Whether a frame's file belongs to Python, an installed package or this monitor."""
    if filename.startswith("<"):  # <frozen ...>, <string>
        return True
    return os.path.abspath(filename).startswith(_library_prefixes())


def find_culprit(frames: Sequence[FrameInfo]) -> FrameInfo | None:
    """The innermost frame of application code running inside the loop, else the innermost.

    Frames outside the loop's ``run_forever`` (``main()``, ``<module>``) started the program;
    they are never the culprit, even when everything inside the loop is library code.
    """
    for frame in frames:
        if _runs_the_loop(frame):
            break
        if not is_library_file(frame.filename):
            return frame
    return frames[0] if frames else None


# Frames that run an event loop: everything outside them is the program's entry point.
_LOOP_RUNNER_FRAMES = frozenset(
    {
        ("base_events.py", "run_forever"),
        ("base_events.py", "run_until_complete"),
        ("runners.py", "run"),
    }
)


def _runs_the_loop(frame: FrameInfo) -> bool:
    where = (os.path.basename(frame.filename), frame.function)
    return where in _LOOP_RUNNER_FRAMES and is_library_file(frame.filename)


# Frames in which an event loop waits for work or runs its own bookkeeping.
_LOOP_IDLE_FRAMES = frozenset(
    {
        ("selectors.py", "select"),
        ("base_events.py", "_run_once"),
        ("base_events.py", "run_forever"),
        ("base_events.py", "run_until_complete"),
        ("runners.py", "run"),
    }
)


def is_idle_in_loop(frames: Sequence[FrameInfo]) -> bool:
    """Whether the innermost frame is the loop itself rather than a task or callback.

    A late heartbeat with the loop thread there means the thread wanted to run and could
    not (no CPU, or the GIL held elsewhere), not that code of ours was blocking it. With
    uvloop the selector is native code, so its idle stack ends in ``runners.py``.
    """
    if not frames:
        return False
    innermost = frames[0]
    where = (os.path.basename(innermost.filename), innermost.function)
    return where in _LOOP_IDLE_FRAMES and is_library_file(innermost.filename)


def format_stack(frames: Iterable[FrameInfo]) -> str:
    """One frame per line, innermost first."""
    return "\n".join(f"  {frame}" for frame in frames)
