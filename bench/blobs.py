"""Benchmark: one large file written to and read back from each blob store.

For each store (`local` under a temporary directory, `database` on a fresh PostgreSQL database,
`s3` against moto's S3 server on loopback, started here), a fresh process writes a `--mb` file
(50 MB by default; MB are 10^6 bytes) through the store's `write_stream`, fed in 64 KiB pieces
as an upload's body arrives, and then reads it back whole through `open`, as a worker does when
it copies a blob for the parsers. The content is text (random words), like most uploads. Before
timing, each process writes and reads a small blob once, so that clients, connection pools and
imports are not counted. Figures per store, the median of `--rounds` processes:

- `write_mb_per_s`, `read_mb_per_s`: MB over the seconds from the first byte handed to the store
  to the last one stored (or read);
- `rss_growth_mb`: the largest growth of the process's resident memory over its level before
  the transfer, sampled every 5 ms in a thread during the write and the read (largest of all
  rounds). The servers (PostgreSQL, the S3 server) are other processes and not counted.

The S3 server is moto's, a Python program: its speed, not the network's or AWS's, bounds the
`s3` figures. Goals: `database` at least 40 MB/s each way, every store under 16 MB of growth.

    .venv/bin/python bench/blobs.py [--mb 50] [--rounds 3] [--stores local,database,s3]
    .venv/bin/python bench/blobs.py --quick     # 5 MB, one round: a check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import harness
import psutil

from backburner.clock import SystemClock
from backburner.db.engine import create_engine_for_url
from backburner.files.blobs import BlobStore, DatabaseBlobStore, LocalBlobStore

MB = 1_000_000
PIECE_BYTES = 64 * 1024
TEXT_BYTES = 4 * 1024 * 1024
SAMPLE_INTERVAL_S = 0.005
STORES = ("local", "database", "s3")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=50.0, help="size of the file, in MB")
    parser.add_argument("--rounds", type=int, default=3, help="processes per store (median)")
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated stores to measure")
    parser.add_argument("--quick", action="store_true", help="5 MB, one round")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--s3-endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--s3-bucket", help=argparse.SUPPRESS)
    parser.add_argument("--directory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.mb, args.rounds = 5.0, 1
    return args


# --- one measurement, in its own process -----------------------------------------------------


def text_block() -> bytes:
    rng = random.Random(13)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(5000)
    ]
    out = bytearray()
    while len(out) < TEXT_BYTES:
        out += (" ".join(rng.choice(words) for _ in range(rng.randint(8, 20))) + ".\n").encode()
    return bytes(out[:TEXT_BYTES])


async def pieces(total: int, block: bytes) -> AsyncIterator[bytes]:
    view = memoryview(block)
    sent = 0
    while sent < total:
        start = sent % len(block)
        size = min(PIECE_BYTES, total - sent, len(block) - start)
        yield bytes(view[start : start + size])
        sent += size


class PeakRss:
    """The largest resident size of this process while the block runs, sampled in a thread."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(SAMPLE_INTERVAL_S)

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


async def measure(args: argparse.Namespace) -> dict[str, float]:
    total = int(args.mb * MB)
    block = text_block()
    engine = None
    store: BlobStore
    if args.child == "local":
        store = LocalBlobStore(Path(args.directory))
    elif args.child == "database":
        engine = create_engine_for_url(args.database_url, pool_size=5, max_overflow=5, pool_timeout=30)
        store = DatabaseBlobStore(engine, SystemClock())
    else:
        from backburner.files.blobs.s3 import S3BlobStore

        store = S3BlobStore(
            bucket=args.s3_bucket,
            prefix="bench",
            endpoint_url=args.s3_endpoint,
            region="us-east-1",
            access_key_id="bench",
            secret_access_key="bench-secret",
        )
    try:
        await store.write_bytes("files/warm-up", b"warm up " * 1000)
        await store.read_bytes("files/warm-up")
        key = f"files/bench-{uuid.uuid4().hex}"
        baseline = psutil.Process().memory_info().rss
        with PeakRss() as write_rss:
            started = time.perf_counter()
            info = await store.write_stream(key, pieces(total, block))
            write_s = time.perf_counter() - started
        assert info.size == total
        with PeakRss() as read_rss:
            started = time.perf_counter()
            read = 0
            async for chunk in store.open(key):
                read += len(chunk)
            read_s = time.perf_counter() - started
        assert read == total
        await store.delete(key)
    finally:
        await store.aclose()
        if engine is not None:
            await engine.dispose()
    return {
        "write_mb_per_s": round(total / MB / write_s, 1),
        "read_mb_per_s": round(total / MB / read_s, 1),
        "rss_growth_mb": round((max(write_rss.peak, read_rss.peak) - baseline) / MB, 1),
    }


# --- the orchestra: servers, databases and one process per measurement -----------------------


def start_s3_server(workdir: Path) -> tuple[harness.Server, str]:
    """moto's S3 server on a free loopback port, with a bucket; returns it and the bucket."""
    import boto3

    port = harness.free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = harness.start_server(argv, {}, port=port, log_path=workdir / "s3.log", ready_path="/moto-api/")
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3",
        endpoint_url=server.base_url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
    ).create_bucket(Bucket=bucket)
    return server, bucket


def run_child(args: argparse.Namespace, store: str, extra: list[str]) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", store, "--mb", str(args.mb), *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {store} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    unknown = set(stores) - set(STORES)
    if unknown:
        raise SystemExit(f"unknown stores: {sorted(unknown)}; choose among {', '.join(STORES)}")
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-blobs-") as workdir,
        harness.postgres_database("bench_blobs", migrated=True) as database_url,
    ):
        server, bucket = start_s3_server(Path(workdir)) if "s3" in stores else (None, "")
        try:
            for store in stores:
                extra = {
                    "local": ["--directory", str(Path(workdir) / "blobs")],
                    "database": ["--database-url", database_url],
                    "s3": ["--s3-endpoint", server.base_url if server else "", "--s3-bucket", bucket],
                }[store]
                harness.log(f"{store}: {args.rounds} x {args.mb:g} MB")
                rounds = [run_child(args, store, extra) for _ in range(args.rounds)]
                results[store] = {
                    "write_mb_per_s": harness.median([r["write_mb_per_s"] for r in rounds]),
                    "read_mb_per_s": harness.median([r["read_mb_per_s"] for r in rounds]),
                    "rss_growth_mb": max(r["rss_growth_mb"] for r in rounds),
                }
        finally:
            if server is not None:
                server.stop()
    return results


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args))))
        return
    harness.emit(orchestrate(args))


if __name__ == "__main__":
    main()
