"""Running a benchmark's quick mode and checking its JSON (the acceptance tier does both)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"
# Modules the scripts share; not benchmarks themselves.
SUPPORT = {"harness", "corpus", "naive_server"}
# Quick modes that a test of their own runs and checks more closely (with the same keys).
RUN_BY_THEIR_OWN_TEST = {"soak": "tests/acceptance/test_soak.py"}
# The keys each benchmark's JSON must hold (documented in BENCHMARKS.md).
EXPECTED_KEYS: dict[str, set[str]] = {
    "files": {
        "mb_per_s",
        "naive_mb_per_s",
        "openai_mb_per_s",
        "openai_naive_mb_per_s",
        "cpu_seconds",
        "naive_cpu_seconds",
        "list_10k_ms",
    },
    "dashboard": {"page_load_ms", "data_ms"},
    "failover": {"faults", "overlapping_leader_runs"},
    "watchdog": {"overhead_ratio", "detection_ms", "false_reports"},
    "batch_poll": {"cycle_10k", "ingest_100k", "naive_ingest_100k"},
    "hostile": {"victim_p95_s", "bomb_error_s", "healthz_p99_ms", "idle_cpu_after_s"},
    "scale": {"files_per_min", "scaling_3_over_1"},
    "schedules": {"fires", "fire_lag_ms", "missed", "duplicate_keys", "leader_cpu_percent"},
    "soak": {
        "faults",
        "files",
        "passages_duplicated",
        "batch_items",
        "overlapping_leader_runs",
        "leader_changes",
        "completions_undelivered",
        "max_rss_mb",
    },
    "blobs": {"local", "database", "s3"},
    "search": {"sqlite", "postgres", "ingest_end_to_end"},
    "index_cost": {"rows", "sqlite", "postgres"},
    "retrieval": {"recall_at_5"},
    "planner": {
        "unanalyzed_p50_ms",
        "analyzed_p50_ms",
        "analyze_s",
        "after_writes_p50_ms",
        "after_writes_seqscan_allowed_p50_ms",
    },
}
QUICK_TIMEOUT_S = 600


def bench_scripts() -> list[str]:
    return sorted(path.stem for path in BENCH.glob("*.py") if path.stem not in SUPPORT)


def run_quick(name: str, *extra: str, timeout_s: float = QUICK_TIMEOUT_S) -> dict[str, Any]:
    """Run `bench/<name>.py --quick`; its JSON, checked to hold the keys of `EXPECTED_KEYS`."""
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick", *extra],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout)
    missing = EXPECTED_KEYS[name] - set(result)
    assert not missing, f"{name} printed no {sorted(missing)}: {done.stdout[:2000]}"
    return result
