"""An app served by uvicorn in a thread of the test process, for commands that need a real URL."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from backburner.api.app import create_app
from backburner.settings_loader import LoadedSettings
from tests.support.processes import wait_until


@contextmanager
def served(settings: LoadedSettings, ready_timeout_s: float = 30) -> Iterator[str]:
    """The URL of the app built from `settings`, once `/readyz` answers 200; stopped on exit."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: httpx.get(url + "/readyz").status_code == 200, ready_timeout_s, "the server to be ready"
        )
        yield url
    finally:
        server.should_exit = True
        thread.join(15)
        listener.close()
