"""The soak, 90 seconds of it: several instances on PostgreSQL, each with its own data
directory, a mixed workload and faults; nothing may be lost, stuck, doubled or run twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SOAK_TIMEOUT_S = 900

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(SOAK_TIMEOUT_S + 60)
def test_ninety_seconds_of_faults_lose_nothing() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "soak.py"), "--minutes", "1.5", "--faults", "3"],
        capture_output=True,
        text=True,
        timeout=SOAK_TIMEOUT_S,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert sum(result["faults"].values()) >= 3, result["faults"]
    files, items = result["files"], result["batch_items"]
    assert files["uploaded"] > 0 and items["expected"] > 0, result
    assert (files["error_unexpected"], files["stuck"]) == (0, 0), result
    assert result["passages_duplicated"] == 0, result
    assert (items["missing"], items["duplicated"]) == (0, 0), result
    assert result["overlapping_leader_runs"] == 0, result
    assert result["completions_undelivered"] == 0, result
