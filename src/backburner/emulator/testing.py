"""Running an emulator inside a test process, on a free port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from backburner.emulator.app import create_emulator_app
from backburner.emulator.clock import Clock
from backburner.emulator.config import EmulatorConfig
from backburner.emulator.state import EmulatorState


class ManualClock:
    """A clock that moves only when told: pass it as ``clock=`` for exact, timing-free tests."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now


@dataclass(frozen=True, slots=True)
class RunningEmulator:
    base_url: str
    """``http://host:port``: the Anthropic SDK's ``base_url`` and the admin API's root."""
    app: FastAPI

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def state(self) -> EmulatorState:
        state: EmulatorState = self.app.state.emulator
        return state


@contextmanager
def running_emulator(
    config: EmulatorConfig | None = None,
    *,
    clock: Clock | None = None,
    host: str = "127.0.0.1",
    startup_timeout_s: float = 10.0,
    shutdown_timeout_s: float = 10.0,
) -> Iterator[RunningEmulator]:
    """Serves a fresh emulator until the block exits.

    The port is taken by binding port 0 before the server starts, so parallel test runs never
    race for one. uvicorn installs no signal handlers off the main thread, and ``log_config=None``
    leaves the test process's logging alone.
    """
    app = create_emulator_app(config, clock=clock)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name=f"emulator-{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the emulator's server thread exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the emulator did not start within {startup_timeout_s} s")
            time.sleep(0.005)
        yield RunningEmulator(base_url=f"http://{host}:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(shutdown_timeout_s)
        listener.close()
        if thread.is_alive():
            raise RuntimeError(f"the emulator did not stop within {shutdown_timeout_s} s")
