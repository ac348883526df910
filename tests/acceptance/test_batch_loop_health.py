"""Batch submissions never block a server's event loop: a 250 MB body is read and checked while
`/healthz` keeps answering quickly, and the first submission pays no SDK import on the loop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backburner.emulator.testing import running_emulator
from tests.support.batch_env import emulator_config, requests_for
from tests.support.processes import BackburnerProcess, free_port

pytestmark = pytest.mark.acceptance

BODY_BYTES = 250 * 1024 * 1024
# Goals: every /healthz within 100 ms. On a loaded shared host the test asserts that for 95 % of
# them, and a generous bound for every one: checking the body on the loop, or in a thread of the
# server's process, would hold the loop up for tenths of a second at a time.
HEALTHZ_P95_BOUND_S = 0.1
HEALTHZ_BOUND_S = 0.5
REPO_ROOT = Path(__file__).resolve().parents[2]


def _serve(tmp_path: Path, **env: str) -> BackburnerProcess:
    port = free_port()
    process = BackburnerProcess(
        ["serve", "--port", str(port)],
        env={"BACKBURNER_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO_ROOT), **env},
        cwd=tmp_path,
        log_path=tmp_path / "serve.log",
        port=port,
    )
    process.wait_ready(60)
    return process


def _large_body() -> Iterator[bytes]:
    """About 250 MB of requests whose last one repeats the first custom id: read and checked to
    the end, then refused (422), so that nothing is stored or sent."""
    content = "y" * 2000
    yield b'{"provider":"anthropic","model":"m","requests":['
    sent = 0
    n = 0
    while sent < BODY_BYTES:
        line = json.dumps(
            {
                "custom_id": f"r{n}",
                "params": {"max_tokens": 16, "messages": [{"role": "user", "content": content}]},
            }
        ).encode()
        yield line + b","
        sent += len(line) + 1
        n += 1
    yield b'{"custom_id":"r0","params":{}}]}'


def test_a_250_mb_body_is_handled_while_healthz_answers_quickly(tmp_path: Path) -> None:
    body_path = tmp_path / "body.json"
    with body_path.open("wb") as sink:
        for chunk in _large_body():
            sink.write(chunk)
    server = _serve(tmp_path)
    try:
        # The body goes from another process, so that this one only measures round trips.
        sender = subprocess.Popen(
            [sys.executable, "-c", SEND, server.url + "/v1/batches", str(body_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        round_trips_s: list[float] = []
        with httpx.Client(timeout=10) as probe:
            while sender.poll() is None:
                started = time.perf_counter()
                assert probe.get(server.url + "/healthz").status_code == 200
                round_trips_s.append(time.perf_counter() - started)
                time.sleep(0.02)
        status, detail = json.loads(sender.communicate(timeout=60)[0])
        assert status == 422 and "duplicates requests[0]" in detail
        assert len(round_trips_s) > 20  # the probe ran for the whole submission
        ordered = sorted(round_trips_s)
        p95 = ordered[int(0.95 * len(ordered))]
        assert p95 < HEALTHZ_P95_BOUND_S, f"95th percentile of /healthz {p95:.3f} s of {len(ordered)}"
        assert ordered[-1] < HEALTHZ_BOUND_S, f"slowest /healthz {ordered[-1]:.3f} s of {len(ordered)}"
    finally:
        server.stop()


SEND = """
import json, sys, httpx
with open(sys.argv[2], "rb") as body:
    headers = {"content-type": "application/json"}
    response = httpx.post(sys.argv[1], content=body, headers=headers, timeout=600)
print(json.dumps([response.status_code, response.json().get("detail")]))
"""


def test_the_first_submission_records_no_stall(tmp_path: Path) -> None:
    with running_emulator(emulator_config()) as emulator:
        server = _serve(
            tmp_path,
            BACKBURNER_ANTHROPIC_API_KEY="k",
            BACKBURNER_ANTHROPIC_BASE_URL=emulator.anthropic_base_url,
            BACKBURNER_OPENAI_API_KEY="k",
            BACKBURNER_OPENAI_BASE_URL=emulator.openai_base_url,
        )
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                before = {s["id"] for s in client.get("/api/admin/watchdog").json()["recent_stalls"]}
                for provider in ("anthropic", "openai"):
                    body = {"provider": provider, "model": "m", "requests": requests_for([f"{provider}-1"])}
                    assert client.post("/v1/batches", json=body).status_code == 201
                stalls = [
                    s
                    for s in client.get("/api/admin/watchdog").json()["recent_stalls"]
                    if s["id"] not in before
                ]
            # On a loaded host a short stall may come from the host (`starved`): what must never
            # be on the loop is an import, nor a stall of a second or more.
            importing = [s for s in stalls if any("importlib._bootstrap" in frame for frame in s["stack"])]
            long = [s for s in stalls if s["duration_s"] >= 1.0]
            assert importing == [] and long == [], json.dumps(stalls, indent=1)[:3000]
            assert "batches.started" in server.log()
        finally:
            server.stop()
