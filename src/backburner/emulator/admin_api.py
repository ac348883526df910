"""The admin API under ``/_emulator``: faults, scenarios, the clock, ending batches, counters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from backburner.emulator import anthropic_api, openai_api
from backburner.emulator.faults import ActiveFault, FaultRule
from backburner.emulator.lifecycle import has_ended
from backburner.emulator.outcomes import Scenario
from backburner.emulator.records import BatchRecord, ModelColumn, StoredFile, SyntheticIds
from backburner.emulator.requests_io import base_url
from backburner.emulator.results import OPENAI_BODIES
from backburner.emulator.state import EmulatorState
from backburner.emulator.store import new_id

ADMIN_PREFIX = "/_emulator"


class ClockAdvance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0)


class SeedRequest(BaseModel):
    """Creates batches directly, without uploading requests, e.g. 10,000 batches for a poll benchmark."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["anthropic", "openai"]
    batches: int = Field(default=1, ge=1, le=100_000)
    items_per_batch: int = Field(default=1, ge=1, le=100_000)
    custom_id_prefix: str = Field(default="item-", min_length=1, max_length=50)
    model: str = "emulated-model"
    endpoint: str = "/v1/chat/completions"


class Seeded(BaseModel):
    ids: list[str]


def admin_router(state: EmulatorState) -> APIRouter:
    router = APIRouter(prefix=ADMIN_PREFIX, tags=["emulator admin"])
    store = state.store

    def found(batch_id: str) -> BatchRecord:
        record = store.batch(batch_id)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"No batch with id {batch_id!r}.")
        return record

    def provider_view(record: BatchRecord, request: Request) -> dict[str, object]:
        now = state.clock()
        if record.provider == "anthropic":
            return anthropic_api.batch_view(
                record, state, now, base_url(request, state.config.public_base_url)
            )
        hidden = record.retrieves_after_end < record.scenario.output_file_delay_polls
        return openai_api.batch_view(record, state, now, hide_files=hidden)

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/stats")
    async def stats() -> dict[str, object]:
        """Requests per route (every provider call, faulted or not) and faults applied per route."""
        counters = state.stats.snapshot()
        return {
            **counters,
            "total_requests": sum(counters["requests"].values()),
            "batches": store.batch_counts(),
            "files": store.file_count(),
        }

    @router.get("/faults")
    async def list_faults() -> dict[str, list[ActiveFault]]:
        return {"data": state.faults.snapshot()}

    @router.post("/faults", status_code=status.HTTP_201_CREATED)
    async def add_fault(rule: FaultRule) -> ActiveFault:
        return state.faults.add(rule)

    @router.delete("/faults", status_code=status.HTTP_204_NO_CONTENT)
    async def clear_faults() -> None:
        state.faults.clear()

    @router.delete("/faults/{fault_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def remove_fault(fault_id: int) -> None:
        if not state.faults.remove(fault_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"No fault with id {fault_id}.")

    @router.get("/scenario")
    async def get_scenario() -> Scenario:
        return state.scenario

    @router.put("/scenario")
    async def set_scenario(scenario: Scenario) -> Scenario:
        """Sets the scenario for batches created from now on."""
        state.set_scenario(scenario)
        return scenario

    @router.put("/batches/{batch_id}/scenario")
    async def set_batch_scenario(batch_id: str, scenario: Scenario, request: Request) -> Response:
        """Replaces one batch's scenario; its item outcomes are planned again."""
        record = found(batch_id)
        store.replan(record, scenario)
        return JSONResponse(provider_view(record, request))

    @router.post("/batches/{batch_id}/end")
    async def end_batch(batch_id: str, request: Request) -> Response:
        """Ends a batch now (a canceling one finishes canceling); returns it as its provider shows it."""
        record = found(batch_id)
        now = state.clock()
        if not has_ended(record, now, state.config.cancel_after_s):  # an ended batch keeps its end time
            store.force_end(record, now)
        return JSONResponse(provider_view(record, request))

    @router.post("/clock/advance")
    async def advance_clock(body: ClockAdvance) -> dict[str, float]:
        offset = state.clock.advance(body.seconds)
        return {"offset_s": offset, "now": state.clock()}

    @router.post("/reset", status_code=status.HTTP_204_NO_CONTENT)
    async def reset() -> None:
        state.reset()

    @router.post("/seed", status_code=status.HTTP_201_CREATED)
    async def seed(body: SeedRequest) -> Seeded:
        if body.provider == "anthropic":
            return Seeded(ids=_seed_anthropic(state, body))
        if body.endpoint not in OPENAI_BODIES:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"endpoint must be one of {sorted(OPENAI_BODIES)}"
            )
        return Seeded(ids=_seed_openai(state, body))

    return router


def _seed_anthropic(state: EmulatorState, body: SeedRequest) -> list[str]:
    custom_ids = SyntheticIds(body.custom_id_prefix, body.items_per_batch)
    models = ModelColumn.uniform(body.model, body.items_per_batch)
    return [
        state.create_batch("anthropic", new_id("msgbatch_"), custom_ids, models).id
        for _ in range(body.batches)
    ]


def _seed_openai(state: EmulatorState, body: SeedRequest) -> list[str]:
    custom_ids = SyntheticIds(body.custom_id_prefix, body.items_per_batch)
    models = ModelColumn.uniform(body.model, body.items_per_batch)

    def input_lines() -> Iterator[bytes]:
        for custom_id in custom_ids:
            request = {
                "custom_id": custom_id,
                "method": "POST",
                "url": body.endpoint,
                "body": {"model": body.model},
            }
            yield (json.dumps(request) + "\n").encode()

    # The seeded batches share one input file: their requests are the same.
    input_file = StoredFile(
        id=new_id("file-", 22),
        filename="seeded_input.jsonl",
        purpose="batch",
        created_at=state.clock(),
        lines=input_lines,
    )
    state.store.add_file(input_file)
    return [
        openai_api.create_openai_batch(
            state,
            custom_ids=custom_ids,
            models=models,
            endpoint=body.endpoint,
            input_file_id=input_file.id,
            metadata=None,
        ).id
        for _ in range(body.batches)
    ]
