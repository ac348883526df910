"""Uvicorn, made to exit with status 0 after a graceful shutdown on SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class GracefulServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the captured signal after shutting down, which turns a clean
        # SIGTERM shutdown into exit status -15; a supervisor should see 0.
        with super().capture_signals():
            yield
            self._captured_signals.clear()
