"""The dashboard in a real browser: every panel shows the deployment's data, and an action works."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from backburner.auth import store as key_store
from backburner.clock import utcnow
from backburner.db.engine import create_engine
from backburner.settings_loader import load_settings
from tests.support.browser import ARTIFACTS, chromium
from tests.support.dashboard_data import Seeded, seed
from tests.support.processes import BackburnerProcess, free_port, wait_until

pytestmark = pytest.mark.acceptance
WAIT_S = 20


async def _prepare(url: str) -> tuple[Seeded, str]:
    engine = create_engine(load_settings(flags={"database_url": url}, environ={}).settings)
    try:
        seeded = await seed(engine, n_files=12, n_batches=8)
        _, token = await key_store.create_key(
            engine, organization="default", name="ops", is_admin=True, now=utcnow()
        )
    finally:
        await engine.dispose()
    return seeded, token


@pytest.fixture
def server(postgres_url: str, tmp_path: Path) -> Iterator[tuple[BackburnerProcess, Seeded, str]]:
    seeded, token = asyncio.run(_prepare(postgres_url))
    port = free_port()
    proc = BackburnerProcess(
        ["serve", "--port", str(port)],
        env={
            "BACKBURNER_DATABASE_URL": postgres_url,
            "BACKBURNER_DATA_DIR": str(tmp_path / "data"),
            "BACKBURNER_AUTH_MODE": "keys",
            "BACKBURNER_SCHEDULER_HEARTBEAT_INTERVAL_SECONDS": "1",
            # The seeded files have no content: no worker may pick them up.
            "BACKBURNER_FILE_PROCESSING_WORKERS": "0",
        },
        cwd=tmp_path,
        log_path=tmp_path / "serve.log",
        port=port,
    )
    try:
        proc.wait_ready(30)
        yield proc, seeded, token
    finally:
        proc.stop()


def text_of(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def wait_text(driver: WebDriver, css: str, expected: str) -> None:
    WebDriverWait(driver, WAIT_S).until(
        lambda d: any(expected in e.text for e in d.find_elements(By.CSS_SELECTOR, css)),
        f"{expected!r} never appeared in {css}",
    )


def wait_exact(driver: WebDriver, css: str, expected: str) -> None:
    WebDriverWait(driver, WAIT_S).until(
        lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, css)] == [expected],
        f"{css} never showed exactly {expected!r}",
    )


def test_dashboard_shows_every_panel_and_pauses_a_job(server: tuple[BackburnerProcess, Seeded, str]) -> None:
    proc, seeded, token = server
    headers = {"authorization": f"Bearer {token}"}
    status = wait_until(
        lambda: (
            (r := httpx.get(proc.url + "/api/admin/scheduler/status", headers=headers)).status_code == 200
            and r.json()["leader"]
            and r.json()
        ),
        WAIT_S,
        "a leader",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as driver:
        driver.get(proc.url + "/dashboard")
        # Without a key the page asks for one, and keeps it for the browser session.
        WebDriverWait(driver, WAIT_S).until(lambda d: d.find_element(By.ID, "key-form").is_displayed())
        driver.find_element(By.ID, "key-input").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
        WebDriverWait(driver, WAIT_S).until(lambda d: d.find_element(By.ID, "panels").is_displayed())

        # Cluster: the leader and its epoch, and this instance in the list.
        wait_text(driver, '[data-field="leader"]', status["leader"]["instance_id"])
        assert text_of(driver, '[data-field="epoch"]') == str(status["leader"]["epoch"])
        wait_text(driver, "[data-list=instances] td", status["instance_id"])
        # Jobs: the heartbeat job has run.
        wait_text(driver, '[data-job="heartbeat"]', "succeeded")
        # Batches: counts by provider and status; the running ones, with a detail on click.
        # Seeded statuses go round (running, completed, failed, cancelled) over alternating providers.
        wait_exact(driver, '[data-count="anthropic running"] b', "2")
        wait_exact(driver, '[data-count="openai completed"] b', "2")
        wait_text(driver, f'[data-batch="{seeded.running_batch_id}"]', "anthropic")
        driver.find_element(By.CSS_SELECTOR, f'[data-batch="{seeded.running_batch_id}"] a').click()
        wait_text(driver, "#batch-detail", f"Batch {seeded.running_batch_id}")
        # Files: counts, progress bars of the ones in progress, recent errors with their messages.
        # Seeded statuses go round (completed, error, embedding, parsing, pending).
        wait_exact(driver, '[data-count="completed"] b', "3")
        wait_exact(driver, '[data-count="error"] b', "3")
        wait_exact(driver, '[data-count="embedding"] b', "2")
        wait_text(driver, f'[data-file="{seeded.in_progress_file_id}"]', "embedding")
        assert driver.find_elements(By.CSS_SELECTOR, "[data-list=files-in-progress] progress")
        wait_text(driver, "[data-list=file-errors]", "parse failed: corrupt section 1")
        # Event loop: its state and the lag chart.
        wait_text(driver, '[data-field="loop-state"]', "healthy")
        assert driver.find_element(By.CSS_SELECTOR, "#lag-chart polyline")
        wait_text(driver, "#freshness", "live")
        driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))

        # An action: pause the heartbeat job, after confirming.
        driver.find_element(By.CSS_SELECTOR, '[data-job="heartbeat"] [data-action="pause-job"]').click()
        WebDriverWait(driver, WAIT_S).until(lambda d: d.find_element(By.ID, "confirm").is_displayed())
        assert "Pause job" in text_of(driver, '[data-field="confirm-text"]')
        driver.find_element(By.ID, "confirm-ok").click()
        wait_text(driver, '[data-job="heartbeat"]', "(paused)")
        jobs = httpx.get(proc.url + "/api/admin/scheduler/status", headers=headers).json()["jobs"]
        assert next(job for job in jobs if job["id"] == "heartbeat")["paused"] is True
        driver.save_screenshot(str(ARTIFACTS / "dashboard-after-pause.png"))


def test_dashboard_fits_a_phone_screen(server: tuple[BackburnerProcess, Seeded, str]) -> None:
    proc, _, token = server
    with chromium(width=390, height=844) as driver:
        driver.get(proc.url + "/dashboard")
        driver.execute_script(f"sessionStorage.setItem('backburner.apiKey', {token!r}); location.reload();")
        WebDriverWait(driver, WAIT_S).until(lambda d: d.find_element(By.ID, "panels").is_displayed())
        wait_text(driver, "#freshness", "live")
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard-phone.png"))
