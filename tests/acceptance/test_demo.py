"""`backburner demo` through the real command: it shows every part working, then Ctrl-C stops
it and every process it started (the server's pool processes included)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.processes import free_port

pytestmark = pytest.mark.acceptance
DEADLINE_S = 180


def test_the_demo_shows_the_product_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port, emulator_port = free_port(), free_port()
    command = [sys.executable, "-m", "backburner", "demo", "--port", str(port)]
    command += ["--emulator-port", str(emulator_port)]
    # Started with SIGINT ignored, as a script's background job is (a test run started with `&`):
    # Ctrl-C must stop the demo all the same. `exec` keeps the pid, and the ignored signal.
    demo = subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(demo.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not any("Press Ctrl-C" in line for line in lines):
            assert demo.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        output = "".join(lines)
        assert "Submitted a batch of 3 requests to anthropic" in output
        assert "Submitted a batch of 3 requests to openai" in output
        assert (
            "anthropic: completed, 3 results stored" in output
            and "openai: completed, 3 results stored" in output
        )
        assert "All 4 files processed." in output and "Search " in output
        assert f"Dashboard: http://127.0.0.1:{port}/dashboard" in output
        assert httpx.get(f"http://127.0.0.1:{port}/dashboard", timeout=10).status_code == 200
        children = psutil.Process(demo.pid).children(recursive=True)
        assert len(children) >= 2, children  # the emulator, the server (and its pool)

        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0, "".join(lines)
        reader.join(10)
        assert "Stopped" in "".join(lines)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], alive
        assert "Traceback" not in "".join(lines)
    finally:
        if demo.poll() is None:
            # Its children run in sessions of their own: a failed test stops them too.
            for leftover in psutil.Process(demo.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    leftover.kill()
            demo.kill()
            demo.wait()
        reader.join(10)
        demo.stdout.close()  # type: ignore[union-attr]
