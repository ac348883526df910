"""`backburner demo`: the emulator and a server on the embedded default, a small batch for each
provider, the sample files that ship with the package, a search; then the dashboard's address
and what to look at. Ctrl-C (or SIGTERM) stops both processes and waits for them.

The two processes are real `backburner` processes, started from this one and stopped by it, so
what the demo shows is what `backburner serve` does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any

import httpx

from backburner.listen import PortUnavailable, bind

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
BATCH_TIMEOUT_S = 90.0
FILE_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.5
SAMPLES = package_files("backburner.demo") / "samples"
SEARCH_QUERY = "how is the leader chosen and its writes fenced"
MODELS = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4o-mini"}


class DemoFailed(Exception):
    pass


def _say(text: str = "") -> None:
    print(text, flush=True)


def check_free(host: str, port: int, option: str) -> None:
    try:
        bind(host, port, how_to_change=f"choose another with {option}").close()
    except PortUnavailable as exc:
        raise DemoFailed(str(exc)) from None


@contextmanager
def child(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `backburner` child process, stopped with SIGTERM (SIGKILL after STOP_TIMEOUT_S) on exit."""
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C reaches this process only, which stops the children in order.
        process = subprocess.Popen(
            [sys.executable, "-m", "backburner", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(what: str, ready: Callable[[], Any], timeout_s: float, *alive: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        for process in alive:
            if process.poll() is not None:
                raise DemoFailed(f"a process exited while waiting for {what} (status {process.returncode})")
        try:
            value = ready()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what} did not happen within {timeout_s:g} s")
        time.sleep(POLL_INTERVAL_S)


def _requests(provider: str) -> list[dict[str, Any]]:
    questions = ["What is a leader lease?", "Why fence writes with an epoch?", "What is a stall?"]
    if provider == "anthropic":
        return [
            {"custom_id": f"q{i}", "params": {"max_tokens": 64, "messages": [{"role": "user", "content": q}]}}
            for i, q in enumerate(questions)
        ]
    return [
        {"custom_id": f"q{i}", "params": {"messages": [{"role": "user", "content": q}]}}
        for i, q in enumerate(questions)
    ]


def run_demo(host: str, port: int, emulator_port: int, data_dir: Path | None) -> None:
    """Run until interrupted (KeyboardInterrupt, which stops both processes on the way out);
    DemoFailed with the reason if a step fails."""
    check_free(host, port, "--port")
    check_free(host, emulator_port, "--emulator-port")
    with ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="backburner-demo-")))
        data_dir.mkdir(parents=True, exist_ok=True)
        url = f"http://{host}:{port}"
        emulator_url = f"http://{host}:{emulator_port}"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("BACKBURNER_")}
        server_env = {
            **base_env,
            "BACKBURNER_DATA_DIR": str(data_dir / "data"),
            "BACKBURNER_AUTH_MODE": "none",
            "BACKBURNER_ANTHROPIC_API_KEY": "demo",
            "BACKBURNER_ANTHROPIC_BASE_URL": emulator_url,
            "BACKBURNER_OPENAI_API_KEY": "demo",
            "BACKBURNER_OPENAI_BASE_URL": emulator_url + "/v1",
            "BACKBURNER_ENABLE_BATCH_JOB_POLLING": "true",
            "BACKBURNER_POLL_RUNNING_LLM_BATCHES_INTERVAL_SECONDS": "5",
            "BACKBURNER_BATCH_POLL_JITTER_SECONDS": "0",
        }
        _say(f"Starting the provider emulator on {emulator_url} and Backburner on {url}")
        _say(f"(data and logs in {data_dir})")
        emulator = stack.enter_context(
            child(
                ["emulator", "--host", host, "--port", str(emulator_port), "--complete-after", "5"],
                base_env,
                data_dir / "emulator.log",
            )
        )
        server = stack.enter_context(
            child(["serve", "--host", host, "--port", str(port)], server_env, data_dir / "serve.log")
        )
        api = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        wait_for(
            "the server to be ready",
            lambda: api.get("/readyz").status_code == 200,
            READY_TIMEOUT_S,
            emulator,
            server,
        )
        _say("Ready.")
        _say()
        batches = {}
        for provider, model in MODELS.items():
            answer = api.post(
                "/v1/batches", json={"provider": provider, "model": model, "requests": _requests(provider)}
            )
            if answer.status_code != 201:
                raise DemoFailed(f"the {provider} batch was refused: {answer.status_code} {answer.text}")
            batches[provider] = answer.json()["id"]
            _say(f"Submitted a batch of 3 requests to {provider}: {batches[provider]}")
        source = api.post("/v1/sources", json={"name": "demo"}).json()["id"]
        uploaded = []
        for sample in sorted(SAMPLES.iterdir(), key=lambda entry: entry.name):
            answer = api.post(
                f"/v1/sources/{source}/files", files={"file": (sample.name, sample.read_bytes())}
            )
            if answer.status_code not in (200, 201):
                raise DemoFailed(
                    f"the upload of {sample.name} was refused: {answer.status_code} {answer.text}"
                )
            uploaded.append(answer.json()["id"])
            _say(f"Uploaded {sample.name}: {answer.json()['id']}")

        def files_done() -> bool:
            return all(api.get(f"/v1/files/{f}").json()["status"] in ("completed", "error") for f in uploaded)

        wait_for("the files to be processed", files_done, FILE_TIMEOUT_S, server)
        _say(f"All {len(uploaded)} files processed.")
        hits = api.get(f"/v1/sources/{source}/search", params={"q": SEARCH_QUERY, "k": 3}).json()["results"]
        _say()
        _say(f"Search {SEARCH_QUERY!r}:")
        for hit in hits:
            _say(f"  {hit['score']:.3f}  {hit['file_name']}: {' '.join(hit['text'].split())[:70]}…")

        def batches_done() -> bool:
            return all(
                api.get(f"/v1/batches/{b}").json()["status"]
                in ("completed", "failed", "cancelled", "expired")
                for b in batches.values()
            )

        _say()
        _say("Waiting for the batches (the emulator ends them after 5 s; the leader polls every 5 s)…")
        wait_for("the batches to end", batches_done, BATCH_TIMEOUT_S, emulator, server)
        for provider, batch_id in batches.items():
            batch = api.get(f"/v1/batches/{batch_id}").json()
            _say(f"  {provider}: {batch['status']}, {batch['counts']['succeeded']} results stored")
        _say()
        _say(f"Dashboard: {url}/dashboard")
        _say("  - Cluster: this instance leads (epoch 1); Scheduler jobs: the poller's runs;")
        _say("  - LLM batches: one completed batch per provider; Files: the samples, completed;")
        _say("  - Event loop: lag over time and any stall with the line that caused it.")
        _say(f"API docs: {url}/docs   Results: backburner batches results {batches['anthropic']} --url {url}")
        _say("Press Ctrl-C to stop.")
        while True:
            time.sleep(1)
            for process in (emulator, server):
                if process.poll() is not None:
                    raise DemoFailed(f"a process exited (status {process.returncode}); see {data_dir}")
