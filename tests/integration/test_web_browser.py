"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver).

Three real processes: a worker running the jobs (tests/procs/_web_worker.py),
the dashboard (``python -m jobqueue web``, or a host app with it mounted at
/jobs: tests/procs/_web_host.py), and the browser. This test submits jobs
and reads their statuses through a service of its own on the same file.
Skipped, saying why, when chromium or chromedriver is not installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobQueueService

pytest.importorskip("selenium", reason="the browser tests need selenium (the test extra)")

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

PROCS = Path(__file__).resolve().parent.parent / "procs"
ROOT = PROCS.parent.parent
XSS = "<img src=x onerror=alert(1)>"

# Slow (a real Chromium and a server per test): in the whole suite (3.11), not the quick one.
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "chromium and chromedriver are not installed (apt-get install chromium "
            "chromium-driver; .ci/run installs them)"
        )
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console: CSP reports
    # The driver given by path: Selenium Manager never downloads anything.
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield drv
    finally:
        drv.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start a child and return it with the first line it prints."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line:
        proc.kill()
        raise AssertionError(f"{args} did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, line


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class Setup:
    def __init__(self, db: str, service: JobQueueService) -> None:
        self.db = db
        self.service = service
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> tuple[subprocess.Popen[str], str]:
        proc, line = spawn(*args)
        self.procs.append(proc)
        return proc, line

    def dashboard(self, port: int, *extra: str) -> tuple[subprocess.Popen[str], str]:
        return self.start("-m", "jobqueue", "web", "--db", self.db, "--port", str(port), *extra)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    db = str(tmp_path / "jobs.db")
    service = JobQueueService(db, persist_events=True, poll_interval=0.05)
    service.declare("ticker", "fail", "hold")
    async with service:
        s = Setup(db, service)
        s.start(str(PROCS / "_web_worker.py"), db)
        try:
            yield s
        finally:
            for proc in reversed(s.procs):
                stop(proc)


def wait_for(driver: WebDriver, check: Callable[[WebDriver], Any], timeout: float = 10) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(check)


def seqs(driver: WebDriver) -> list[int]:
    items = driver.find_elements(By.CSS_SELECTOR, "#d-events li")
    return [int(li.get_attribute("data-seq") or 0) for li in items]


def click(driver: WebDriver, selector: str) -> None:
    """Click the element, found again if the page redrew it in between."""
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{selector} kept being redrawn")


def status_of(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "d-status").get_attribute("data-status") or ""


async def until_status(service: JobQueueService, job_id: str, status: str) -> None:
    async with asyncio.timeout(10):
        while (await service.get(job_id)).status.value != status:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_the_list_shows_submitted_jobs_after_signing_in(
    setup: Setup, browser: WebDriver
) -> None:
    ids = [(await setup.service.submit("hold", {"seconds": 30})).id for _ in range(3)]
    _, url = setup.dashboard(free_port())
    browser.get(url)  # the one-time token buys the cookie; the URL loses the token
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 3)
    assert "token" not in browser.current_url
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
    assert [r.get_attribute("data-id") for r in rows] == ids[::-1]
    assert browser.find_element(By.ID, "mode").text == "full"
    later = await setup.service.submit("hold", {"seconds": 30})  # shows up without a reload
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"tr[data-id='{later.id}']"), 2.0)
    browser.find_element(By.NAME, "id").send_keys(ids[1][-8:])  # a short id, as shown
    click(browser, "#filters button[type=submit]")
    wait_for(browser, lambda d: d.current_url.endswith(f"#/job/{ids[1]}"), 3.0)
    wait_for(browser, lambda d: d.find_element(By.ID, "d-id").text == ids[1], 3.0)
    browser.get(url)  # the token is spent: a second use is refused
    assert "already used" in browser.page_source


async def test_events_appear_live_and_cancel_and_retry_work_from_the_page(
    setup: Setup, browser: WebDriver
) -> None:
    job = await setup.service.submit("ticker", {"n": 400, "pace": 0.02})
    _, url = setup.dashboard(free_port(), "--no-token")
    browser.get(f"{url}#/job/{job.id}")
    wait_for(browser, lambda d: len(seqs(d)) >= 5)
    first = len(seqs(browser))
    wait_for(browser, lambda d: len(seqs(d)) >= first + 10)  # still coming: live
    assert status_of(browser) == "running"

    click(browser, "#d-actions button[data-action=cancel]")
    wait_for(browser, lambda d: status_of(d) == "cancelled", timeout=1.0)
    await until_status(setup.service, job.id, "cancelled")

    click(browser, "#d-actions button[data-action=retry]")
    wait_for(browser, lambda d: status_of(d) in ("pending", "running"), timeout=1.0)
    await until_status(setup.service, job.id, "running")
    wait_for(browser, lambda d: status_of(d) == "running", timeout=3.0)
    ended = browser.find_element(By.ID, "d-runs").text  # the cancelled run, before the retry
    assert "cancelled" in ended
    await setup.service.cancel(job.id)


async def test_bulk_cancel_asks_first(setup: Setup, browser: WebDriver) -> None:
    held = [
        (await setup.service.submit("hold", {"seconds": 30}, session_id="b")).id for _ in range(3)
    ]
    other = await setup.service.submit("hold", {"seconds": 30}, session_id="c")
    _, url = setup.dashboard(free_port(), "--no-token")
    browser.get(url)
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 4)
    browser.find_element(By.NAME, "session").send_keys("b")
    click(browser, "#filters button[type=submit]")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 3)
    browser.find_element(By.ID, "bulk-cancel").click()
    assert "session = b" in browser.find_element(By.ID, "confirm-text").text
    assert {(await setup.service.get(i)).status.value for i in held} == {"running"}
    browser.find_element(By.ID, "confirm-yes").click()
    for job_id in held:
        await until_status(setup.service, job_id, "cancelled")
    assert (await setup.service.get(other.id)).status.value == "running"
    await setup.service.cancel(other.id)


async def test_restarting_the_server_mid_stream_resumes_without_gap_or_duplicate(
    setup: Setup, browser: WebDriver
) -> None:
    job = await setup.service.submit("ticker", {"n": 150, "pace": 0.02})
    port = free_port()
    server, url = setup.dashboard(port, "--no-token")
    browser.get(f"{url}#/job/{job.id}")
    wait_for(browser, lambda d: len(seqs(d)) >= 20)
    stop(server)  # SIGTERM with the stream open: it ends promptly
    setup.procs.remove(server)
    before = len(seqs(browser))
    await asyncio.sleep(0.5)
    setup.dashboard(port, "--no-token")  # the browser reconnects with Last-Event-ID
    wait_for(
        browser,
        lambda d: (
            "end"
            in [
                li.get_attribute("data-type")
                for li in d.find_elements(By.CSS_SELECTOR, "#d-events li")
            ]
        ),
        timeout=30,
    )
    got = seqs(browser)
    assert len(got) > before
    assert got == list(range(1, len(got) + 1))  # no gap, no duplicate
    assert len(got) == 151  # 150 ticks and the end


async def test_hostile_text_is_shown_as_text(setup: Setup, browser: WebDriver) -> None:
    job = await setup.service.submit("fail", {"message": XSS, "html": XSS}, session_id=XSS)
    await until_status(setup.service, job.id, "failed")
    _, url = setup.dashboard(free_port(), "--no-token")
    # Leave the page an earlier test left open (it polls a server that test stopped: a
    # refused connection logged here once), then drop what it logged.
    browser.get("about:blank")
    browser.get_log("browser")
    browser.get(url)
    wait_for(browser, lambda d: XSS in d.find_element(By.ID, "jobs").text)
    browser.get(f"{url}#/job/{job.id}")
    wait_for(browser, lambda d: XSS in d.find_element(By.ID, "d-error").text)
    assert XSS in browser.find_element(By.ID, "d-payload").text
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    await asyncio.sleep(0.3)
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (no dialog opened)
    # Nothing the page does is refused by its own CSP, and nothing failed to load.
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


async def test_mounted_at_jobs_in_a_host_app(setup: Setup, browser: WebDriver) -> None:
    await setup.service.submit("ticker", {"n": 100, "pace": 0.02})
    _, url = setup.start(str(PROCS / "_web_host.py"), setup.db, str(free_port()))
    assert url.endswith("/jobs/")
    browser.get(url)
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 1)
    assert browser.find_element(By.ID, "who").text == "tester"
    click(browser, "#jobs tbody tr")
    wait_for(browser, lambda d: len(seqs(d)) >= 5)
    assert browser.current_url.startswith(url)
    click(browser, "#d-actions button[data-action=stop]")
    wait_for(browser, lambda d: status_of(d) == "stopped", timeout=3.0)
    browser.get(url.removesuffix("jobs/"))
    assert "host app" in browser.page_source


async def test_read_only_hides_every_button(setup: Setup, browser: WebDriver) -> None:
    job = await setup.service.submit("hold", {"seconds": 30})
    _, url = setup.dashboard(free_port(), "--no-token", "--read-only")
    browser.get(f"{url}#/job/{job.id}")
    wait_for(browser, lambda d: status_of(d) == "running")
    assert browser.find_element(By.ID, "mode").text == "read-only"
    assert not browser.find_element(By.ID, "d-actions").is_displayed()
    browser.get(url)
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) == 1)
    assert not browser.find_element(By.ID, "bulk-cancel").is_displayed()
    assert not browser.find_element(By.ID, "bulk-retry").is_displayed()
    await setup.service.cancel(job.id)
