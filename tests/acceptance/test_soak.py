"""The soak in its quick mode, run on until three faults have struck: two instances on
PostgreSQL, each with its own data directory, a mixed workload and faults; nothing may be lost,
stuck, doubled or run twice."""

from __future__ import annotations

import json

import pytest

from tests.support.benchmarks import run_quick

SOAK_TIMEOUT_S = 900
FAULTS = 3

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(SOAK_TIMEOUT_S + 60)
def test_a_soak_with_faults_loses_nothing() -> None:
    result = run_quick("soak", "--faults", str(FAULTS), timeout_s=SOAK_TIMEOUT_S)
    shown = json.dumps(result, indent=1)  # whole: pytest would cut a long dict short
    assert sum(result["faults"].values()) >= FAULTS, shown
    files, items = result["files"], result["batch_items"]
    assert files["uploaded"] > 0 and items["expected"] > 0, shown
    assert (files["error_unexpected"], files["stuck"]) == (0, 0), shown
    assert result["passages_duplicated"] == 0, shown
    assert (items["missing"], items["duplicated"]) == (0, 0), shown
    assert result["overlapping_leader_runs"] == 0, shown
    assert result["completions_undelivered"] == 0, shown
