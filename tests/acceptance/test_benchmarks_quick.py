"""Every benchmark runs in its quick mode and prints the JSON its figures are read from, so a
benchmark that breaks fails the suite instead of rotting."""

from __future__ import annotations

import pytest

from tests.support.benchmarks import (
    EXPECTED_KEYS,
    QUICK_TIMEOUT_S,
    RUN_BY_THEIR_OWN_TEST,
    bench_scripts,
    run_quick,
)

pytestmark = pytest.mark.acceptance


def test_every_benchmark_has_its_expected_keys() -> None:
    assert set(bench_scripts()) == set(EXPECTED_KEYS)


@pytest.mark.timeout(QUICK_TIMEOUT_S + 30)
@pytest.mark.parametrize("name", [name for name in bench_scripts() if name not in RUN_BY_THEIR_OWN_TEST])
def test_quick_mode_prints_its_json(name: str) -> None:
    run_quick(name)
