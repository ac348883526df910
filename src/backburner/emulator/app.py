"""The emulator's FastAPI application, built per call: no instance exists at import time."""

from __future__ import annotations

from fastapi import FastAPI

from backburner.emulator.admin_api import admin_router
from backburner.emulator.anthropic_api import anthropic_router
from backburner.emulator.clock import Clock
from backburner.emulator.config import EmulatorConfig
from backburner.emulator.embeddings_api import embeddings_router
from backburner.emulator.errors import install_error_handlers
from backburner.emulator.openai_api import openai_router
from backburner.emulator.state import EmulatorState


def create_emulator_app(config: EmulatorConfig | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Builds an emulator speaking the Anthropic Message Batches and OpenAI Batch APIs.

    ``clock`` returns Unix seconds and defaults to :func:`time.time`; batches end
    ``complete_after_s`` after creation by that clock. The state is reachable as
    ``app.state.emulator`` for in-process use.
    """
    state = EmulatorState(config if config is not None else EmulatorConfig(), clock)
    app = FastAPI(title="Backburner provider emulator", docs_url="/_emulator/docs", redoc_url=None)
    app.state.emulator = state
    install_error_handlers(app)
    app.include_router(anthropic_router(state))
    app.include_router(openai_router(state))
    app.include_router(embeddings_router(state))
    app.include_router(admin_router(state))
    return app
