"""Running the emulator under uvicorn."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from backburner.emulator.app import create_emulator_app
from backburner.emulator.config import DEFAULT_HOST, DEFAULT_PORT, EmulatorConfig


def uvicorn_config(config: EmulatorConfig, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        create_emulator_app(config),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # per-request lines would dominate the cost of a 10,000-poll cycle
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=5,
    )


async def serve_emulator(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    complete_after_s: float | None = None,
    *,
    config: EmulatorConfig | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serves until cancelled or signalled. ``complete_after_s`` overrides the one in ``config``."""
    config = config if config is not None else EmulatorConfig()
    if complete_after_s is not None:
        config = EmulatorConfig.model_validate({**config.model_dump(), "complete_after_s": complete_after_s})
    server = uvicorn.Server(uvicorn_config(config, host, port))
    await server.serve(sockets=sockets)


def run_emulator(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    complete_after_s: float | None = None,
    *,
    config: EmulatorConfig | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Blocking entry point for the command line."""
    asyncio.run(serve_emulator(host, port, complete_after_s, config=config, sockets=sockets))
