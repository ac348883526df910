"""Every benchmark runs in its quick mode and prints the JSON its figures are read from, so a
benchmark that breaks fails the suite instead of rotting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# Modules the scripts share; not benchmarks themselves.
SUPPORT = {"harness", "corpus", "naive_server"}
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
    "search": {"sqlite", "postgres"},
    "retrieval": {"recall_at_5"},
}
QUICK_TIMEOUT_S = 600

pytestmark = pytest.mark.acceptance


def bench_scripts() -> list[str]:
    return sorted(path.stem for path in BENCH.glob("*.py") if path.stem not in SUPPORT)


def test_every_benchmark_has_its_expected_keys() -> None:
    assert set(bench_scripts()) == set(EXPECTED_KEYS)


@pytest.mark.timeout(QUICK_TIMEOUT_S + 30)
@pytest.mark.parametrize("name", bench_scripts())
def test_quick_mode_prints_its_json(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    missing = EXPECTED_KEYS[name] - set(result)
    assert not missing, f"{name} printed no {sorted(missing)}: {done.stdout[:2000]}"
