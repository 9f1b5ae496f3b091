"""Draw docs/img/web.png and docs/img/web-job.png from a real browser (``nox -s screenshot``).

Runs a service with a few handlers on a temporary file, serves the dashboard
with ``python -m jobqueue web --no-token`` and photographs it in headless
Chromium (Debian's ``chromium`` and ``chromedriver``, found on PATH). Needs
the web and test extras: ``pip install -e ".[web,test]"``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from jobqueue import JobContext, JobQueueService

HERE = Path(__file__).resolve().parent


async def resize(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.05 * payload["size"] / 100)
    return {"thumbnail": f"{payload['image']}.thumb.png"}


async def email(ctx: JobContext, payload: dict[str, Any]) -> str:
    await asyncio.sleep(0.1)
    if payload["to"].endswith("@invalid"):
        raise ConnectionError(f"SMTP server refused {payload['to']}")
    return "sent"


async def report(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    async def fetch() -> int:
        await asyncio.sleep(0.3)
        return 1234

    rows = await ctx.step("fetch rows", fetch)
    await ctx.step("render", lambda: asyncio.sleep(0.2))
    await ctx.sleep("wait for approval", 3600)
    return {"rows": rows}


async def crawl(ctx: JobContext, payload: dict[str, Any]) -> int:
    for page in range(1, 10_000):
        await ctx.emit("progress", {"page": page, "url": f"{payload['site']}/page/{page}"})
        await asyncio.sleep(0.15)
        await ctx.checkpoint()
    return page


def produce(path: str, ready: threading.Event, stop: threading.Event) -> None:
    async def run() -> None:
        service = JobQueueService(path, persist_events=True, poll_interval=0.05, concurrency=16)
        for fn in (resize, email, report, crawl):
            service.register(fn.__name__, fn)
        async with service:
            for i in range(24):
                await service.submit("resize", {"image": f"photo-{i}.jpg", "size": 100 + i * 20})
            for who in ("ada@example.com", "grace@example.com", "bob@invalid", "alan@example.com"):
                await service.submit("email", {"to": who, "template": "welcome"}, max_retries=0)
            await service.submit("report", {"month": "2026-11"}, session_id="finance")
            await service.submit("crawl", {"site": "https://example.com"}, session_id="crawler")
            await service.submit("crawl", {"site": "https://example.org"}, session_id="crawler")
            await service.submit("resize", {"image": "later.jpg", "size": 10}, delay=600)
            await asyncio.sleep(2.0)
            ready.set()
            await asyncio.to_thread(stop.wait)
            await service.close(drain_timeout=0)

    asyncio.run(run())


def main() -> int:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        print("needs chromium and chromedriver on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "jobs.db")
        ready, stop = threading.Event(), threading.Event()
        producer = threading.Thread(target=produce, args=(path, ready, stop))
        producer.start()
        ready.wait(30)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(  # in the file's directory: the page names it "jobs.db"
            [sys.executable, "-m", "jobqueue", "web", "--db", "jobs.db", "--port", str(port),
             "--no-token"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=tmp,
        )  # fmt: skip
        url = server.stdout.readline().strip() if server.stdout else ""
        options = Options()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,860"):
            options.add_argument(arg)
        browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        try:
            browser.get(url)
            wait = WebDriverWait(browser, 20)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")) >= 20)
            time.sleep(1.0)
            browser.save_screenshot(str(HERE / "web.png"))
            rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-status=running]")
            browser.get(f"{url}#/job/{rows[-1].get_attribute('data-id')}")
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#d-events li")) >= 12)
            browser.save_screenshot(str(HERE / "web-job.png"))
        finally:
            browser.quit()
            server.terminate()
            server.wait(10)
            stop.set()
            producer.join(30)
    print(f"wrote {HERE / 'web.png'} and {HERE / 'web-job.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
