"""An app served by uvicorn in a thread of the test process, on a free port, for client tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from tests.support.processes import wait_until


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL once it is ready."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: httpx.get(url + "/readyz").status_code == 200, 30, "the server to be ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(15)
        listener.close()
