"""The soak in its quick mode, run on until three faults have struck: two instances on
PostgreSQL, each with its own data directory, a mixed workload and faults; nothing may be lost,
stuck, doubled or run twice."""

from __future__ import annotations

import pytest

from tests.support.benchmarks import run_quick

SOAK_TIMEOUT_S = 900
FAULTS = 3

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(SOAK_TIMEOUT_S + 60)
def test_a_soak_with_faults_loses_nothing() -> None:
    result = run_quick("soak", "--faults", str(FAULTS), timeout_s=SOAK_TIMEOUT_S)
    assert sum(result["faults"].values()) >= FAULTS, result["faults"]
    files, items = result["files"], result["batch_items"]
    assert files["uploaded"] > 0 and items["expected"] > 0, result
    assert (files["error_unexpected"], files["stuck"]) == (0, 0), result
    assert result["passages_duplicated"] == 0, result
    assert (items["missing"], items["duplicated"]) == (0, 0), result
    assert result["overlapping_leader_runs"] == 0, result
    assert result["completions_undelivered"] == 0, result
