"""Benchmark: upload to searchable, through the HTTP API, for Backburner and a naive server.

A corpus of generated text, Markdown and PDF files is uploaded one file after another (as
`backburner files upload` does) to a fresh server on a fresh PostgreSQL database, and the clock
stops when the listing shows every file finished. The same client does the same for the naive
server (`bench/naive_server.py`: one file at a time, one embedding request at a time, with
Backburner's own parts and defaults). Both run with each embedder:

- `hash`, the offline default;
- `openai`, against the emulator's `/v1/embeddings` with a fixed latency per request
  (`--latency-ms`, 200), as a remote embedder makes a pipeline wait in production.

Sides take turns over `--rounds`; each figure is the median of its rounds and each ratio the
median of the rounds' ratios. `cpu_seconds` is the CPU the server's processes and PostgreSQL
spent between the first upload and the last file finishing. Then 10,000 files of one source are
listed through the API with `check_status_updates=true` (`list_10k_ms`, median of 9).
MB are 10^6 bytes.

    .venv/bin/python bench/files.py [--quick] [--rounds 3] [--mb 40] [--files 160] [--pdfs 6]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import httpx
import psutil
from corpus import MB, generate_corpus
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from backburner.clock import utcnow
from backburner.files.states import FileStatus
from backburner.files.tables import files, sources

ORG = "org-default"
POLL_INTERVAL_S = 0.25
PAGE = 500
LIST_FILES = 10_000
LIST_RUNS = 9
CONTENT_TYPES = {".md": "text/markdown", ".txt": "text/plain", ".pdf": "application/pdf"}


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_s: float
    completed: int
    errors: int


def postgres_cpu_s() -> float:
    total = 0.0
    for process in psutil.process_iter(["name"]):
        if process.info["name"] and process.info["name"].startswith("postgres"):
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
    return total


def ingest(server: harness.Server, corpus: list[Path]) -> Run:
    """Upload every file, then wait until every one is finished."""
    with httpx.Client(base_url=server.base_url, timeout=600) as client:
        source = client.post("/v1/sources", json={"name": "corpus"})
        source.raise_for_status()
        source_id = source.json()["id"]
        started, cpu_before, pg_before = time.perf_counter(), server.cpu_s(), postgres_cpu_s()
        for path in corpus:
            with path.open("rb") as handle:
                answer = client.post(
                    f"/v1/sources/{source_id}/files",
                    files={"file": (path.name, handle, CONTENT_TYPES[path.suffix])},
                )
            answer.raise_for_status()
        while True:
            statuses = list_statuses(client, source_id)
            finished = [s for s in statuses if s in (FileStatus.COMPLETED.value, FileStatus.ERROR.value)]
            if len(finished) == len(corpus):
                break
            time.sleep(POLL_INTERVAL_S)
        seconds = time.perf_counter() - started
        cpu_s = server.cpu_s() - cpu_before + postgres_cpu_s() - pg_before
    completed = statuses.count(FileStatus.COMPLETED.value)
    return Run(seconds, cpu_s, completed, len(corpus) - completed)


def list_statuses(client: httpx.Client, source_id: str) -> list[str]:
    statuses: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": PAGE, **({"after": after} if after else {})}
        page = client.get(f"/v1/sources/{source_id}/files", params=params)
        page.raise_for_status()
        body = page.json()
        statuses += [file["status"] for file in body["files"]]
        after = body["next_cursor"]
        if after is None:
            return statuses


def run_side(
    side: str, embedder: dict[str, str], corpus: list[Path], workdir: Path, tag: str, executable: str
) -> Run:
    url = asyncio.run(harness.create_database(f"bench_files_{side}"))
    data_dir = workdir / f"{side}-{tag}"
    settings = {"database_url": url, **embedder}
    try:
        if side == "backburner":
            server = harness.start_backburner(
                settings, data_dir=data_dir, log_path=workdir / f"{side}-{tag}.log", executable=executable
            )
        else:
            port = harness.free_port()
            env = {f"BACKBURNER_{k.upper()}": v for k, v in settings.items()} | {
                "BACKBURNER_DATA_DIR": str(data_dir)
            }
            server = harness.start_server(
                [sys.executable, str(Path(__file__).with_name("naive_server.py")), "--port", str(port)],
                env,
                port=port,
                log_path=workdir / f"{side}-{tag}.log",
            )
        try:
            run = ingest(server, corpus)
        finally:
            server.stop()
        if run.errors:  # a run that failed files measured something else
            raise RuntimeError(f"{run.errors} files ended in ERROR on the {side} side; see {workdir}")
        return run
    finally:
        asyncio.run(harness.drop_database(url))
        asyncio.run(harness.checkpoint())


def compare(
    embedder: dict[str, str], corpus: list[Path], rounds: int, workdir: Path, executable: str
) -> dict[str, Any]:
    runs: dict[str, list[Run]] = {"backburner": [], "naive": []}
    kind = embedder["embedder"]
    for number in range(rounds):
        order = ("backburner", "naive") if number % 2 == 0 else ("naive", "backburner")
        for side in order:
            run = run_side(side, embedder, corpus, workdir, f"{kind}-{number}", executable)
            harness.log(
                f"{kind} round {number + 1}/{rounds} {side}: {run.seconds:.2f} s, {run.cpu_s:.1f} CPU-s"
            )
            runs[side].append(run)
    ratios = [n.seconds / b.seconds for b, n in zip(runs["backburner"], runs["naive"], strict=True)]
    return {
        "seconds": harness.median([r.seconds for r in runs["backburner"]]),
        "naive_seconds": harness.median([r.seconds for r in runs["naive"]]),
        "cpu_seconds": harness.median([r.cpu_s for r in runs["backburner"]]),
        "naive_cpu_seconds": harness.median([r.cpu_s for r in runs["naive"]]),
        "speedup": harness.median(ratios),
        "round_speedups": [round(r, 3) for r in ratios],
        "errors": sum(r.errors for r in runs["backburner"]) + sum(r.errors for r in runs["naive"]),
    }


async def seed_listing(url: str, count: int) -> str:
    engine = create_async_engine(url)
    source_id = "source-listing"
    now = utcnow()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(sources).values(id=source_id, organization_id=ORG, name="listing", created_at=now)
            )
            rows = [
                {
                    "id": f"file-{index:06d}",
                    "organization_id": ORG,
                    "source_id": source_id,
                    "file_name": f"doc-{index}.md",
                    "content_type": "text/markdown",
                    "size_bytes": 1000,
                    "sha256": f"{index:064d}",
                    "blob_key": f"files/file-{index:06d}",
                    "status": FileStatus.COMPLETED.value,
                    "attempts": 1,
                    "chunks_embedded": 3,
                    "total_chunks": 3,
                    "created_at": now,
                    "updated_at": now,
                }
                for index in range(count)
            ]
            await conn.execute(insert(files), rows)
            await conn.exec_driver_sql("ANALYZE files")
    finally:
        await engine.dispose()
    return source_id


def measure_listing(workdir: Path, files_count: int, executable: str) -> float:
    """Median time to list `files_count` files (all of them, in pages of 500) through the API."""
    url = asyncio.run(harness.create_database("bench_files_list"))
    try:
        # The server migrates the database its version knows, then the files are seeded.
        server = harness.start_backburner(
            {"database_url": url},
            data_dir=workdir / "listing",
            log_path=workdir / "listing.log",
            executable=executable,
        )
        try:
            source_id = asyncio.run(seed_listing(url, files_count))
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                samples = []
                for _ in range(LIST_RUNS):
                    started = time.perf_counter()
                    after: str | None = None
                    while True:
                        params: dict[str, Any] = {"limit": PAGE, "check_status_updates": "true"}
                        if after:
                            params["after"] = after
                        body = client.get(f"/v1/sources/{source_id}/files", params=params).json()
                        after = body["next_cursor"]
                        if after is None:
                            break
                    samples.append((time.perf_counter() - started) * 1000)
            return harness.median(samples)
        finally:
            server.stop()
    finally:
        asyncio.run(harness.drop_database(url))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="A small corpus and one round: seconds, for tests."
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=float, default=40.0, help="Size of the text part of the corpus, in MB.")
    parser.add_argument("--files", type=int, default=160)
    parser.add_argument("--pdfs", type=int, default=6)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="Latency of each embedding request.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--backburner",
        default=harness.BACKBURNER,
        help="The `backburner` executable to measure (another installation's, to compare versions).",
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the servers' logs and data (path on stderr)."
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.mb, args.files, args.pdfs = 1, 1.0, 8, 1
    with tempfile.TemporaryDirectory(prefix="bench-files-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp) if not args.keep else Path(tempfile.mkdtemp(prefix="bench-files-kept-"))
        corpus_dir = workdir / "corpus"
        corpus_dir.mkdir()
        corpus = generate_corpus(corpus_dir, args.mb, args.files, args.pdfs, args.seed)
        total_mb = sum(path.stat().st_size for path in corpus) / MB
        harness.log(f"corpus: {len(corpus)} files, {total_mb:.2f} MB, in {workdir}")
        load_before = harness.machine_load()
        hashed = compare({"embedder": "hash"}, corpus, args.rounds, workdir, args.backburner)
        emulator = harness.start_emulator(
            workdir / "emulator.log", "--embedding-latency-ms", str(args.latency_ms)
        )
        try:
            remote = compare(
                {
                    "embedder": "openai",
                    "embedding_base_url": f"{emulator.base_url}/v1",
                    "embedding_api_key": "bench",
                },
                corpus,
                args.rounds,
                workdir,
                args.backburner,
            )
        finally:
            emulator.stop()
        list_ms = measure_listing(workdir, LIST_FILES if not args.quick else 1000, args.backburner)
    harness.emit(
        {
            "corpus": {"files": len(corpus), "mb": round(total_mb, 2)},
            "rounds": args.rounds,
            "mb_per_s": round(total_mb / hashed["seconds"], 2),
            "naive_mb_per_s": round(total_mb / hashed["naive_seconds"], 2),
            "speedup": round(hashed["speedup"], 2),
            "round_speedups": hashed["round_speedups"],
            "cpu_seconds": round(hashed["cpu_seconds"], 1),
            "naive_cpu_seconds": round(hashed["naive_cpu_seconds"], 1),
            "openai_mb_per_s": round(total_mb / remote["seconds"], 2),
            "openai_naive_mb_per_s": round(total_mb / remote["naive_seconds"], 2),
            "openai_speedup": round(remote["speedup"], 2),
            "openai_round_speedups": remote["round_speedups"],
            "openai_cpu_seconds": round(remote["cpu_seconds"], 1),
            "openai_naive_cpu_seconds": round(remote["naive_cpu_seconds"], 1),
            "openai_latency_ms": args.latency_ms,
            "errors": hashed["errors"] + remote["errors"],
            "list_10k_ms": round(list_ms, 1),
            "machine_load": {"before": load_before, "after": harness.machine_load()},
        }
    )


if __name__ == "__main__":
    main()
