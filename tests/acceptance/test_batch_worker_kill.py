"""A `backburner worker` SIGKILLed while it ingests a 20,000-item batch loses nothing.

The batch is submitted, ended at the emulator, and a real worker process (leader of its own
election on PostgreSQL) starts streaming the results. It is killed mid-stream; a new worker
takes over and finishes: every item is stored exactly once, the batch is handed over, and its
usage totals are exactly those of its items.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from backburner.batches.component import BatchesComponent
from backburner.batches.validation import validate_submission
from backburner.clock import SystemClock
from backburner.db.engine import create_engine as create_async_engine
from backburner.emulator.admin_client import EmulatorAdmin
from backburner.emulator.testing import running_emulator
from backburner.scheduler.jobs import JobRegistry
from backburner.settings_loader import load_settings
from tests.support.batch_env import emulator_config
from tests.support.processes import BackburnerProcess, wait_until

pytestmark = pytest.mark.acceptance

ITEMS = 20_000
REPO_ROOT = Path(__file__).resolve().parents[2]


def _query(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _count_by_status(url: str, batch_id: str) -> dict[str, int]:
    rows = _query(
        url, "SELECT status, count(*) FROM llm_batch_items WHERE batch_id = $1 GROUP BY status", batch_id
    )
    return {str(status): int(str(n)) for status, n in rows}


def _batch_status(url: str, batch_id: str) -> str:
    return str(_query(url, "SELECT status FROM llm_batches WHERE id = $1", batch_id)[0][0])


async def _submit(database_url: str, emulator_url: str) -> tuple[str, str]:
    settings = load_settings(
        flags={"database_url": database_url, "anthropic_api_key": "k", "anthropic_base_url": emulator_url},
        environ={},
    ).settings
    engine = create_async_engine(settings)
    component = BatchesComponent(
        settings=settings,
        engine=engine,
        clock=SystemClock(),
        registry=CollectorRegistry(),
        jobs=JobRegistry(),
    )
    try:
        async with component:
            requests = [
                {"custom_id": f"req-{n:05d}", "params": {"max_tokens": 8, "messages": []}}
                for n in range(ITEMS)
            ]
            submission = validate_submission(
                {"provider": "anthropic", "model": "claude-test", "requests": requests},
                component.service.target,
            )
            outcome = await component.service.submit("org-default", submission)
            assert outcome.batch.provider_batch_id is not None
            async with EmulatorAdmin(emulator_url) as admin:
                await admin.end_batch(outcome.batch.provider_batch_id)
            return outcome.batch.id, outcome.batch.provider_batch_id
    finally:
        await engine.dispose()


def test_a_killed_worker_resumes_ingestion_without_loss_or_duplicates(
    postgres_url: str, tmp_path: Path
) -> None:
    with running_emulator(emulator_config()) as emulator:
        batch_id, _ = asyncio.run(_submit(postgres_url, emulator.base_url))
        handler_log = tmp_path / "handled.jsonl"
        env = {
            "PYTHONPATH": str(REPO_ROOT),
            "BACKBURNER_DATABASE_URL": postgres_url,
            "BACKBURNER_DATA_DIR": str(tmp_path / "data"),
            "BACKBURNER_ENABLE_BATCH_JOB_POLLING": "true",
            "BACKBURNER_POLL_RUNNING_LLM_BATCHES_INTERVAL_SECONDS": "1",
            "BACKBURNER_BATCH_POLL_JITTER_SECONDS": "0",
            "BACKBURNER_BATCH_RESULTS_CHUNK_SIZE": "100",
            "BACKBURNER_ANTHROPIC_API_KEY": "k",
            "BACKBURNER_ANTHROPIC_BASE_URL": emulator.base_url,
            "BACKBURNER_BATCH_COMPLETION_HANDLER": "tests.support.batch_handlers:append_to_file",
            "BATCH_HANDLER_LOG": str(handler_log),
        }
        count_url = postgres_url
        first = BackburnerProcess(["worker"], env, REPO_ROOT, tmp_path / "worker-1.log")
        try:
            # Kill it once part of the batch is stored, and well before all of it is.
            wait_until(
                lambda: _stored(count_url, batch_id) >= 2_000 or first.popen.poll() is not None,
                60,
                "the first worker to store part of the batch",
                interval_s=0.01,
            )
            first.popen.send_signal(signal.SIGKILL)
            first.popen.wait(10)
        finally:
            first.stop()
        stored_at_kill = _stored(count_url, batch_id)
        assert 0 < stored_at_kill < ITEMS, first.log()
        assert _batch_status(count_url, batch_id) == "ingesting"
        assert not handler_log.exists()

        second = BackburnerProcess(["worker"], env, REPO_ROOT, tmp_path / "worker-2.log")
        try:
            wait_until(
                lambda: _batch_status(count_url, batch_id) == "completed", 60, "the second worker to finish"
            )
            wait_until(lambda: handler_log.exists(), 30, "the completion handoff")
        finally:
            second.stop()

        counts = _count_by_status(count_url, batch_id)
        assert sum(counts.values()) == ITEMS  # every request exactly once: the key is (batch, custom id)
        assert counts.get("pending", 0) == 0 and counts.get("missing", 0) == 0
        handed = [json.loads(line) for line in handler_log.read_text().splitlines()]
        assert [h["batch_id"] for h in handed] == [batch_id]
        assert handed[0]["counts"]["succeeded"] == counts.get("succeeded")
        assert "batch.ingested" in second.log()
        # Usage is derived from the stored items: the emulator reports 10 + len(custom id) input
        # and 12 output tokens for each, whatever happened to the first worker.
        [usage] = _query(
            count_url,
            "SELECT model, items, input_tokens, output_tokens FROM llm_batch_usage WHERE batch_id = $1",
            batch_id,
        )
        assert usage == ("claude-test", ITEMS, ITEMS * (10 + len("req-00000")), ITEMS * 12)


def _stored(sync_url: str, batch_id: str) -> int:
    counts = _count_by_status(sync_url, batch_id)
    return sum(n for status, n in counts.items() if status != "pending")
