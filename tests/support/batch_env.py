"""A Backburner app (API + runtime) wired to a provider emulator, for the batch tests.

The poller is driven directly with a `StaticLeadership`, so each test decides when cycles run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from backburner.api.batches import batch_view
from backburner.batches.component import BatchesComponent
from backburner.batches.domain import Batch
from backburner.batches.poller import CycleReport
from backburner.batches.tables import llm_batch_items
from backburner.batches.validation import validate_submission
from backburner.emulator.admin_client import EmulatorAdmin
from backburner.emulator.config import EmulatorConfig
from backburner.emulator.testing import RunningEmulator, running_emulator
from backburner.leader.static import StaticLeadership
from backburner.runtime import Runtime
from backburner.settings_loader import LoadedSettings
from tests.support import batch_handlers
from tests.support.app import started_app

TEST_ELECTION = "batches-test"


def emulator_config(**overrides: Any) -> EmulatorConfig:
    """Batches end, and cancels finish, only when a test says so (admin `end`)."""
    values: dict[str, Any] = {
        "complete_after_s": 3600.0,
        "cancel_after_s": 3600.0,
        "validating_s": 0.0,
        "finalizing_s": 0.0,
    }
    values.update(overrides)
    return EmulatorConfig(**values)


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[RunningEmulator]:
    with running_emulator(emulator_config()) as emulator:
        yield emulator


@pytest.fixture
def emulator(shared_emulator: RunningEmulator) -> RunningEmulator:
    """The module's emulator, reset: no batches, faults or scenario from an earlier test."""
    shared_emulator.state.reset()
    batch_handlers.reset()
    return shared_emulator


def provider_settings(emulator: RunningEmulator) -> dict[str, Any]:
    return {
        "anthropic_api_key": "test-key",
        "anthropic_base_url": emulator.anthropic_base_url,
        "openai_api_key": "test-key",
        "openai_base_url": emulator.openai_base_url,
        "provider_timeout_seconds": 10.0,
        "batch_completion_handler": "tests.support.batch_handlers:record",
    }


class FakeClock:
    """A clock the test moves; the poller's decisions read it, the emulator keeps real time."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@dataclass
class BatchEnv:
    app: FastAPI | None
    client: httpx.AsyncClient | None
    runtime: Runtime
    component: BatchesComponent
    leadership: StaticLeadership
    admin: EmulatorAdmin
    emulator: RunningEmulator

    async def poll(self) -> CycleReport:
        return await self.component.poller.run_cycle(self.leadership)

    async def submit(self, provider: str, custom_ids: list[str], **kwargs: Any) -> dict[str, Any]:
        if self.client is None:  # no API in this environment: the service directly
            submission = validate_submission(
                {"provider": provider, "model": "test-model", "requests": requests_for(custom_ids)},
                self.component.service.target,
            )
            outcome = await self.component.service.submit("org-default", submission)
            return batch_view(outcome.batch)
        response = await self.client.post(
            "/v1/batches",
            json={"provider": provider, "model": "test-model", "requests": requests_for(custom_ids)},
            **kwargs,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def batch(self, batch_id: str) -> Batch:
        batch = await self.component.store.get("org-default", batch_id)
        assert batch is not None
        return batch

    async def results(self, batch_id: str) -> list[dict[str, Any]]:
        chunks = [c async for c in self.component.service.results_jsonl("org-default", batch_id)]
        return [json.loads(line) for line in b"".join(chunks).splitlines()]

    async def item_rows(self, batch_id: str) -> list[tuple[str, str]]:
        """(custom_id, status) of every stored item, straight from the table."""
        async with self.runtime.engine.connect() as conn:
            rows = await conn.execute(
                select(llm_batch_items.c.custom_id, llm_batch_items.c.status).where(
                    llm_batch_items.c.batch_id == batch_id
                )
            )
            return [(r[0], r[1]) for r in rows]

    async def provider_requests(self) -> int:
        stats = await self.admin.stats()
        return int(stats["total_requests"])


def requests_for(custom_ids: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": cid,
            "params": {"max_tokens": 16, "messages": [{"role": "user", "content": f"say {cid}"}]},
        }
        for cid in custom_ids
    ]


@asynccontextmanager
async def batch_env(
    make_settings: Callable[..., LoadedSettings],
    database_url: str,
    emulator: RunningEmulator,
    **overrides: Any,
) -> AsyncIterator[BatchEnv]:
    values = {"database_url": database_url, **provider_settings(emulator), **overrides}
    async with started_app(make_settings(**values)) as app:
        runtime: Runtime = app.state.runtime
        component = runtime.batches
        assert component is not None
        leadership = await StaticLeadership.claim(runtime.engine, TEST_ELECTION, runtime.instance_id)
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://backburner.test", timeout=30) as client,
            EmulatorAdmin(emulator.base_url) as admin,
        ):
            yield BatchEnv(app, client, runtime, component, leadership, admin, emulator)


@asynccontextmanager
async def runtime_env(
    make_settings: Callable[..., LoadedSettings],
    database_url: str,
    emulator: RunningEmulator,
    clock: FakeClock,
    **overrides: Any,
) -> AsyncIterator[BatchEnv]:
    """A worker runtime (no API) whose poller reads `clock`."""
    values = {"database_url": database_url, **provider_settings(emulator), **overrides}
    async with Runtime(make_settings(**values), role="worker", clock=clock) as runtime:
        await runtime.wait_ready(30)
        component = runtime.batches
        assert component is not None
        leadership = await StaticLeadership.claim(runtime.engine, TEST_ELECTION, runtime.instance_id)
        async with EmulatorAdmin(emulator.base_url) as admin:
            yield BatchEnv(None, None, runtime, component, leadership, admin, emulator)
