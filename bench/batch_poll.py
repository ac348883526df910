"""Benchmark of the LLM batch poller: one cycle over 10,000 batches, and ingesting 100,000 items.

Prints one JSON object:

- ``cycle_10k``: one poll cycle (`BatchPoller.run_cycle`) over 10,000 running batches (half
  Anthropic, half OpenAI) on the emulator: ``wall_s``, ``requests_per_s`` (provider requests the
  emulator counted during the cycle, per second) and ``peak_rss_mb`` of the polling process.
  The cycle is run ``--repeat`` times (every batch is due again at once); the median is given,
  every run's wall time in ``cycle_runs_wall_s``. By default the poller learns most statuses
  from the providers' listings (1,000 batches per request at Anthropic, 100 at OpenAI);
  ``cycle_10k_retrieve_each`` is the same cycle with that turned off, one retrieve per batch.
- ``ingest_100k``: one ended 100,000-item Anthropic batch streamed into PostgreSQL by the
  poller's `Ingestor` (SDK results iterator, chunked upserts): ``items_per_s`` and
  ``rss_growth_mb`` (peak RSS during the ingest minus RSS just before it).
- ``naive_ingest_100k``: the same kind of batch on the same emulator in the same run, fetched
  the naive way (every result collected in a list, then one write): same fields.
- ``split_250k``: 250,000 OpenAI requests submitted as one JSON body through the API (read into
  a spooled file, checked in a thread, stored, split into 5 parts of 50,000 and sent), then the
  5 ended parts ingested by poll cycles: ``parts``, ``submit_s`` (the POST, end to end),
  ``items_per_s`` (items stored per second from the first poll cycle to the batch's completion)
  and ``rss_growth_mb`` (peak RSS of the serving process during the submission and the
  ingestion, minus its RSS just before the POST). The body is a file the client streams.

``--quick`` runs every case small (seconds, not minutes), to check that the bench works.

Each measurement runs in a fresh child process, so memory one leaves behind is not counted by
the next; the emulator runs in a process of its own (`backburner emulator`), so its memory is
not counted either. The database is a fresh PostgreSQL database, dropped at the end.

Run: .venv/bin/python bench/batch_poll.py  (see --help)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backburner.batches.domain import BatchStatus, ItemStatus
from backburner.batches.tables import llm_batch_items, llm_batches

GOALS = {
    "cycle_10k.wall_s_max": 20,
    "ingest_100k.items_per_s_min": 10_000,
    "ingest_100k.rss_growth_mb_max": 100,
    "ingest_100k.rss_growth_vs_naive_max": 1 / 3,
    "split_250k.items_per_s_min": 10_000,
    "split_250k.rss_growth_mb_max": 100,
}
SPLIT_PARTS = 5
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_BASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/"
ORG = "org-default"
ELECTION = "bench-batch-poll"
MB = 1024 * 1024


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=10_000, help="running batches in the poll cycle")
    parser.add_argument("--items", type=int, default=100_000, help="items of the ingested batch")
    parser.add_argument("--concurrency", type=int, default=16, help="batch_poll_concurrency of the cycle")
    parser.add_argument("--chunk-size", type=int, default=1000, help="batch_results_chunk_size")
    parser.add_argument("--repeat", type=int, default=3, help="poll cycles measured (the median is reported)")
    parser.add_argument("--split-items", type=int, default=250_000, help="requests of the split submission")
    parser.add_argument("--quick", action="store_true", help="every case small: a check that runs in seconds")
    parser.add_argument("--part", choices=["cycle", "ingest", "naive", "split"], help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    parser.add_argument("--list-min-batches", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--emulator", help=argparse.SUPPRESS)
    parser.add_argument("--batch-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick and args.part is None:
        args.batches, args.items, args.repeat, args.split_items = 200, 5_000, 1, 5_000
    return args


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / MB


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


# -- set-up (the parent process) ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "backburner", "emulator", "--port", str(port), "--complete-after", "86400"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/_emulator/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the emulator did not start")


async def create_database() -> str:
    from backburner.db import migrate

    name = f"bench_batch_poll_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    engine = create_async_engine(PG_BASE_URL + name)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    return name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def batch_row(
    batch_id: str, provider: str, provider_batch_id: str, count: int, now: datetime
) -> dict[str, Any]:
    return {
        "id": batch_id,
        "organization_id": ORG,
        "provider": provider,
        "model": "emulated-model",
        "status": BatchStatus.RUNNING.value,
        "idempotency_key": batch_id,
        "request_count": count,
        "provider_batch_id": provider_batch_id,
        "provider_status": "in_progress",
        "created_at": now,
        "updated_at": now,
        "submitted_at": now,
        "consecutive_errors": 0,
        "missing_output_polls": 0,
        "succeeded_count": 0,
        "errored_count": 0,
        "canceled_count": 0,
        "expired_count": 0,
        "missing_count": 0,
    }


async def seed(
    engine: AsyncEngine, emulator: str, provider: str, batches: int, items: int, prefix: str
) -> list[tuple[str, str]]:
    """Create batches on the emulator and their running records (with pending items) in our database."""
    async with httpx.AsyncClient(base_url=emulator, timeout=300) as client:
        response = await client.post(
            "/_emulator/seed",
            json={
                "provider": provider,
                "batches": batches,
                "items_per_batch": items,
                "custom_id_prefix": "item-",
            },
        )
        response.raise_for_status()
        provider_ids: list[str] = response.json()["ids"]
    now = datetime.now(UTC)
    pairs = [(f"{prefix}-{n}", provider_id) for n, provider_id in enumerate(provider_ids)]
    async with engine.begin() as conn:
        for start in range(0, len(pairs), 5000):
            await conn.execute(
                insert(llm_batches),
                [batch_row(b, provider, p, items, now) for b, p in pairs[start : start + 5000]],
            )
        if items > 1:
            for batch_id, _ in pairs:
                for start in range(0, items, 10_000):
                    await conn.execute(
                        insert(llm_batch_items),
                        [
                            {
                                "batch_id": batch_id,
                                "custom_id": f"item-{i}",
                                "organization_id": ORG,
                                "status": ItemStatus.PENDING.value,
                                "params": '{"max_tokens":16}',
                                "updated_at": now,
                            }
                            for i in range(start, min(start + 10_000, items))
                        ],
                    )
    return pairs


async def end_batch(emulator: str, provider_batch_id: str) -> None:
    async with httpx.AsyncClient(base_url=emulator, timeout=60) as client:
        (await client.post(f"/_emulator/batches/{provider_batch_id}/end")).raise_for_status()


def run_child(
    args: argparse.Namespace,
    part: str,
    database: str,
    emulator: str,
    batch_id: str = "",
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--part",
        part,
        "--database",
        database,
        "--emulator",
        emulator,
        "--batch-id",
        batch_id,
        "--concurrency",
        str(args.concurrency),
        "--chunk-size",
        str(args.chunk_size),
        "--items",
        str(args.items),
        "--batches",
        str(args.batches),
        "--repeat",
        str(args.repeat),
        "--split-items",
        str(args.split_items),
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{part} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    from backburner.settings import Settings  # noqa: F401  (import cost paid before any timing)

    emulator_process, emulator = start_emulator()
    database = await create_database()
    engine = create_async_engine(PG_BASE_URL + database)
    try:
        half = args.batches // 2
        await seed(engine, emulator, "anthropic", half, 1, "cycle-a")
        await seed(engine, emulator, "openai", args.batches - half, 1, "cycle-o")
        cycle = run_child(args, "cycle", database, emulator)
        cycle_runs = cycle.pop("runs_wall_s")
        cycle_cpu_s = cycle.pop("cpu_s")
        # The same cycle with the listing turned off: one retrieve per batch.
        each = run_child(args, "cycle", database, emulator, extra=("--list-min-batches", str(10**9)))
        each_runs = each.pop("runs_wall_s")
        each_cpu_s = each.pop("cpu_s")

        [(streamed, streamed_provider_id)] = await seed(
            engine, emulator, "anthropic", 1, args.items, "ingest"
        )
        [(naive, naive_provider_id)] = await seed(engine, emulator, "anthropic", 1, args.items, "naive")
        await end_batch(emulator, streamed_provider_id)
        await end_batch(emulator, naive_provider_id)
        ingest = run_child(args, "ingest", database, emulator, streamed)
        naive_result = run_child(args, "naive", database, emulator, naive)
        body = write_split_body(args.split_items)
        try:
            split = run_child(args, "split", database, emulator, extra=("--body", str(body)))
        finally:
            body.unlink()
    finally:
        await engine.dispose()
        await drop_database(database)
        shutil.rmtree(data_dir_of(database), ignore_errors=True)
        emulator_process.terminate()
        emulator_process.wait(10)
    ratio = (
        ingest["rss_growth_mb"] / naive_result["rss_growth_mb"] if naive_result["rss_growth_mb"] > 0 else None
    )
    return {
        "cycle_10k": cycle,
        "ingest_100k": ingest,
        "naive_ingest_100k": naive_result,
        "split_250k": split,
        "comparison": {
            "rss_growth_ratio_vs_naive": round(ratio, 3) if ratio is not None else None,
            "items_per_s_ratio_vs_naive": round(ingest["items_per_s"] / naive_result["items_per_s"], 2),
        },
        "goals": GOALS,
        "goals_met": {
            "cycle_10k.wall_s": cycle["wall_s"] <= GOALS["cycle_10k.wall_s_max"],
            "ingest_100k.items_per_s": ingest["items_per_s"] >= GOALS["ingest_100k.items_per_s_min"],
            "ingest_100k.rss_growth_mb": ingest["rss_growth_mb"] <= GOALS["ingest_100k.rss_growth_mb_max"],
            "ingest_100k.rss_growth_vs_naive": ratio is not None
            and ratio <= GOALS["ingest_100k.rss_growth_vs_naive_max"],
            "split_250k.items_per_s": split["items_per_s"] >= GOALS["split_250k.items_per_s_min"],
            "split_250k.rss_growth_mb": split["rss_growth_mb"] <= GOALS["split_250k.rss_growth_mb_max"],
            "split_250k.parts": split["parts"] == SPLIT_PARTS,
        },
        "cycle_10k_retrieve_each": each,
        "cycle_runs_wall_s": {"listing": cycle_runs, "retrieve_each": each_runs},
        "cycle_cpu_s": {"listing": cycle_cpu_s, "retrieve_each": each_cpu_s},  # the median cycle's
        "params": {
            "batches": args.batches,
            "cycle_repeats": args.repeat,
            "items": args.items,
            "split_items": args.split_items,
            "quick": args.quick,
            "concurrency": args.concurrency,
            "chunk_size": args.chunk_size,
            "database": "postgresql",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
    }


# -- measurements (each in a child process) ---------------------------------------------------------


def write_split_body(items: int) -> Path:
    """The split case's submission: one JSON body of `items` OpenAI requests, in a file."""
    path = Path(f"/tmp/backburner-bench-split-{os.getpid()}.json")
    with path.open("wb") as sink:
        sink.write(b'{"provider":"openai","model":"gpt-bench","requests":[')
        for n in range(items):
            request = {
                "custom_id": f"r{n:07d}",
                "params": {"max_tokens": 16, "messages": [{"role": "user", "content": f"say {n}"}]},
            }
            sink.write((b"," if n else b"") + json.dumps(request, separators=(",", ":")).encode())
        sink.write(b"]}")
    return path


def data_dir_of(database: str) -> Path:
    """The children's data directory: one per run, so that runs side by side do not share it."""
    return Path(tempfile.gettempdir()) / f"backburner-bench-{database}"


def child_settings(args: argparse.Namespace) -> Any:
    return child_loaded(args).settings


def child_loaded(args: argparse.Namespace) -> Any:
    from backburner.settings_loader import load_settings

    part_requests = max(1, -(-args.split_items // SPLIT_PARTS))  # 50,000 (OpenAI's limit) at full size
    return load_settings(
        flags={
            "openai_batch_max_requests": part_requests,
            "auth_mode": "none",
            "database_url": PG_BASE_URL + args.database,
            "anthropic_api_key": "bench",
            "anthropic_base_url": args.emulator,
            "openai_api_key": "bench",
            "openai_base_url": args.emulator + "/v1",
            "batch_poll_concurrency": args.concurrency,
            "batch_results_chunk_size": args.chunk_size,
            "data_dir": data_dir_of(args.database),
        },
        environ={},
    )


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from backburner.batches.component import poll_policy
    from backburner.batches.handoff import CompletionHandoff
    from backburner.batches.ingest import Ingestor
    from backburner.batches.metrics import BatchMetrics
    from backburner.batches.poller import BatchPoller
    from backburner.batches.providers.registry import ProviderSet
    from backburner.batches.store import BatchStore
    from backburner.clock import SystemClock
    from backburner.db.engine import create_engine
    from backburner.leader.static import StaticLeadership

    if args.part == "split":
        return await measure_split(args)
    settings = child_settings(args)
    engine = create_engine(settings)
    providers = ProviderSet(settings)
    clock = SystemClock()
    store = BatchStore(engine)
    metrics = BatchMetrics(CollectorRegistry())
    ingestor = Ingestor(clock, args.chunk_size, lambda: (), lambda: uuid.uuid4().hex)
    leadership = await StaticLeadership.claim(engine, ELECTION, f"bench-{os.getpid()}")
    try:
        if args.part == "cycle":
            poller = BatchPoller(
                store=store,
                providers=providers,
                policy=poll_policy(settings),
                clock=clock,
                metrics=metrics,
                ingestor=ingestor,
                handoff=CompletionHandoff(store, settings, clock),
                concurrency=args.concurrency,
                batch_size=None,
            )
            if args.list_min_batches is not None:
                poller.list_min_batches = args.list_min_batches
            for name in ("anthropic", "openai"):
                providers.get(name)  # clients built before timing
            runs: list[tuple[float, int, float]] = []
            for _ in range(args.repeat):  # every batch is due again at once: the same cycle again
                before = await emulator_requests(args.emulator)
                cpu_before = cpu_s()
                started = time.perf_counter()
                report = await poller.run_cycle(leadership)
                wall_s = time.perf_counter() - started
                cpu = cpu_s() - cpu_before
                runs.append((wall_s, await emulator_requests(args.emulator) - before, cpu))
                assert report.polled == args.batches and report.errors == 0, report
            wall_s, requests, cpu = sorted(runs)[len(runs) // 2]  # the median run
            return {
                "wall_s": round(wall_s, 3),
                "requests_per_s": round(requests / wall_s, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "runs_wall_s": [round(w, 3) for w, _, _ in runs],
                "cpu_s": round(cpu, 3),
            }
        batch = await store.get(ORG, args.batch_id)
        assert batch is not None and batch.provider_batch_id is not None
        provider = providers.get(batch.provider)
        snapshot = await provider.retrieve(batch.provider_batch_id)
        baseline = rss_mb()
        started = time.perf_counter()
        if args.part == "ingest":
            stored, finished = await ingestor.ingest(
                leadership, batch, snapshot, provider, BatchStatus.COMPLETED
            )
            assert finished
        else:
            stored = await naive_ingest(leadership, provider, snapshot, batch.id, clock)
        wall_s = time.perf_counter() - started
        assert stored == args.items, stored
        counts = await store.item_status_counts(batch.id)
        assert counts.get("pending", 0) == 0 and sum(counts.values()) == args.items, counts
        return {
            "items_per_s": round(stored / wall_s),
            "rss_growth_mb": round(peak_rss_mb() - baseline, 1),
            "wall_s": round(wall_s, 3),
        }
    finally:
        await providers.aclose()
        await engine.dispose()


async def measure_split(args: argparse.Namespace) -> dict[str, Any]:
    """Submit the body file through the API (in process), end its parts, ingest them all."""
    from backburner.api.app import create_app
    from backburner.emulator.admin_client import EmulatorAdmin
    from backburner.leader.static import StaticLeadership

    app = create_app(child_loaded(args))
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        await runtime.wait_ready(60)
        component = runtime.batches
        leadership = await StaticLeadership.claim(runtime.engine, ELECTION, f"bench-{os.getpid()}")

        async def body_chunks() -> Any:
            source = await asyncio.to_thread(Path(args.body).open, "rb")
            try:
                while chunk := await asyncio.to_thread(source.read, 1024 * 1024):
                    yield chunk
            finally:
                source.close()

        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client,
            EmulatorAdmin(args.emulator) as admin,
        ):
            baseline = rss_mb()
            started = time.perf_counter()
            response = await client.post(
                "/v1/batches", content=body_chunks(), headers={"content-type": "application/json"}
            )
            submit_s = time.perf_counter() - started
            assert response.status_code == 201, response.text[:2000]
            created = response.json()
            for part in created["parts"]:
                await admin.end_batch(part["provider_batch_id"])
            started = time.perf_counter()
            for _ in range(50):  # a cycle ends every part it can; a few suffice
                if (await component.store.get(ORG, created["id"])).status is BatchStatus.COMPLETED:
                    break
                report = await component.poller.run_cycle(leadership)
                assert report.failed == 0, report
            ingest_s = time.perf_counter() - started
            counts = await component.store.item_status_counts(created["id"])
        assert counts == {"succeeded": args.split_items}, counts
        return {
            "parts": created["part_count"],
            "submit_s": round(submit_s, 3),
            "items_per_s": round(args.split_items / ingest_s),
            "rss_growth_mb": round(peak_rss_mb() - baseline, 1),
            "ingest_s": round(ingest_s, 3),
        }


async def naive_ingest(leadership: Any, provider: Any, snapshot: Any, batch_id: str, clock: Any) -> int:
    """What a peer does: every result in a list, then one write of them all."""
    from backburner.batches.store import finish_batch, upsert_items

    results = [item async for item in provider.results(snapshot)]
    async with leadership.fenced() as conn:
        stored: int = await upsert_items(conn, ORG, batch_id, results, clock.now())
        await finish_batch(conn, batch_id, BatchStatus.COMPLETED, clock.now())
    return stored


async def emulator_requests(emulator: str) -> int:
    async with httpx.AsyncClient(base_url=emulator, timeout=30) as client:
        stats = (await client.get("/_emulator/stats")).json()
    return int(stats["total_requests"])


def main() -> None:
    args = parse_args()
    if args.part is None:
        print(json.dumps(asyncio.run(orchestrate(args)), indent=2))
    else:
        print(json.dumps(asyncio.run(measure(args))))


if __name__ == "__main__":
    main()
