"""Soak: several instances on one PostgreSQL database, a mixed workload, and faults, then a check
that nothing was lost, stuck, doubled or run twice.

Starts `--instances` (3) `backburner serve` processes, each with its own data directory (as on
its own host), and the emulator, which gets a transient fault every few seconds (a 429, a 500, a
cut results stream). A workload runs against random instances: uploads (a few deliberately
broken PDFs among them), LLM batches of both providers, and searches; a request that fails or
hangs is tried again on another instance (batches with the same `Idempotency-Key`). Every 10 to
20 s one fault strikes: an instance is SIGKILLed and started again, frozen with SIGSTOP for 5 s,
or some instances' database connections are ended with `pg_terminate_backend`. After
`--minutes`, and once at least `--faults` faults have struck, the faults stop, the workload
stops, and the run waits for quiet (every file and batch finished, every completion
delivered); then the database is checked. Prints:

    {"minutes", "instances", "faults": {"sigkill", "sigstop", "terminate_backend"},
     "files": {"uploaded", "completed", "error_expected", "error_unexpected", "stuck"},
     "passages_duplicated", "batch_items": {"expected", "stored", "missing", "duplicated"},
     "overlapping_leader_runs", "leader_changes", "completions_undelivered", "max_rss_mb"}

Goals: `error_unexpected`, `stuck`, `passages_duplicated`, `missing`, `duplicated`,
`overlapping_leader_runs` and `completions_undelivered` all 0.

    .venv/bin/python bench/soak.py [--minutes 10] [--instances 3] [--faults 0] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import harness
import httpx

UPLOAD_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0
QUIET_TIMEOUT_S = 600.0
FAULTS_TIMEOUT_S = 300.0
SIGSTOP_S = 5.0
EMULATOR_FAULT_EVERY_S = 4.0
EMULATOR_FAULTS = [
    {"route": "anthropic.batches.retrieve", "kind": "rate_limit"},
    {"route": "openai.batches.retrieve", "kind": "server_error"},
    {"route": "anthropic.batches.results", "kind": "cut_stream", "after_lines": 2},
    {"route": "openai.files.content", "kind": "cut_stream", "after_lines": 2},
    {"route": "openai.batches.create", "kind": "overloaded"},
]
WORDS = [
    "river",
    "stone",
    "lantern",
    "orchard",
    "copper",
    "violet",
    "harbor",
    "meadow",
    "falcon",
    "ember",
    "quartz",
    "willow",
]


class Receiver(ThreadingHTTPServer):
    """The completion webhook's target: counts each batch's deliveries."""

    def __init__(self) -> None:
        self.deliveries: dict[str, int] = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/completions"


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        batch_id = str(body.get("batch_id") or body.get("id") or "")
        with self.server.lock:
            self.server.deliveries[batch_id] = self.server.deliveries.get(batch_id, 0) + 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@dataclass
class Instance:
    number: int
    data_dir: Path
    server: harness.Server | None = None
    frozen: bool = False

    @property
    def usable(self) -> bool:
        return self.server is not None and not self.frozen and self.server.process.poll() is None


@dataclass
class Tally:
    faults: dict[str, int] = field(
        default_factory=lambda: {"sigkill": 0, "sigstop": 0, "terminate_backend": 0}
    )
    bad_files: int = 0
    batches: dict[str, int] = field(default_factory=dict)  # batch id -> requests
    searches: int = 0
    failed_requests: int = 0
    max_rss_mb: float = 0.0


class Cluster:
    def __init__(self, settings: dict[str, str], workdir: Path, count: int) -> None:
        self.settings = settings
        self.workdir = workdir
        self.instances = [Instance(n, workdir / f"instance-{n}") for n in range(count)]
        self.starts = 0

    def start(self, instance: Instance) -> None:
        self.starts += 1
        instance.server = harness.start_backburner(
            self.settings,
            data_dir=instance.data_dir,
            log_path=self.workdir / f"instance-{instance.number}-{self.starts}.log",
        )
        instance.frozen = False

    def usable(self) -> list[Instance]:
        return [i for i in self.instances if i.usable]

    def stop_all(self) -> None:
        for instance in self.instances:
            if instance.server is not None:
                instance.server.process.send_signal(signal.SIGCONT)
                instance.server.stop()


async def with_retries(cluster: Cluster, tally: Tally, send: Any, attempts: int = 4) -> httpx.Response | None:
    """`send(client)` on random usable instances until one answers below 500."""
    for _ in range(attempts):
        choices = cluster.usable()
        if not choices:
            await asyncio.sleep(0.5)
            continue
        instance = random.choice(choices)
        assert instance.server is not None
        try:
            async with httpx.AsyncClient(
                base_url=instance.server.base_url, timeout=REQUEST_TIMEOUT_S
            ) as client:
                answer: httpx.Response = await send(client)
        except httpx.HTTPError:
            tally.failed_requests += 1
            continue
        if answer.status_code < 500:
            return answer
        tally.failed_requests += 1
        await asyncio.sleep(0.2)
    return None


async def workload(
    cluster: Cluster, tally: Tally, stop: asyncio.Event, source: str, rng: random.Random
) -> None:
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.5:
            await upload(cluster, tally, source, rng)
        elif roll < 0.75:
            await submit_batch(cluster, tally, rng)
        else:
            await search(cluster, tally, source, " ".join(rng.sample(WORDS, 2)))
        await asyncio.sleep(rng.uniform(0.05, 0.3))


async def search(cluster: Cluster, tally: Tally, source: str, words: str) -> None:
    answer = await with_retries(
        cluster, tally, lambda c: c.get(f"/v1/sources/{source}/search", params={"q": words, "k": 3})
    )
    tally.searches += answer is not None and answer.status_code == 200


async def upload(cluster: Cluster, tally: Tally, source: str, rng: random.Random) -> None:
    if rng.random() < 0.05:
        name, data, content_type = f"bad-{uuid.uuid4().hex[:8]}.pdf", b"%PDF-1.4 broken", "application/pdf"
    else:
        paragraphs = [" ".join(rng.choices(WORDS, k=rng.randint(20, 80))) for _ in range(rng.randint(2, 40))]
        name, data, content_type = (
            f"doc-{uuid.uuid4().hex[:8]}.md",
            "\n\n".join(paragraphs).encode(),
            "text/markdown",
        )
    answer = await with_retries(
        cluster,
        tally,
        lambda c: c.post(
            f"/v1/sources/{source}/files",
            files={"file": (name, data, content_type)},
            params={"duplicate_handling": "allow"},
            timeout=UPLOAD_TIMEOUT_S,
        ),
    )
    if answer is not None and answer.status_code == 201 and name.startswith("bad-"):
        tally.bad_files += 1


async def submit_batch(cluster: Cluster, tally: Tally, rng: random.Random) -> None:
    provider = rng.choice(["anthropic", "openai"])
    count = rng.randint(3, 30)
    if provider == "anthropic":
        requests = [
            {
                "custom_id": f"r{i}",
                "params": {"max_tokens": 16, "messages": [{"role": "user", "content": f"hi {i}"}]},
            }
            for i in range(count)
        ]
        model = "claude-emulated"
    else:
        requests = [
            {"custom_id": f"r{i}", "params": {"messages": [{"role": "user", "content": f"hi {i}"}]}}
            for i in range(count)
        ]
        model = "gpt-emulated"
    key = uuid.uuid4().hex
    answer = await with_retries(
        cluster,
        tally,
        lambda c: c.post(
            "/v1/batches",
            json={"provider": provider, "model": model, "requests": requests},
            headers={"idempotency-key": key},
        ),
    )
    if answer is not None and answer.status_code in (200, 201):
        tally.batches[answer.json()["id"]] = count


async def inject_faults(
    cluster: Cluster,
    tally: Tally,
    stop: asyncio.Event,
    db: str,
    rng: random.Random,
    enough: tuple[int, asyncio.Event],
) -> None:
    """A fault every 10 to 20 s until `stop`; sets `enough`'s event once that many have struck."""
    wanted, struck = enough
    while not stop.is_set():
        if sum(tally.faults.values()) >= wanted:
            struck.set()
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(10, 20))
            return
        except TimeoutError:
            pass
        kind = rng.choice(["sigkill", "sigstop", "terminate_backend"])
        live = cluster.usable()
        if not live:
            continue
        victim = rng.choice(live)
        assert victim.server is not None
        harness.log(f"fault: {kind} on instance {victim.number}")
        tally.faults[kind] += 1
        if kind == "sigkill":
            victim.server.process.kill()
            victim.server.process.wait()
            await asyncio.to_thread(cluster.start, victim)
        elif kind == "sigstop":
            victim.frozen = True
            victim.server.process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(SIGSTOP_S)
            victim.server.process.send_signal(signal.SIGCONT)
            victim.frozen = False
        else:
            conn = await asyncpg.connect(db)
            try:
                rows = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                pids = [row["pid"] for row in rows]
                for pid in rng.sample(pids, max(1, len(pids) // 2)) if pids else []:
                    await conn.execute("SELECT pg_terminate_backend($1)", pid)
            finally:
                await conn.close()


async def emulator_faults(emulator: str, stop: asyncio.Event, rng: random.Random) -> None:
    # A connection per fault: one kept between faults may be closed by the server's keep-alive
    # timeout just as the next fault is sent.
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=emulator, timeout=10, limits=no_keepalive) as client:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), EMULATOR_FAULT_EVERY_S)
                return
            except TimeoutError:
                pass
            await client.post("/_emulator/faults", json=rng.choice(EMULATOR_FAULTS))


async def sample_memory(cluster: Cluster, tally: Tally, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for instance in cluster.usable():
            assert instance.server is not None
            tally.max_rss_mb = max(tally.max_rss_mb, instance.server.rss_mb())
        await asyncio.sleep(1.0)


async def quiet(db: str, receiver: Receiver, timeout_s: float) -> None:
    """Until every file and batch is finished and every completion delivered."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(db)
    try:
        while time.monotonic() < deadline:
            busy = await conn.fetchval(
                "SELECT (SELECT count(*) FROM files WHERE status NOT IN ('completed', 'error'))"
                " + (SELECT count(*) FROM llm_batches"
                "    WHERE status IN ('queued', 'submitting', 'running', 'ingesting'))"
                " + (SELECT count(*) FROM llm_batch_deliveries WHERE status = 'pending')"
            )
            if busy == 0:
                return
            await asyncio.sleep(1.0)
    finally:
        await conn.close()


async def check(db: str, tally: Tally) -> dict[str, Any]:
    conn = await asyncpg.connect(db)
    try:
        files = await conn.fetchrow(
            "SELECT count(*) AS uploaded,"
            " count(*) FILTER (WHERE status = 'completed') AS completed,"
            " count(*) FILTER (WHERE status = 'error' AND file_name LIKE 'bad-%') AS error_expected,"
            " count(*) FILTER (WHERE status = 'error' AND file_name NOT LIKE 'bad-%') AS error_unexpected,"
            " count(*) FILTER (WHERE status NOT IN ('completed', 'error')) AS stuck FROM files"
        )
        unexpected = await conn.fetch(
            "SELECT id, error_message FROM files"
            " WHERE status = 'error' AND file_name NOT LIKE 'bad-%' LIMIT 5"
        )
        duplicated_passages = await conn.fetchval(
            "SELECT count(*) - count(DISTINCT (file_id, chunk_index)) FROM passages"
        )
        ids = list(tally.batches)
        items = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status NOT IN ('pending', 'missing')) AS stored,"
            " count(*) FILTER (WHERE status = 'missing') AS missing,"
            " count(*) - count(DISTINCT (batch_id, custom_id)) AS duplicated FROM llm_batch_items"
            " WHERE batch_id = ANY($1::text[])",
            ids,
        )
        failed_batches = await conn.fetch(
            "SELECT id, status, failure_reason FROM llm_batches"
            " WHERE id = ANY($1::text[]) AND status <> 'completed'",
            ids,
        )
        overlapping = await harness.overlapping_leader_runs(conn)
        epochs = await conn.fetchval("SELECT max(epoch) FROM leader_epochs") or 0
        undelivered = await conn.fetchval(
            "SELECT count(*) FROM llm_batches b"
            " WHERE b.status IN ('completed', 'cancelled', 'expired', 'failed')"
            " AND b.id = ANY($1::text[]) AND NOT EXISTS (SELECT 1 FROM llm_batch_deliveries d"
            " WHERE d.batch_id = b.id AND d.status = 'delivered')",
            ids,
        )
    finally:
        await conn.close()
    expected_items = sum(tally.batches.values())
    return {
        "files": dict(files),
        "unexpected_errors": [dict(r) for r in unexpected],
        "passages_duplicated": duplicated_passages,
        "batch_items": {
            "expected": expected_items,
            "stored": items["stored"],
            "missing": expected_items - items["stored"],
            "duplicated": items["duplicated"],
        },
        "batches_not_completed": [dict(r) for r in failed_batches][:5],
        "overlapping_leader_runs": overlapping,
        "leader_changes": max(0, epochs - 1),
        "completions_undelivered": undelivered,
    }


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    url = await harness.create_database("bench_soak", migrated=True)
    db = url.replace("postgresql+asyncpg://", "postgresql://")
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    emulator = harness.start_emulator(workdir / "emulator.log", "--complete-after", "3")
    settings = {
        "database_url": url,
        "enable_batch_job_polling": "true",
        "poll_running_llm_batches_interval_seconds": "2",
        "batch_poll_jitter_seconds": "0.5",
        "anthropic_api_key": "soak",
        "anthropic_base_url": emulator.base_url,
        "openai_api_key": "soak",
        "openai_base_url": f"{emulator.base_url}/v1",
        "batch_completion_webhook_url": receiver.url,
        "batch_completion_webhook_secret": "soak-secret",
        "file_sweep_interval_seconds": "5",
    }
    cluster = Cluster(settings, workdir, args.instances)
    tally = Tally()
    try:
        for instance in cluster.instances:
            await asyncio.to_thread(cluster.start, instance)
        first = cluster.instances[0].server
        assert first is not None
        async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as client:
            source = (await client.post("/v1/sources", json={"name": "soak"})).json()["id"]
        stop, enough = asyncio.Event(), asyncio.Event()
        workers = [
            asyncio.create_task(workload(cluster, tally, stop, source, random.Random(rng.random())))
            for _ in range(args.concurrency)
        ]
        helpers = [
            asyncio.create_task(
                inject_faults(cluster, tally, stop, db, random.Random(rng.random()), (args.faults, enough))
            ),
            asyncio.create_task(emulator_faults(emulator.base_url, stop, random.Random(rng.random()))),
            asyncio.create_task(sample_memory(cluster, tally, stop)),
        ]
        await asyncio.sleep(args.minutes * 60)
        # On a busy machine restarts take longer and fewer faults fit in the time.
        await asyncio.wait_for(enough.wait(), FAULTS_TIMEOUT_S)
        stop.set()
        await asyncio.gather(*workers, *helpers)
        for instance in cluster.instances:  # every instance back, for the wait for quiet
            if instance.server is None or instance.server.process.poll() is not None:
                await asyncio.to_thread(cluster.start, instance)
        harness.log("faults over; waiting for quiet")
        await quiet(db, receiver, QUIET_TIMEOUT_S)
        checked = await check(db, tally)
    finally:
        cluster.stop_all()
        emulator.stop()
        receiver.shutdown()
        await harness.drop_database(url)
    files = checked.pop("files")
    return {
        "minutes": args.minutes,
        "instances": args.instances,
        "faults": tally.faults,
        "files": files,
        "passages_duplicated": checked.pop("passages_duplicated"),
        "batch_items": checked.pop("batch_items"),
        "overlapping_leader_runs": checked.pop("overlapping_leader_runs"),
        "leader_changes": checked.pop("leader_changes"),
        "completions_undelivered": checked.pop("completions_undelivered"),
        "max_rss_mb": round(tally.max_rss_mb, 1),
        "workload": {
            "batches": len(tally.batches),
            "bad_files_accepted": tally.bad_files,
            "searches": tally.searches,
            "requests_retried": tally.failed_requests,
        },
        "details": checked,
        "machine_load": harness.machine_load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="Workload loops running at once.")
    parser.add_argument("--faults", type=int, default=0, help="Run on past --minutes until this many faults.")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--quick", action="store_true", help="20 seconds with 2 instances (tests).")
    parser.add_argument("--keep", action="store_true", help="Keep the logs (path on stderr).")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.instances = 1 / 3, 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    try:
        harness.emit(asyncio.run(run(args, workdir)))
    finally:
        if args.keep:
            harness.log(f"logs in {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
