"""Prometheus export: a reader for pre-aggregated metrics and the HTTP endpoint.

The endpoint serves the text exposition format from a daemon thread and binds
``127.0.0.1`` unless another address is given explicitly (``addr="0.0.0.0"``
for all IPv4 interfaces, ``"::"`` for IPv6).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable
from socketserver import TCPServer, ThreadingMixIn
from types import TracebackType
from typing import Any, ClassVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import Metric, MetricsData, ResourceMetrics, ScopeMetrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from jobqueue.errors import MetricsServerError

__all__ = ["MetricsServer", "PrometheusReader", "serve_metrics"]

log = logging.getLogger("jobqueue.telemetry")

_POLL_S = 0.1  # how often the serving thread checks for close(); bounds close() latency


class PrometheusReader(PrometheusMetricReader):
    """A ``PrometheusMetricReader`` that also exports metrics aggregated outside the SDK.

    Args:
        extra: Called on each collection; returns finished OpenTelemetry ``Metric``
            objects (e.g. from :class:`~jobqueue.telemetry.registry.HistogramTally`),
            exported under the instrumentation scope ``scope``.
        scope: Instrumentation scope of the extra metrics.
        registry: The ``prometheus_client`` registry to register with.
    """

    _live: ClassVar[weakref.WeakSet[PrometheusReader]] = weakref.WeakSet()

    def __init__(
        self,
        extra: Callable[[], Iterable[Metric | None]],
        *,
        scope: InstrumentationScope,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        if any(other._registry is registry for other in list(self._live)):
            raise ValueError(
                "another jobqueue metrics reader is registered in this prometheus_client "
                "registry, so every series would be exported twice; shutdown() the other "
                "JobMetrics first, or pass prometheus_registry=CollectorRegistry()"
            )
        super().__init__(scope_info_enabled=False, registry=registry)
        self._extra = extra
        self._scope = scope
        self._live.add(self)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Unregister from the ``prometheus_client`` registry."""
        self._live.discard(self)
        super().shutdown(timeout_millis, **kwargs)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        extra = [m for m in self._extra() if m is not None]
        if extra:
            scope = ScopeMetrics(self._scope, extra, "")
            resources = list(metrics_data.resource_metrics) if metrics_data else []
            if resources:
                first = resources[0]
                scopes = [*first.scope_metrics, scope]
                resources[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
            else:
                resources = [ResourceMetrics(Resource.get_empty(), [scope], "")]
            metrics_data = MetricsData(resources)
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Do not write one stderr line per scrape."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup of the address."""
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running Prometheus endpoint; close it with :meth:`close` or ``with``.

    Attributes:
        addr: The address the socket is bound to.
        port: The port it listens on (the chosen one when ``port=0`` was asked).
    """

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd: WSGIServer | None = httpd
        self._thread = thread
        bound = httpd.socket.getsockname()
        self.addr: str = bound[0]
        self.port: int = bound[1]

    @property
    def url(self) -> str:
        """The URL to scrape, e.g. ``http://127.0.0.1:9464/metrics``."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._httpd is None

    def close(self) -> None:
        """Stop serving, close the socket and join the thread (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        if threading.current_thread() is not self._thread:
            httpd.shutdown()
            self._thread.join()
        httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_httpd", None) is not None:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1, source=self)
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "serving"
        return f"<MetricsServer {state} {self.url}>"


def serve_metrics(
    port: int, addr: str = "127.0.0.1", *, registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` in the Prometheus text format on ``addr:port`` in a daemon thread.

    Args:
        port: TCP port; ``0`` picks a free one (read it from ``.port``).
        addr: Address to bind. Loopback by default; pass ``"0.0.0.0"`` (or ``"::"``)
            explicitly to let other machines scrape.
        registry: The ``prometheus_client`` registry to expose (default: the
            global ``REGISTRY``, where :class:`~jobqueue.telemetry.JobMetrics`
            registers unless told otherwise).

    Returns:
        The running server; call ``close()`` when done.

    Raises:
        MetricsServerError: If the port is taken, not allowed, or ``addr`` is not
            an address of this machine.
        ValueError: If ``port`` is not in 0..65535.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in 0..65535 (0 picks a free port), not {port!r}")
    try:
        family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise MetricsServerError(
            errno.EADDRNOTAVAIL, f"cannot resolve metrics address {addr!r}: {exc}"
        ) from exc
    server_class = _Server6 if family == socket.AF_INET6 else _Server
    app = make_wsgi_app(registry if registry is not None else REGISTRY)
    try:
        httpd = make_server(addr, port, app, server_class, handler_class=_QuietHandler)
    except OSError as exc:
        raise MetricsServerError(exc.errno or 0, _bind_message(exc, addr, port)) from exc
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": _POLL_S},
        name=f"jobqueue-metrics-{port}",
        daemon=True,
    )
    thread.start()
    server = MetricsServer(httpd, thread)
    log.info("serving Prometheus metrics on %s", server.url)
    return server


def _bind_message(exc: OSError, addr: str, port: int) -> str:
    where = f"{addr}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot serve metrics on {where}: port {port} is already in use; pick another "
            "port, pass port=0 for a free one, or stop the process listening there"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot serve metrics on {where}: permission denied (ports below 1024 need "
            "privileges); use a port >= 1024 such as 9464"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot serve metrics on {where}: {addr!r} is not an address of this machine; "
            "use 127.0.0.1 or one of its interface addresses"
        )
    return f"cannot serve metrics on {where}: {exc.strerror or exc}"
