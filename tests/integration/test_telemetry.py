"""Telemetry: the metric registry, the lifecycle subscriber and the Prometheus endpoint.

Everything runs for real: records go through a real ``Hooks`` bus, the
endpoint listens on a real socket and is scraped with ``urllib``, and the
text is parsed with ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import gzip
import inspect
import math
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from jobqueue.errors import JobQueueError, MetricLabelError, MetricsServerError
from jobqueue.hooks import HookKind, Hooks, Lifecycle
from jobqueue.telemetry import (
    EVENT_BUCKETS,
    JOB_BUCKETS,
    JOBQUEUE_METRICS,
    HistogramTally,
    JobMetrics,
    LabelValueCap,
    MetricRegistry,
    MetricSpec,
    MetricsServer,
    MetricType,
    Tally,
    serve_metrics,
)

K = HookKind


# --- helpers ------------------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
def metrics(registry: CollectorRegistry, hooks: Hooks) -> Iterator[JobMetrics]:
    m = JobMetrics(prometheus_registry=registry)
    m.attach(hooks)
    yield m
    m.shutdown()


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    with serve_metrics(0, registry=registry) as srv:
        yield srv


def scrape(srv: MetricsServer, *, compressed: bool = False) -> tuple[bytes, bytes]:
    """GET /metrics as Prometheus does; returns (body as sent, decoded text)."""
    headers = {"Accept": "text/plain;version=0.0.4"}
    if compressed:
        headers["Accept-Encoding"] = "gzip"
    req = urllib.request.Request(srv.url, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        body: bytes = resp.read()
        encoding = resp.headers.get("Content-Encoding")
    assert (encoding == "gzip") is compressed
    return body, gzip.decompress(body) if compressed else body


def families(srv: MetricsServer) -> dict[str, Any]:
    """Scrape and parse: Prometheus family name -> family."""
    _, text = scrape(srv)
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def samples(family: Any, suffix: str = "") -> dict[frozenset[tuple[str, str]], float]:
    """{label set: value} of the family's samples named ``family.name + suffix``."""
    want = family.name + suffix
    out: dict[frozenset[tuple[str, str]], float] = {}
    s: Sample
    for s in family.samples:
        if s.name == want:
            out[frozenset(s.labels.items())] = s.value
    return out


def L(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def run_job(
    hooks: Hooks,
    job_id: str,
    handler: str,
    status: str,
    *,
    wait_s: float = 0.02,
    run_s: float | None = 0.3,
    error_type: str | None = None,
    reason: str | None = None,
    retried: str | None = None,
) -> None:
    """Emit the records the service emits for one job (run_s=None: never started).

    ``retried``: the error type of a first attempt that failed and was retried.
    """
    hooks.emit(Lifecycle(K.SUBMITTED, job_id, handler))
    if retried is not None:
        hooks.emit(Lifecycle(K.STARTED, job_id, handler, wait_s=0.01))
        hooks.emit(Lifecycle(K.RETRYING, job_id, handler, error_type=retried))
    if run_s is not None:
        hooks.emit(Lifecycle(K.STARTED, job_id, handler, wait_s=wait_s))
    hooks.emit(
        Lifecycle(
            K.FINISHED, job_id, handler, status=status, run_s=run_s,
            error_type=error_type, reason=reason,
        )
    )  # fmt: skip


# --- the scrape: names, types, labels, values -----------------------------------


def test_scrape_reports_each_metric_with_its_type_labels_and_values(
    metrics: JobMetrics, hooks: Hooks, server: MetricsServer
) -> None:
    run_job(hooks, "a1", "email", "completed", wait_s=0.003, run_s=0.2)
    run_job(hooks, "a2", "email", "completed", wait_s=0.05, run_s=45.0)
    run_job(hooks, "b1", "resize", "failed", run_s=0.01, error_type="ValueError")
    run_job(hooks, "b2", "resize", "failed", run_s=2.0, error_type="TimeoutError", reason="timeout")
    run_job(hooks, "c1", "resize", "cancelled", run_s=None)  # cancelled while pending
    run_job(hooks, "c2", "email", "cancelled", run_s=0.5)  # cancelled while running
    # a retry: started, failed once, back to pending, then completed
    hooks.emit(Lifecycle(K.SUBMITTED, "r1", "email"))
    hooks.emit(Lifecycle(K.STARTED, "r1", "email", wait_s=0.005))
    hooks.emit(Lifecycle(K.RETRYING, "r1", "email", error_type="ConnectionError", reason="error"))
    hooks.emit(Lifecycle(K.STARTED, "r1", "email", wait_s=1.5))
    # one job still running and one still pending
    hooks.emit(Lifecycle(K.SUBMITTED, "p1", "resize"))
    hooks.emit(Lifecycle(K.SUBMITTED, "x1", "email"))
    hooks.emit(Lifecycle(K.STARTED, "x1", "email", wait_s=0.2))
    for wait in (0.0002, 0.003, 0.2):
        hooks.emit(Lifecycle(K.EVENT_CONSUMED, "x1", "email", wait_s=wait))

    fams = families(server)

    finished = fams["jobqueue_jobs_finished"]
    assert finished.type == "counter"
    assert samples(finished, "_total") == {
        L(handler="email", status="completed"): 2,
        L(handler="email", status="cancelled"): 1,
        L(handler="resize", status="failed"): 2,
        L(handler="resize", status="cancelled"): 1,
    }

    errors = fams["jobqueue_job_errors"]
    assert errors.type == "counter"
    assert samples(errors, "_total") == {
        L(handler="resize", error_type="ValueError"): 1,
        L(handler="resize", error_type="TimeoutError"): 1,
        L(handler="email", error_type="ConnectionError"): 1,  # the retried attempt
    }

    active = fams["jobqueue_jobs_active"]
    assert active.type == "gauge"  # an up-down counter is a gauge in Prometheus
    assert samples(active) == {L(handler="email"): 2, L(handler="resize"): 0}  # r1 and x1

    queue = fams["jobqueue_queue_length"]
    assert queue.type == "gauge"
    assert samples(queue) == {L(handler="email"): 0, L(handler="resize"): 1}  # p1

    wait = fams["jobqueue_job_wait_time_seconds"]
    assert wait.type == "histogram"
    assert samples(wait, "_count") == {L(handler="email"): 6, L(handler="resize"): 2}
    assert samples(wait, "_sum")[L(handler="email")] == pytest.approx(
        0.003 + 0.05 + 0.02 + 0.005 + 1.5 + 0.2
    )
    email_buckets = {
        dict(k)["le"]: v for k, v in samples(wait, "_bucket").items() if ("handler", "email") in k
    }
    assert [float(le) for le in email_buckets] == [*JOB_BUCKETS, math.inf]
    assert email_buckets["0.005"] == 2  # 0.003 and 0.005: a bound is inclusive
    assert email_buckets["0.025"] == 3
    assert email_buckets["0.5"] == 5
    assert email_buckets["2.5"] == email_buckets["+Inf"] == 6

    duration = fams["jobqueue_job_duration_seconds"]
    assert duration.type == "histogram"
    # by handler only: the status is on jobs_finished, and a status label here
    # would multiply the largest family of the scrape by four
    assert samples(duration, "_count") == {L(handler="email"): 3, L(handler="resize"): 2}
    # the job cancelled while pending never ran: no duration
    assert samples(duration, "_sum")[L(handler="email")] == pytest.approx(45.7)
    long_job = samples(duration, "_bucket")
    assert long_job[L(handler="email", le="0.5")] == 2
    assert long_job[L(handler="email", le="10.0")] == 2
    assert long_job[L(handler="email", le="60.0")] == 3
    assert long_job[L(handler="resize", le="0.025")] == 1
    assert long_job[L(handler="resize", le="2.5")] == 2

    events = fams["jobqueue_event_queue_time_seconds"]
    assert events.type == "histogram"
    assert samples(events, "_count") == {L(): 3}
    ev_buckets = samples(events, "_bucket")
    assert [float(dict(k)["le"]) for k in ev_buckets] == [*EVENT_BUCKETS, math.inf]
    assert ev_buckets[L(le="0.001")] == 1
    assert ev_buckets[L(le="0.01")] == 2
    assert ev_buckets[L(le="0.1")] == 2
    assert ev_buckets[L(le="1.0")] == 3

    cpu = fams["process_cpu_time_seconds"]
    assert cpu.type == "counter"
    assert set(samples(cpu, "_total")) == {L(cpu_mode="user"), L(cpu_mode="system")}
    assert samples(cpu, "_total")[L(cpu_mode="user")] > 0
    memory = fams["process_memory_usage_bytes"]
    assert memory.type == "gauge"
    assert samples(memory)[L()] > 1_000_000  # resident set of a Python process

    # nothing else, and no job id anywhere
    assert set(fams) == {
        "target_info",
        "jobqueue_jobs_finished",
        "jobqueue_job_errors",
        "jobqueue_jobs_active",
        "jobqueue_queue_length",
        "jobqueue_job_wait_time_seconds",
        "jobqueue_job_duration_seconds",
        "jobqueue_event_queue_time_seconds",
        "process_cpu_time_seconds",
        "process_memory_usage_bytes",
    }
    _, text = scrape(server)
    for job_id in ("a1", "b2", "r1", "x1", "p1"):
        assert f'"{job_id}"' not in text.decode()


def test_scrapes_are_cumulative_and_follow_new_records(
    metrics: JobMetrics, hooks: Hooks, server: MetricsServer
) -> None:
    run_job(hooks, "1", "h", "completed")
    first = samples(families(server)["jobqueue_jobs_finished"], "_total")
    run_job(hooks, "2", "h", "completed")
    second = samples(families(server)["jobqueue_jobs_finished"], "_total")
    assert first == {L(handler="h", status="completed"): 1}
    assert second == {L(handler="h", status="completed"): 2}


def test_queue_length_is_read_from_live_state(
    registry: CollectorRegistry, hooks: Hooks, server: MetricsServer
) -> None:
    state = {"email": 3, "resize": 0}
    with JobMetrics(prometheus_registry=registry, queue_lengths=lambda: dict(state)) as m:
        m.attach(hooks)
        hooks.emit(Lifecycle(K.SUBMITTED, "j", "email"))  # ignored: live state wins
        assert samples(families(server)["jobqueue_queue_length"]) == {
            L(handler="email"): 3,
            L(handler="resize"): 0,
        }
        state["resize"] = 7
        assert samples(families(server)["jobqueue_queue_length"])[L(handler="resize")] == 7
        m.attach(hooks, queue_lengths=lambda: {"other_source": 1})  # attach() may replace it
        assert samples(families(server)["jobqueue_queue_length"]) == {L(handler="other_source"): 1}


def test_active_jobs_count_retries_and_never_go_negative(
    metrics: JobMetrics, hooks: Hooks, server: MetricsServer
) -> None:
    hooks.emit(Lifecycle(K.STARTED, "j1", "h", wait_s=0.0))
    hooks.emit(Lifecycle(K.STARTED, "j2", "h", wait_s=0.0))
    assert samples(families(server)["jobqueue_jobs_active"]) == {L(handler="h"): 2}
    hooks.emit(Lifecycle(K.RETRYING, "j1", "h", error_type="OSError"))
    hooks.emit(Lifecycle(K.FINISHED, "j2", "h", status="completed", run_s=0.1))
    # crash recovery: a job that ran in a dead process goes back to pending here
    hooks.emit(Lifecycle(K.RETRYING, "ghost", "h", reason="crashed"))
    hooks.emit(Lifecycle(K.FINISHED, "ghost2", "h", status="failed", reason="lost_on_restart"))
    fams = families(server)
    assert samples(fams["jobqueue_jobs_active"]) == {L(handler="h"): 0}
    assert samples(fams["jobqueue_job_errors"], "_total") == {
        L(handler="h", error_type="OSError"): 1,
        L(handler="h", error_type="lost_on_restart"): 1,  # no exception: the reason
    }


def test_labels_stay_bounded(metrics: JobMetrics, hooks: Hooks, server: MetricsServer) -> None:
    for i in range(80):
        run_job(hooks, f"e{i}", "h", "failed", error_type=f"Error{i}")
    run_job(hooks, "weird", None, "paused", run_s=0.1)  # type: ignore[arg-type]
    fams = families(server)
    errors = samples(fams["jobqueue_job_errors"], "_total")
    assert len(errors) == 51
    assert errors[L(handler="h", error_type="other")] == 30
    finished = samples(fams["jobqueue_jobs_finished"], "_total")
    assert finished[L(handler="unnamed", status="other")] == 1


def test_a_scrape_stays_small_after_10k_jobs(
    metrics: JobMetrics, hooks: Hooks, server: MetricsServer
) -> None:
    handlers = ("email", "resize", "report")
    statuses = ("completed", "failed", "cancelled", "stopped")
    errors = ("ValueError", "TimeoutError", "KeyError")

    def run(start: int, stop: int) -> None:
        for i in range(start, stop):
            job_id, handler, status = f"job-{i:06d}", handlers[i % 3], statuses[(i // 5) % 4]
            error = errors[(i // 20) % 3]
            run_job(
                hooks, job_id, handler, status,
                wait_s=(i % 97) / 10, run_s=(i % 89) ** 2 / 10,  # 0 .. 9.6 s and 0 .. 774 s
                error_type=error if status == "failed" else None,
                retried=error if i % 7 == 0 else None,
            )  # fmt: skip
            hooks.emit(Lifecycle(K.EVENT_CONSUMED, wait_s=(i % 13) / 1000))

    run(0, 1_000)
    _, text_1k = scrape(server)
    run(1_000, 10_000)
    wire, text = scrape(server, compressed=True)
    fams = {f.name: f for f in text_string_to_metric_families(text.decode())}
    finished = samples(fams["jobqueue_jobs_finished"], "_total")
    assert sum(finished.values()) == 10_000
    assert len(finished) == 12  # every handler x status
    assert len(samples(fams["jobqueue_job_errors"], "_total")) == 9  # every handler x error
    for name in ("jobqueue_job_wait_time_seconds", "jobqueue_job_duration_seconds"):
        assert len(samples(fams[name], "_count")) == 3  # one series per handler
        assert len(samples(fams[name], "_bucket")) == 3 * (len(JOB_BUCKETS) + 1)
    assert samples(fams["jobqueue_event_queue_time_seconds"], "_count") == {L(): 10_000}
    for name in ("jobqueue_queue_length", "jobqueue_jobs_active"):
        assert samples(fams[name]) == {L(handler=h): 0 for h in handlers}

    # the plain text exposition stays under 10 KiB (gzip, which Prometheus asks
    # for, sends about a tenth of it) ...
    assert len(text) < 10 * 1024, len(text)
    assert len(wire) < len(text) / 4, len(wire)

    # ... and does not grow with the number of jobs: the same series as at 1,000
    def series(t: bytes) -> list[str]:
        return [line.rsplit(" ", 1)[0] for line in t.decode().splitlines()]

    assert series(text) == series(text_1k)
    assert "job-0" not in text.decode()


# --- the endpoint -------------------------------------------------------------------


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError as exc:
        refused = exc.errno in (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH)
        if not refused:
            raise
        return True


def _non_loopback_ipv4() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP connect: picks a route, sends nothing
        except OSError:
            return None
        ip: str = s.getsockname()[0]
    return None if ip.startswith("127.") else ip


def test_endpoint_listens_on_loopback_only_by_default(server: MetricsServer) -> None:
    assert server.addr == "127.0.0.1"
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    scrape(server)
    assert _refused("127.0.0.2", server.port)  # another loopback address: not bound
    ip = _non_loopback_ipv4()
    if ip is not None:
        assert _refused(ip, server.port)


def test_all_interfaces_only_when_asked(registry: CollectorRegistry) -> None:
    with serve_metrics(0, "0.0.0.0", registry=registry) as srv:
        assert srv.addr == "0.0.0.0"
        assert not _refused("127.0.0.2", srv.port)
        ip = _non_loopback_ipv4()
        if ip is not None:
            assert not _refused(ip, srv.port)


def test_a_taken_port_gives_a_typed_error(registry: CollectorRegistry) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(MetricsServerError) as info:
            serve_metrics(port, registry=registry)
    err = info.value
    assert isinstance(err, JobQueueError)
    assert isinstance(err, OSError)
    assert err.errno == errno.EADDRINUSE
    assert f"port {port} is already in use" in str(err)
    assert "port=0" in str(err)


def test_other_bind_failures_are_typed(registry: CollectorRegistry) -> None:
    with pytest.raises(MetricsServerError, match="not an address of this machine"):
        serve_metrics(0, "192.0.2.123", registry=registry)  # TEST-NET: never ours
    for bad in (-1, 65536, 1.5, True, "9464"):
        with pytest.raises(ValueError, match=r"0\.\.65535"):
            serve_metrics(bad, registry=registry)  # type: ignore[arg-type]


def test_close_releases_the_port_and_joins_the_thread(registry: CollectorRegistry) -> None:
    srv = serve_metrics(0, registry=registry)
    port, thread = srv.port, srv._thread
    assert thread.daemon
    assert thread.is_alive()
    srv.close()
    srv.close()  # idempotent
    assert srv.closed
    assert not thread.is_alive()
    assert _refused("127.0.0.1", port)
    assert "closed" in repr(srv)
    with serve_metrics(port, registry=registry) as again:  # the port is free again
        assert again.port == port


def test_unclosed_server_warns(registry: CollectorRegistry) -> None:
    servers = [serve_metrics(0, registry=registry)]
    thread = servers[0]._thread
    with pytest.warns(ResourceWarning, match="unclosed <MetricsServer"):
        servers.clear()  # the last reference goes: __del__ warns, then closes it
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_endpoint_serves_gzip_and_the_default_registry(hooks: Hooks) -> None:
    with JobMetrics() as m, serve_metrics(0) as srv:  # both default to the global REGISTRY
        m.attach(hooks)
        run_job(hooks, "1", "h", "completed")
        wire, text = scrape(srv, compressed=True)
        assert len(wire) < len(text)
        assert b'jobqueue_jobs_finished_total{handler="h",status="completed"} 1.0' in text
    assert b"jobqueue_" not in generate_latest(REGISTRY)  # shutdown unregistered it


# --- JobMetrics lifecycle -----------------------------------------------------------


def test_shutdown_unregisters_so_instances_do_not_collide(hooks: Hooks) -> None:
    for _ in range(3):  # without unregistering, the second would duplicate every series
        m = JobMetrics()
        m.attach(hooks)
        run_job(hooks, "1", "h", "completed")
        text = generate_latest(REGISTRY).decode()
        assert text.count("# TYPE jobqueue_jobs_finished_total counter") == 1
        m.shutdown()
        m.shutdown()  # idempotent
        assert not hooks  # detached
    with pytest.raises(RuntimeError, match="shut down"):
        m.attach(hooks)


def test_two_live_instances_on_one_registry_are_refused(registry: CollectorRegistry) -> None:
    with JobMetrics(prometheus_registry=registry):
        with pytest.raises(ValueError, match="exported twice"):
            JobMetrics(prometheus_registry=registry)
        with JobMetrics(prometheus_registry=CollectorRegistry()):  # another registry: fine
            pass
    with JobMetrics(prometheus_registry=registry):  # the first one was shut down
        pass


def test_detach_stops_recording(metrics: JobMetrics, hooks: Hooks, server: MetricsServer) -> None:
    run_job(hooks, "1", "h", "completed")
    metrics.detach()
    metrics.detach()
    assert not hooks  # the bus is falsy again: emit sites skip building records
    run_job(hooks, "2", "h", "completed")
    assert samples(families(server)["jobqueue_jobs_finished"], "_total") == {
        L(handler="h", status="completed"): 1
    }
    metrics.attach(hooks)
    metrics.attach(hooks)  # re-attaching replaces, never doubles
    run_job(hooks, "3", "h", "completed")
    assert samples(families(server)["jobqueue_jobs_finished"], "_total") == {
        L(handler="h", status="completed"): 2
    }


def test_works_with_a_given_meter_provider(hooks: Hooks) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    m = JobMetrics(provider)
    assert m.prometheus_registry is None
    m.attach(hooks)
    run_job(hooks, "1", "h", "failed", run_s=0.3, error_type="ValueError")
    data = reader.get_metrics_data()
    assert data is not None
    got = {
        metric.name: metric
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert got["jobqueue.job.duration"].unit == "s"
    point: Any = got["jobqueue.job.duration"].data.data_points[0]
    assert tuple(point.explicit_bounds) == JOB_BUCKETS  # the advisory boundaries
    assert dict(point.attributes) == {"handler": "h"}
    errors: Any = got["jobqueue.job.errors"].data.data_points[0]
    assert errors.value == 1
    m.shutdown()
    provider.shutdown()  # ours to shut down, not JobMetrics'


# --- the registry -----------------------------------------------------------------


def test_recording_with_wrong_labels_raises_metric_label_error() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    reg = MetricRegistry(
        [
            MetricSpec("app.jobs.done", "done", "{job}", MetricType.COUNTER,
                       frozenset({"handler"}), frozenset({"status"})),
            MetricSpec("app.job.time", "time", "s", MetricType.HISTOGRAM, frozenset({"handler"}),
                       buckets=(0.1, 1.0)),
        ]
    )  # fmt: skip
    bound = reg.bind(provider.get_meter("test"))
    bound.add("app.jobs.done", 1, {"handler": "h"})
    bound.add("app.jobs.done", 1, {"handler": "h", "status": "completed"})
    bound.record("app.job.time", 0.5, {"handler": "h"})

    with pytest.raises(MetricLabelError) as info:
        bound.add("app.jobs.done", 1, {"status": "completed"})
    msg = str(info.value)
    assert "'app.jobs.done'" in msg
    assert "missing label(s) ['handler']" in msg
    assert "mandatory labels ['handler']" in msg
    assert "optional labels ['status']" in msg
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, JobQueueError)

    with pytest.raises(MetricLabelError, match=r"unknown label\(s\) \['job_id'\]"):
        bound.record("app.job.time", 0.5, {"handler": "h", "job_id": "123"})
    with pytest.raises(MetricLabelError, match=r"missing label\(s\) \['handler'\] and unknown"):
        bound.record("app.job.time", 0.5, {"queue": "q"})
    with pytest.raises(TypeError, match="histogram"):
        bound.add("app.job.time", 1, {"handler": "h"})
    with pytest.raises(TypeError, match="not a histogram"):
        bound.record("app.jobs.done", 1, {"handler": "h"})
    with pytest.raises(KeyError, match=r"app\.nope"):
        bound.add("app.nope", 1, {})
    data = reader.get_metrics_data()
    assert data is not None
    points: Any = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert sum(p.value for p in points) == 2  # the failed recordings were not made
    provider.shutdown()


def test_definitions_are_checked() -> None:
    def spec(name: str = "app.x", **kw: Any) -> MetricSpec:
        args: dict[str, Any] = {"description": "d", "unit": "s", "type": MetricType.COUNTER}
        return MetricSpec(name, **(args | kw))

    for bad_name in ("jobs", "App.jobs", "app.jobs_total", "app.time_seconds", "app..x"):
        with pytest.raises(ValueError, match="dotted lowercase"):
            spec(bad_name)
    with pytest.raises(ValueError, match="needs a unit"):
        spec(unit="")
    for label in ("job_id", "payload", "lock_key"):
        with pytest.raises(ValueError, match="one series per job"):
            spec(mandatory=frozenset({label}))
    with pytest.raises(ValueError, match="both mandatory and optional"):
        spec(mandatory=frozenset({"a"}), optional=frozenset({"a"}))
    with pytest.raises(ValueError, match="only histograms"):
        spec(buckets=(1.0,))
    with pytest.raises(ValueError, match="strictly increasing"):
        spec(type=MetricType.HISTOGRAM, buckets=(1.0, 0.5))
    reg = MetricRegistry([spec()])
    with pytest.raises(ValueError, match="already defined"):
        reg.define(spec())
    with pytest.raises(KeyError, match=r"app\.y"):
        reg["app.y"]


def test_jobqueue_metric_names_follow_opentelemetry_conventions() -> None:
    names = {s.name: s for s in JOBQUEUE_METRICS}
    assert set(names) == {
        "jobqueue.queue.length",
        "jobqueue.jobs.active",
        "jobqueue.job.wait_time",
        "jobqueue.job.duration",
        "jobqueue.jobs.finished",
        "jobqueue.job.errors",
        "jobqueue.event.queue_time",
        "jobqueue.jobs",  # read from the database file (jobqueue metrics)
        "jobqueue.queue.oldest_age",
        "process.cpu.time",
        "process.memory.usage",
    }
    for s in JOBQUEUE_METRICS:
        assert s.labels <= {"handler", "status", "error_type", "cpu.mode"}
        assert (s.buckets is not None) == (s.type is MetricType.HISTOGRAM)
    assert names["jobqueue.job.duration"].unit == "s"
    assert names["process.memory.usage"].unit == "By"
    views = JOBQUEUE_METRICS.views("jobqueue")
    assert len(views) == len(names)


def test_tally_and_label_value_cap() -> None:
    spec = JOBQUEUE_METRICS["jobqueue.jobs.finished"]
    with pytest.raises(MetricLabelError, match="missing"):
        Tally(spec, ("handler",))
    with pytest.raises(MetricLabelError, match="unknown"):
        Tally(spec, ("handler", "status", "job_id"))
    tally = Tally(spec, ("handler", "status"))
    tally.add(("h", "completed"))
    tally.add(("h", "completed"), 2)
    with pytest.raises(MetricLabelError, match="got 1 label values"):
        tally.add(("h",))
    assert tally.observe() == [(3, {"handler": "h", "status": "completed"})]

    cap = LabelValueCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]
    with pytest.raises(ValueError, match="at least 1"):
        LabelValueCap(0)


def test_a_failing_live_state_source_does_not_break_the_scrape(
    registry: CollectorRegistry, hooks: Hooks, server: MetricsServer, caplog: Any
) -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("boom")

    with JobMetrics(prometheus_registry=registry, queue_lengths=broken) as m:
        m.attach(hooks)
        run_job(hooks, "1", "h", "completed")
        fams = families(server)
    assert "jobqueue_queue_length" not in fams
    assert samples(fams["jobqueue_jobs_finished"], "_total") == {
        L(handler="h", status="completed"): 1
    }


# --- end to end, with the service -------------------------------------------------


async def test_end_to_end_with_the_service(tmp_path: Any, registry: CollectorRegistry) -> None:
    from jobqueue.errors import JobCancelledError, JobFailedError
    from jobqueue.service import JobQueueService

    metrics = JobMetrics(prometheus_registry=registry)
    opts: dict[str, Any] = {"concurrency": 4, "retry_backoff": 0.01}
    if "metrics" in inspect.signature(JobQueueService).parameters:
        opts["metrics"] = metrics
    never, slow_started = asyncio.Event(), asyncio.Event()
    async with JobQueueService(str(tmp_path / "jobs.db"), **opts) as svc:
        if "metrics" not in opts:
            metrics.attach(svc.hooks)

        @svc.handler("ok")
        async def ok(ctx: Any, payload: Any) -> Any:
            return payload["x"]

        @svc.handler("stream")
        async def stream(ctx: Any, payload: Any) -> None:
            for i in range(3):
                ctx.events.on_token(data={"token": i})
                await asyncio.sleep(0.01)

        @svc.handler("boom")
        async def boom(ctx: Any, payload: Any) -> None:
            raise ValueError("bad input")

        @svc.handler("slow")
        async def slow(ctx: Any, payload: Any) -> None:
            if payload.get("signal"):
                slow_started.set()
            await never.wait()

        streamed = await svc.submit("stream", {})
        events = [event async for event in svc.events(streamed.id)]
        assert len(events) == 4  # three tokens and the end
        for i in range(3):
            assert await svc.wait((await svc.submit("ok", {"x": i})).id) == i
        failed = await svc.submit("boom", {}, max_retries=1)
        timed_out = await svc.submit("slow", {}, timeout=0.05)
        running = await svc.submit("slow", {"signal": True})
        pending = await svc.submit("slow", {}, delay=3600)
        for job_id in (failed.id, timed_out.id):
            with pytest.raises(JobFailedError):
                await svc.wait(job_id, timeout=10)
        await asyncio.wait_for(slow_started.wait(), 10)
        with serve_metrics(0, registry=registry) as server:  # read from the live runner
            mid = await asyncio.to_thread(families, server)
        assert samples(mid["jobqueue_jobs_active"])[L(handler="slow")] == 1
        for job_id in (running.id, pending.id):
            await svc.cancel(job_id)
            with pytest.raises(JobCancelledError):
                await svc.wait(job_id, timeout=10)

        with serve_metrics(0, registry=registry) as server:
            fams = await asyncio.to_thread(families, server)
    metrics.shutdown()

    assert samples(fams["jobqueue_jobs_finished"], "_total") == {
        L(handler="stream", status="completed"): 1,
        L(handler="ok", status="completed"): 3,
        L(handler="boom", status="failed"): 1,
        L(handler="slow", status="failed"): 1,
        L(handler="slow", status="cancelled"): 2,
    }
    assert samples(fams["jobqueue_job_errors"], "_total") == {
        L(handler="boom", error_type="ValueError"): 2,  # the retried attempt and the last one
        L(handler="slow", error_type="TimeoutError"): 1,
    }
    assert set(samples(fams["jobqueue_jobs_active"]).values()) == {0}
    assert set(samples(fams["jobqueue_queue_length"]).values()) == {0}
    wait = fams["jobqueue_job_wait_time_seconds"]
    assert samples(wait, "_count") == {
        L(handler="stream"): 1,
        L(handler="ok"): 3,
        L(handler="boom"): 2,
        L(handler="slow"): 2,  # the delayed job never started
    }
    assert 0 <= samples(wait, "_sum")[L(handler="boom")] < 5  # a retry waits from its run_at
    duration = fams["jobqueue_job_duration_seconds"]
    counts = samples(duration, "_count")
    assert counts == {
        L(handler="stream"): 1,
        L(handler="ok"): 3,
        L(handler="boom"): 1,  # the last attempt: a retried one does not finish
        L(handler="slow"): 2,  # the timed-out one and the one cancelled while running
    }
    sums = samples(duration, "_sum")
    assert sums[L(handler="stream")] >= 0.03  # three 10 ms sleeps
    assert 0.05 <= sums[L(handler="slow")] < 10  # the 50 ms timeout, then a cancel
    assert samples(fams["jobqueue_event_queue_time_seconds"], "_count")[L()] >= 4
    assert samples(fams["process_cpu_time_seconds"], "_total")[L(cpu_mode="user")] > 0


@pytest.mark.slow
async def test_queue_length_reads_the_services_live_pending_counts(
    tmp_path: Any, registry: CollectorRegistry
) -> None:
    from jobqueue.service import JobQueueService

    metrics = JobMetrics(prometheus_registry=registry)
    release, all_started, running = asyncio.Event(), asyncio.Event(), [0]
    async with JobQueueService(str(tmp_path / "jobs.db"), metrics=metrics) as svc:

        @svc.handler("email")
        async def email(ctx: Any, payload: Any) -> None:
            running[0] += 1
            if running[0] == 3:
                all_started.set()
            await release.wait()

        @svc.handler("resize")
        async def resize(ctx: Any, payload: Any) -> None:
            return None

        with serve_metrics(0, registry=registry) as server:

            async def scrape_now() -> dict[str, Any]:
                return await asyncio.to_thread(families, server)

            delayed = [await svc.submit("email", {"i": i}, delay=2.0) for i in range(3)]
            delayed += [await svc.submit("resize", {"i": i}, delay=2.0) for i in range(2)]
            fams = await scrape_now()
            # nothing has run: the gauge is the service's live count, not a tally
            assert samples(fams["jobqueue_queue_length"]) == {
                L(handler="email"): 3,
                L(handler="resize"): 2,
            }
            assert "jobqueue_jobs_finished" not in fams

            for job in delayed[3:]:
                await svc.wait(job.id, timeout=20)
            await asyncio.wait_for(all_started.wait(), 20)  # the email jobs run and block
            fams = await scrape_now()
            assert samples(fams["jobqueue_queue_length"]) == {
                L(handler="email"): 0,
                L(handler="resize"): 0,
            }
            assert samples(fams["jobqueue_jobs_active"]) == {
                L(handler="email"): 3,
                L(handler="resize"): 0,
            }

            release.set()
            for job in delayed[:3]:
                await svc.wait(job.id, timeout=20)
            fams = await scrape_now()
            assert set(samples(fams["jobqueue_queue_length"]).values()) == {0}
            assert set(samples(fams["jobqueue_jobs_active"]).values()) == {0}
            assert samples(fams["jobqueue_jobs_finished"], "_total") == {
                L(handler="email", status="completed"): 3,
                L(handler="resize", status="completed"): 2,
            }
            wait = samples(fams["jobqueue_job_wait_time_seconds"], "_sum")
            assert all(0 <= w < 5 * 2 for w in wait.values())  # waits count from run_at
    metrics.shutdown()


def test_scrapes_from_another_thread_while_recording_lose_nothing(
    metrics: JobMetrics, hooks: Hooks, registry: CollectorRegistry
) -> None:
    # the loop thread writes the aggregates while the scraping thread reads
    # copies of them: a scrape must never see a counter go back or lose a record
    stop, scraped = threading.Event(), threading.Event()
    seen: list[float] = []

    def scraper() -> None:
        while not stop.is_set():
            text = generate_latest(registry).decode()
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            if "jobqueue_jobs_finished" in fams:
                seen.append(sum(samples(fams["jobqueue_jobs_finished"], "_total").values()))
                # Only a scrape that saw the counter counts: one taken before the first
                # record could otherwise answer the first wait below.
                scraped.set()

    thread = threading.Thread(target=scraper)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: reads and writes interleave
    thread.start()
    try:
        for i in range(5_000):
            run_job(hooks, f"j{i}", f"h{i % 3}", "completed", retried="E" if i % 50 == 0 else None)
            if i % 500 == 499:  # and at least one scrape per 500 jobs
                assert scraped.wait(10)
                scraped.clear()
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert len(seen) >= 10
    assert seen == sorted(seen)  # a counter never goes back
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert sum(samples(fams["jobqueue_jobs_finished"], "_total").values()) == 5_000
    assert sum(samples(fams["jobqueue_job_wait_time_seconds"], "_count").values()) == 5_100
    assert sum(samples(fams["jobqueue_job_errors"], "_total").values()) == 100
    assert set(samples(fams["jobqueue_jobs_active"]).values()) == {0}
    assert set(samples(fams["jobqueue_queue_length"]).values()) == {0}


def test_a_record_that_cannot_be_recorded_is_logged_and_skipped(
    metrics: JobMetrics, hooks: Hooks, server: MetricsServer, caplog: Any
) -> None:
    run_job(hooks, "1", "h", "completed")
    hooks.emit(Lifecycle(K.STARTED, "2", ["not", "hashable"], wait_s=0.1))  # type: ignore[arg-type]
    run_job(hooks, "3", "h", "completed")
    assert samples(families(server)["jobqueue_jobs_finished"], "_total") == {
        L(handler="h", status="completed"): 2
    }
    assert "lifecycle subscriber" in caplog.text  # the bus logs it; jobs go on


def test_histogram_tally_matches_the_sdk_histogram() -> None:
    values = [0.0, 0.001, 0.005, 0.0051, 0.025, 0.02, 0.3, 2.5, 7.5, 60.0, 300.0, 301.0, 1e4]
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    spec = JOBQUEUE_METRICS["jobqueue.job.duration"]
    sdk = provider.get_meter("test").create_histogram(
        spec.name, spec.unit, explicit_bucket_boundaries_advisory=spec.buckets
    )
    tally = HistogramTally(spec, ("handler",))
    assert tally.to_metric() is None
    for v in values:
        sdk.record(v, {"handler": "h"})
        tally.record(("h",), v)
    data = reader.get_metrics_data()
    assert data is not None
    expected: Any = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0]
    metric = tally.to_metric()
    assert metric is not None
    assert (metric.name, metric.unit) == (spec.name, "s")
    got: Any = metric.data.data_points[0]
    for field in ("attributes", "count", "sum", "min", "max"):
        assert getattr(got, field) == getattr(expected, field), field
    assert list(got.bucket_counts) == list(expected.bucket_counts)
    assert list(got.explicit_bounds) == list(expected.explicit_bounds)
    with pytest.raises(MetricLabelError, match="got 2 label values"):
        tally.record(("h", "completed"), 1.0)
    with pytest.raises(ValueError, match="not a histogram"):
        HistogramTally(JOBQUEUE_METRICS["jobqueue.jobs.finished"])
    provider.shutdown()


async def test_failed_open_releases_the_metrics_collector(tmp_path) -> None:
    """A service whose file cannot be opened must not leave its reader registered."""
    from jobqueue import JobQueueService
    from jobqueue.errors import StoreError

    bad = tmp_path / "not-a-db.db"
    bad.write_bytes(b"this is not a SQLite database, just text" * 100)
    before = set(REGISTRY._collector_to_names)
    svc = JobQueueService(bad, metrics=True)
    with pytest.raises(StoreError):
        await svc.__aenter__()
    assert set(REGISTRY._collector_to_names) == before
    good = JobQueueService(tmp_path / "ok.db", metrics=True)  # the next one can register
    async with good:
        assert good.metrics is not None
