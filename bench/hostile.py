"""Benchmark: a hostile tenant's bombs against another tenant's small files, with the defaults.

Starts `backburner serve` (default settings, keys on) on a fresh PostgreSQL database. Tenant A
uploads four bombs: a PDF whose pages all draw one shared content stream, a DOCX of 300,000
paragraphs, a PDF whose stream inflates past the pool process's memory limit, and JSON nested
200,000 deep. Tenant B then uploads 20 small text files, one after another. Meanwhile a thread
asks `/healthz` every 50 ms. Prints one JSON object:

- `victim_p95_s`: the 95th percentile of B's files' times from upload to COMPLETED (goal <= 5);
- `bomb_error_s`: each bomb's time from upload to ERROR, with its parse budget (goal: within
  its budget plus 5 s) and its error message;
- `healthz_p99_ms`: the 99th percentile of `/healthz` round trips during the attack (goal <= 100);
- `idle_cpu_after_s`: CPU-seconds the server's processes used in 10 s, from 3 s after the last
  bomb ended (nothing should be left burning; an idle server uses about 0.2).

    .venv/bin/python bench/hostile.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import harness
import httpx

sys.path.insert(0, str(harness.REPO))

from tests.support import bombs

from backburner.auth import store
from backburner.clock import utcnow
from backburner.db.engine import create_engine
from backburner.files.pipeline.budget import FileBudget
from backburner.settings_loader import load_settings

IDLE_WINDOW_S = 10.0
SETTLE_S = 3.0
HEALTHZ_INTERVAL_S = 0.05
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def make_keys(url: str) -> tuple[str, str]:
    engine = create_engine(load_settings(flags={"database_url": url}, environ={}).settings)
    try:
        _, attacker = await store.create_key(
            engine, organization="mallory", name="a", is_admin=False, now=utcnow()
        )
        _, victim = await store.create_key(
            engine, organization="alice", name="b", is_admin=False, now=utcnow()
        )
    finally:
        await engine.dispose()
    return attacker, victim


def wait_finished(client: httpx.Client, file_id: str, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        file: dict[str, object] = client.get(f"/v1/files/{file_id}").json()
        if file["status"] in ("completed", "error"):
            return file
        if time.monotonic() > deadline:
            raise TimeoutError(f"{file_id} still {file['status']} after {timeout_s} s")
        time.sleep(0.05)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    settings = {"auth_mode": "keys"}
    if args.quick:  # a lower memory limit, so that the zlib bomb inflates less
        settings["file_process_memory_limit_mb"] = "256"
    expand_mb = 400 if args.quick else 1500
    planted = [
        ("pages.pdf", bombs.shared_stream_pdf(), "application/pdf"),
        ("paragraphs.docx", bombs.many_paragraphs_docx(), DOCX),
        ("inflate.pdf", bombs.zlib_bomb_pdf(expand_mb), "application/pdf"),
        ("deep.json", bombs.nested_json(), "application/json"),
    ]
    budget = FileBudget.from_settings(load_settings(flags={}, environ={}).settings)
    victims = 5 if args.quick else 20
    with harness.postgres_database("bench_hostile", migrated=True) as url:
        attacker, victim = asyncio.run(make_keys(url))
        server = harness.start_backburner(
            {**settings, "database_url": url}, data_dir=workdir / "data", log_path=workdir / "serve.log"
        )
        probe = harness.HealthProbe(server.base_url, HEALTHZ_INTERVAL_S)
        try:
            probe.start()
            with (
                httpx.Client(
                    base_url=server.base_url, headers={"authorization": f"Bearer {attacker}"}, timeout=120
                ) as a,
                httpx.Client(
                    base_url=server.base_url, headers={"authorization": f"Bearer {victim}"}, timeout=120
                ) as b,
            ):
                source_a = a.post("/v1/sources", json={"name": "bombs"}).json()["id"]
                source_b = b.post("/v1/sources", json={"name": "notes"}).json()["id"]
                bombs_sent = []
                for name, data, content_type in planted:
                    answer = a.post(
                        f"/v1/sources/{source_a}/files", files={"file": (name, data, content_type)}
                    )
                    answer.raise_for_status()
                    bombs_sent.append((name, len(data), answer.json()["id"], time.monotonic()))
                victim_s = []
                for number in range(victims):
                    body = f"Note {number}: Alice keeps small notes here.".encode()
                    sent = time.monotonic()
                    answer = b.post(f"/v1/sources/{source_b}/files", files={"file": (f"n{number}.txt", body)})
                    answer.raise_for_status()
                    done = wait_finished(b, answer.json()["id"], 120)
                    if done["status"] != "completed":
                        raise RuntimeError(f"a victim's file ended {done['status']}: {done}")
                    victim_s.append(time.monotonic() - sent)
                outcomes = []
                for name, size, file_id, sent in bombs_sent:
                    done = wait_finished(a, file_id, budget.parse_timeout_s + 60)
                    outcomes.append(
                        {
                            "file": name,
                            "bytes": size,
                            "status": done["status"],
                            "error_s": round(time.monotonic() - sent, 2),
                            "budget_s": round(budget.parse_s(size), 2),
                            "error_message": done["error_message"],
                        }
                    )
            probe.stop.set()
            probe.join(5)
            time.sleep(SETTLE_S)  # replacement processes finish starting
            cpu_before = server.cpu_s()
            time.sleep(IDLE_WINDOW_S)
            idle_cpu = server.cpu_s() - cpu_before
        finally:
            probe.stop.set()
            server.stop()
    return {
        "victim_p95_s": round(harness.percentile(victim_s, 0.95), 3),
        "victim_max_s": round(max(victim_s), 3),
        "bomb_error_s": outcomes,
        "bombs_within_budget": all(
            o["status"] == "error" and float(o["error_s"]) <= float(o["budget_s"]) + 5 for o in outcomes
        ),
        "healthz_p99_ms": round(harness.percentile(probe.samples_ms, 0.99), 1),
        "healthz_samples": len(probe.samples_ms),
        "idle_cpu_after_s": round(idle_cpu, 3),
        "machine_load": harness.machine_load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="5 victim files and a smaller zlib bomb (tests)."
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the server's log and data (path on stderr)."
    )
    args = parser.parse_args()
    if args.keep:
        workdir = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
        harness.log(f"keeping {workdir}")
        harness.emit(run(args, workdir))
        return
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        harness.emit(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
