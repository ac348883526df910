"""Benchmark: files completed per minute with 1, 2 and 3 instances on one PostgreSQL database.

Each instance is a `backburner serve` process with its own data directory (as on its own host)
and 2 file workers; they share the database and nothing else, so every upload's content lives in
the database (the default blob store on PostgreSQL). The embedder is `openai`, pointed at the
emulator's `/v1/embeddings` with a fixed latency per request (`--latency-ms`, 200), so that
embedding waits on a remote service as it does in production. The corpus (generated Markdown and
text files) is uploaded to the instances in turn, and the clock stops when every file is
finished. The benchmark is one organization's: `file_max_concurrent_per_org` is set to the
workers, so that each instance uses both. Prints one JSON object:

    {"files_per_min": {"1", "2", "3"}, "scaling_3_over_1", ...}

Goal: `scaling_3_over_1` at least 2.4.

    .venv/bin/python bench/scale.py [--quick] [--files 240] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import harness
import httpx
from corpus import generate_corpus

WORKERS = 2
POLL_INTERVAL_S = 0.25


def run_cluster(count: int, corpus: list[Path], emulator: str, workdir: Path) -> float:
    """Seconds from the first upload until every file is finished, with `count` instances."""
    url = asyncio.run(harness.create_database("bench_scale", migrated=True))
    settings = {
        "database_url": url,
        "file_processing_workers": str(WORKERS),
        "file_max_concurrent_per_org": str(WORKERS),
        "embedder": "openai",
        "embedding_base_url": f"{emulator}/v1",
        "embedding_api_key": "bench",
    }
    servers = []
    try:
        for number in range(count):
            servers.append(
                harness.start_backburner(
                    settings,
                    data_dir=workdir / f"{count}-{number}",
                    log_path=workdir / f"{count}-{number}.log",
                )
            )
        clients = [httpx.Client(base_url=s.base_url, timeout=120) for s in servers]
        try:
            source = clients[0].post("/v1/sources", json={"name": "corpus"}).json()["id"]
            started = time.perf_counter()
            for index, path in enumerate(corpus):
                with path.open("rb") as handle:
                    answer = clients[index % count].post(
                        f"/v1/sources/{source}/files", files={"file": (path.name, handle, "text/markdown")}
                    )
                answer.raise_for_status()
            while True:
                body = clients[0].get(f"/v1/sources/{source}/files", params={"limit": 500}).json()
                statuses = [f["status"] for f in body["files"]]
                after = body["next_cursor"]
                while after:
                    page = (
                        clients[0]
                        .get(f"/v1/sources/{source}/files", params={"limit": 500, "after": after})
                        .json()
                    )
                    statuses += [f["status"] for f in page["files"]]
                    after = page["next_cursor"]
                if sum(s in ("completed", "error") for s in statuses) == len(corpus):
                    break
                time.sleep(POLL_INTERVAL_S)
            seconds = time.perf_counter() - started
            errors = statuses.count("error")
            if errors:
                raise RuntimeError(f"{errors} files ended in ERROR with {count} instances")
            return seconds
        finally:
            for client in clients:
                client.close()
    finally:
        for server in servers:
            server.stop()
        asyncio.run(harness.drop_database(url))
        asyncio.run(harness.checkpoint())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="A small corpus, 1 and 2 instances: seconds.")
    parser.add_argument("--files", type=int, default=240)
    parser.add_argument("--mb", type=float, default=12.0, help="Size of the corpus in MB.")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    counts = [1, 2] if args.quick else [1, 2, 3]
    if args.quick:
        args.files, args.mb = 12, 0.4
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        corpus_dir = workdir / "corpus"
        corpus_dir.mkdir()
        corpus = generate_corpus(corpus_dir, args.mb, args.files, 0, args.seed)
        emulator = harness.start_emulator(
            workdir / "emulator.log", "--embedding-latency-ms", str(args.latency_ms)
        )
        try:
            seconds = {}
            for count in counts:
                seconds[count] = run_cluster(count, corpus, emulator.base_url, workdir)
                harness.log(f"{count} instance(s): {seconds[count]:.1f} s")
        finally:
            emulator.stop()
    per_min = {str(count): round(len(corpus) / s * 60, 1) for count, s in seconds.items()}
    top = str(max(counts))
    harness.emit(
        {
            "files_per_min": per_min,
            f"scaling_{top}_over_1": round(per_min[top] / per_min["1"], 2),
            "scaling_3_over_1": round(per_min["3"] / per_min["1"], 2) if "3" in per_min else None,
            "files": len(corpus),
            "workers_per_instance": WORKERS,
            "embedding_latency_ms": args.latency_ms,
            "machine_load": harness.machine_load(),
        }
    )


if __name__ == "__main__":
    main()
