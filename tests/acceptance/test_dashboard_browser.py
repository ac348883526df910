"""The dashboard in a real browser: every panel shows the deployment's data, and an action works."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import insert

from backburner.auth import store as key_store
from backburner.batches.tables import llm_batches
from backburner.clock import utcnow
from backburner.db.engine import create_engine
from backburner.db.tables import DEFAULT_ORGANIZATION_ID
from backburner.settings_loader import load_settings
from tests.support.browser import ARTIFACTS, browser_errors, chromium, requested_urls
from tests.support.dashboard_data import Seeded, seed
from tests.support.processes import BackburnerProcess, free_port, wait_until

pytestmark = pytest.mark.acceptance
WAIT_S = 20


SUBMITTING_BATCH_ID = "batch-stuck-submitting"
LONG_CULPRIT = "/srv/app/" + "/".join(f"very-long-directory-name-{i}" for i in range(8)) + "/handlers.py"


async def _prepare(url: str) -> tuple[Seeded, str]:
    engine = create_engine(load_settings(flags={"database_url": url}, environ={}).settings)
    try:
        seeded = await seed(engine, n_files=12, n_batches=8)
        async with engine.begin() as conn:  # a batch our record has, its provider has not confirmed
            now = utcnow()
            await conn.execute(
                insert(llm_batches).values(
                    id=SUBMITTING_BATCH_ID,
                    organization_id=DEFAULT_ORGANIZATION_ID,
                    provider="openai",
                    model="seed-model",
                    status="submitting",
                    idempotency_key="stuck",
                    request_count=3,
                    created_at=now,
                    updated_at=now,
                    consecutive_errors=0,
                )
            )
        _, token = await key_store.create_key(
            # Pausing a job acts on the whole deployment: a deployment admin's action.
            engine,
            organization="default",
            name="ops",
            is_admin=True,
            is_deployment_admin=True,
            now=utcnow(),
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
            # Registers "Poll running LLM batches", the longest job name (seeded batches are not due).
            "BACKBURNER_ENABLE_BATCH_JOB_POLLING": "true",
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


def waiting(driver: WebDriver) -> WebDriverWait[WebDriver]:
    """A wait that reads the page again when the dashboard re-rendered an element under it."""
    return WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))


def click(driver: WebDriver, css: str) -> None:
    """Click an element, finding it again if the dashboard re-rendered it before the click."""

    def clicked(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True

    waiting(driver).until(clicked, f"could not click {css}")


def text_of(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def wait_text(driver: WebDriver, css: str, expected: str) -> None:
    waiting(driver).until(
        lambda d: any(expected in e.text for e in d.find_elements(By.CSS_SELECTOR, css)),
        f"{expected!r} never appeared in {css}",
    )


def wait_exact(driver: WebDriver, css: str, expected: str) -> None:
    waiting(driver).until(
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
        waiting(driver).until(lambda d: d.find_element(By.ID, "key-form").is_displayed())
        driver.find_element(By.ID, "key-input").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
        waiting(driver).until(lambda d: d.find_element(By.ID, "panels").is_displayed())

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
        click(driver, f'[data-batch="{seeded.running_batch_id}"] a')
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
        click(driver, '[data-job="heartbeat"] [data-action="pause-job"]')
        waiting(driver).until(lambda d: d.find_element(By.ID, "confirm").is_displayed())
        assert "Pause job" in text_of(driver, '[data-field="confirm-text"]')
        click(driver, "#confirm-ok")
        wait_text(driver, '[data-job="heartbeat"]', "(paused)")
        jobs = httpx.get(proc.url + "/api/admin/scheduler/status", headers=headers).json()["jobs"]
        assert next(job for job in jobs if job["id"] == "heartbeat")["paused"] is True
        driver.save_screenshot(str(ARTIFACTS / "dashboard-after-pause.png"))


def test_dashboard_fits_a_phone_screen(server: tuple[BackburnerProcess, Seeded, str]) -> None:
    proc, _, token = server
    with chromium(width=390, height=844) as driver:
        driver.get(proc.url + "/dashboard")
        driver.execute_script(f"sessionStorage.setItem('backburner.apiKey', {token!r}); location.reload();")
        waiting(driver).until(lambda d: d.find_element(By.ID, "panels").is_displayed())
        wait_text(driver, "#freshness", "live")
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard-phone.png"))


# Adds one stall with a long culprit path to the data the page receives: a stall cannot be
# provoked on demand in the server, and the layout must hold for the longest paths.
ADD_A_LONG_STALL = f"""
const realFetch = window.fetch.bind(window);
window.fetch = async (...args) => {{
  const response = await realFetch(...args);
  if (!String(args[0]).startsWith("/api/admin/dashboard") || !response.ok) return response;
  const data = await response.json();
  data.loop.recent_stalls = [{{started_at: new Date().toISOString(), duration_s: 0.4, cause: "blocking",
    culprit: {{function: "parse_everything_at_once", file: {LONG_CULPRIT!r}, line: 1234}}}}];
  return new Response(JSON.stringify(data), {{status: 200, headers: {{"content-type": "application/json"}}}});
}};
"""

LAYOUT = """
const panels = [...document.querySelectorAll("#panels > .panel")];
const lefts = new Set(panels.map((p) => Math.round(p.getBoundingClientRect().left)));
const overflowing = panels.filter((p) => p.scrollWidth > p.clientWidth + 1).map((p) => p.id);
const scrolled = [...document.querySelectorAll("#panels .scroll")]
  .filter((s) => s.scrollWidth > s.clientWidth + 1).map((s) => s.closest(".panel").id);
const jobLines = [...document.querySelectorAll("[data-list=jobs] tr[data-job] td:first-child")].map((td) => {
  const range = document.createRange();
  range.selectNodeContents(td.firstChild);
  return [td.textContent, range.getClientRects().length];
});
const culprit = document.querySelector("[data-list=stalls] .path");
const loop = document.querySelector("#loop").getBoundingClientRect();
const cell = culprit ? culprit.getBoundingClientRect() : null;
return {
  columns: lefts.size,
  pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
  overflowing,
  scrolled,
  jobLines,
  culpritInside: cell === null || cell.width === 0
    || (cell.left >= loop.left - 1 && cell.right <= loop.right + 1),
};
"""


@pytest.mark.parametrize(("width", "columns"), [(400, 1), (1400, 2), (1920, 3)])
def test_dashboard_reads_well_at_every_width(
    server: tuple[BackburnerProcess, Seeded, str], width: int, columns: int
) -> None:
    proc, _, token = server
    with chromium(width=width, height=1100) as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ADD_A_LONG_STALL})
        driver.get(proc.url + "/dashboard")
        driver.execute_script(f"sessionStorage.setItem('backburner.apiKey', {token!r}); location.reload();")
        waiting(driver).until(lambda d: d.find_element(By.ID, "panels").is_displayed())
        wait_text(driver, "#freshness", "live")
        wait_text(driver, '[data-job="batches.poll"]', "Poll")
        waiting(driver).until(  # in the DOM: a phone hides the culprit column
            lambda d: (
                "parse_everything_at_once"
                in d.find_element(By.CSS_SELECTOR, "[data-list=stalls]").get_attribute("textContent")
            )
        )
        # A batch stuck in `submitting` is in the list, not only in the counts.
        wait_text(driver, f'[data-batch="{SUBMITTING_BATCH_ID}"]', "submitting")
        layout = driver.execute_script(LAYOUT)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"dashboard-{width}.png"))
        assert layout["columns"] == columns, layout
        assert layout["pageOverflow"] <= 0, layout
        assert layout["overflowing"] == [], layout
        assert layout["culpritInside"], layout
        if width > 400:  # on a phone names may wrap at spaces and tables scroll in their card
            assert all(lines == 1 for _, lines in layout["jobLines"]), layout["jobLines"]
            assert layout["scrolled"] == [], layout
        # The strict policy blocks nothing the page needs (the 401 is the load before the key).
        assert [e for e in browser_errors(driver) if "401 (Unauthorized)" not in e] == []


def test_docs_load_with_no_request_leaving_the_machine(server: tuple[BackburnerProcess, Seeded, str]) -> None:
    proc, _, _ = server
    with chromium() as driver:
        driver.get(proc.url + "/docs")
        waiting(driver).until(
            lambda d: "Backburner" in d.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
        )
        waiting(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 10)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "docs.png"))
        urls = requested_urls(driver)
        assert any(url.endswith("/openapi.json") for url in urls), urls
        outside = [url for url in urls if not url.startswith((proc.url + "/", "data:", "blob:"))]
        assert outside == [], outside
        assert browser_errors(driver) == []
