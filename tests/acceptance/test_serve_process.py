"""`backburner serve` as a real process: becomes ready, and exits 0 soon after SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.processes import BackburnerProcess, free_port

pytestmark = pytest.mark.acceptance


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_serve_becomes_ready_and_exits_0_within_5s_of_sigterm(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    port = free_port()
    proc = BackburnerProcess(
        ["serve", "--port", str(port)],
        env={"BACKBURNER_DATABASE_URL": url, "BACKBURNER_DATA_DIR": str(tmp_path / "data")},
        cwd=tmp_path,
        log_path=tmp_path / "serve.log",
        port=port,
    )
    try:
        proc.wait_ready(30)
        assert proc.get("/healthz").json()["status"] == "ok"
        proc.popen.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.popen.wait(timeout=5)
        assert time.monotonic() - started < 5
        assert code == 0, proc.log()
    finally:
        proc.stop()
