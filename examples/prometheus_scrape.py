"""Prometheus scrape: run jobs with metrics on, serve them, scrape them like Prometheus does.

The service records OpenTelemetry metrics (``metrics=True``) and
``serve_metrics`` exposes them in the Prometheus text format on 127.0.0.1.
The example runs a few jobs (some fail, one is retried), fetches
``/metrics`` over HTTP, parses it with ``prometheus_client``'s own parser (as
Prometheus would read it) and prints the series, then the scrape config
that would collect them.

Run: python examples/prometheus_scrape.py
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

try:
    from jobqueue import JobContext, JobFailedError, JobQueueService
    from jobqueue.telemetry import serve_metrics
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jobqueue import JobContext, JobFailedError, JobQueueService
    from jobqueue.telemetry import serve_metrics

SCRAPE_CONFIG = """\
scrape_configs:
  - job_name: jobqueue
    scrape_interval: 15s
    static_configs:
      - targets: ["{target}"]
"""


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def main(db: Path) -> None:
    async with JobQueueService(db, metrics=True, retry_backoff=0) as service:

        @service.handler("resize")
        async def resize(ctx: JobContext, payload: dict[str, Any]) -> dict[str, int]:
            await asyncio.sleep(0.01)
            if payload["width"] <= 0:
                raise ValueError("width must be positive")
            if payload.get("flaky") and ctx.attempt == 0:
                raise ConnectionError("storage hiccup")
            return {"width": payload["width"] // 2}

        jobs = [await service.submit("resize", {"width": w}) for w in (640, 800, 1024, -1)]
        jobs.append(await service.submit("resize", {"width": 320, "flaky": True}, max_retries=1))
        for job in jobs:
            with contextlib.suppress(JobFailedError):  # the -1 job fails on purpose
                await service.wait(job.id, timeout=30)
        await service.submit("resize", {"width": 100}, delay=3600)  # stays pending

        # Port 0 picks a free port; a real app would use a fixed one, such as 9464.
        assert service.metrics is not None
        registry = service.metrics.prometheus_registry
        with serve_metrics(0, registry=registry) as server:
            text = await asyncio.to_thread(scrape, server.url)  # an HTTP GET, as Prometheus does
            target = f"127.0.0.1:{server.port}"
    print(f"scraped {server.url}: {len(text.splitlines())} lines")

    wanted = (
        "jobqueue_queue_length",
        "jobqueue_jobs_finished",
        "jobqueue_job_errors",
        "jobqueue_job_duration_seconds",
    )
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        print(f"{family.name} ({family.type}): {family.documentation}")
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue  # histogram buckets: one line per bound, skipped here
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            print(f"  {sample.name}{{{labels}}} {sample.value:g}")
    print("prometheus.yml:")
    print(SCRAPE_CONFIG.format(target=target), end="")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp) / "jobs.db"))
