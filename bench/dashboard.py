"""How fast the dashboard loads with 10,000 files and 1,000 batches in PostgreSQL.

Starts `backburner serve` on a fresh database filled with seeded rows, opens `/dashboard` in
headless Chromium several times and measures, in the browser, the time from navigation start to
the first render with data; also times the JSON view alone. Prints one JSON object.

    .venv/bin/python bench/dashboard.py [--files 10000] [--batches 1000] [--loads 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.browser import chromium  # noqa: E402
from tests.support.dashboard_data import seed  # noqa: E402
from tests.support.processes import BackburnerProcess, free_port, wait_until  # noqa: E402

from backburner.auth import store as key_store  # noqa: E402
from backburner.clock import utcnow  # noqa: E402
from backburner.db.engine import create_engine  # noqa: E402
from backburner.settings_loader import load_settings  # noqa: E402


async def prepare(url: str, n_files: int, n_batches: int) -> str:
    engine = create_engine(load_settings(flags={"database_url": url}, environ={}).settings)
    try:
        await seed(engine, n_files=n_files, n_batches=n_batches)
        _, token = await key_store.create_key(
            engine, organization="default", name="bench", is_admin=True, now=utcnow()
        )
    finally:
        await engine.dispose()
    return token


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(samples), 1), "max": round(max(samples), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=1_000)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a small dashboard, in seconds (for tests)")
    args = parser.parse_args()
    if args.quick:
        args.files, args.batches, args.loads = 200, 20, 2
    with harness.postgres_database("bench_dashboard", migrated=True) as url:
        token = asyncio.run(prepare(url, args.files, args.batches))
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            proc = BackburnerProcess(
                ["serve", "--port", str(port)],
                env={
                    "BACKBURNER_DATABASE_URL": url,
                    "BACKBURNER_DATA_DIR": f"{tmp}/data",
                    "BACKBURNER_AUTH_MODE": "keys",
                    "BACKBURNER_FILE_PROCESSING_WORKERS": "0",
                    "BACKBURNER_LOG_LEVEL": "WARNING",
                },
                cwd=Path(tmp),
                log_path=Path(tmp) / "serve.log",
                port=port,
            )
            try:
                proc.wait_ready(60)
                headers = {"authorization": f"Bearer {token}"}
                wait_until(
                    lambda: httpx.get(proc.url + "/api/admin/dashboard", headers=headers).json()["jobs"],
                    30,
                    "the scheduler's jobs",
                )
                data_ms = []
                for _ in range(args.loads):
                    started = time.perf_counter()
                    httpx.get(proc.url + "/api/admin/dashboard", headers=headers).raise_for_status()
                    data_ms.append((time.perf_counter() - started) * 1000)
                load_ms = []
                with chromium() as driver:
                    driver.get(proc.url + "/dashboard")
                    driver.execute_script(f"sessionStorage.setItem('backburner.apiKey', {token!r})")
                    for _ in range(args.loads):
                        driver.get(proc.url + "/dashboard")
                        load_ms.append(
                            wait_until(
                                lambda: driver.execute_script("return window.dashboardFirstRenderMs"),
                                30,
                                "the first render",
                            )
                        )
            finally:
                proc.stop()
    print(
        json.dumps(
            {
                "files": args.files,
                "batches": args.batches,
                "loads": args.loads,
                "page_load_ms": {
                    "median": round(statistics.median(load_ms), 1),
                    "max": round(max(load_ms), 1),
                },
                "data_ms": {"median": round(statistics.median(data_ms), 1), "max": round(max(data_ms), 1)},
            }
        )
    )


if __name__ == "__main__":
    main()
