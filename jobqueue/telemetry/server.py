"""The Prometheus HTTP endpoint: ``/metrics`` in the text exposition format.

It is served from a daemon thread and binds ``127.0.0.1`` unless another
address is given explicitly (``addr="0.0.0.0"`` for all IPv4 interfaces, ``"::"``
for IPv6). Clients that connect and then send slowly or not at all cannot use up
threads: see :func:`serve_metrics`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import logging
import math
import queue
import selectors
import socket
import threading
import time
import warnings
from collections.abc import Iterable
from socketserver import TCPServer
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from jobqueue.errors import InvalidArgumentError, MetricsServerError

__all__ = ["MetricsServer", "bind_message", "serve_metrics"]

log = logging.getLogger("jobqueue.telemetry")

_POLL_S = 0.1  # how often the serving thread checks for close(); bounds close() latency


# How the endpoint holds up against clients that connect and do not finish: a
# connection costs a thread only once its request head (request line and headers)
# has fully arrived. Until then the serving thread reads it without blocking, among
# at most _MAX_WAITING others, for at most ``timeout`` seconds; then it is closed.
# Complete requests are answered by at most ``max_threads`` threads, whose sockets
# time out after ``timeout`` seconds too (a client that stops reading the response).
_MAX_WAITING = 256  # connections still sending their head; the oldest is dropped beyond
_MAX_HEAD = 65536  # bytes of request line and headers (wsgiref's request-line limit)
_QUEUED_PER_THREAD = 8  # complete requests waiting for a thread, per thread, before 503
_DEFAULT_THREADS = 4
_DEFAULT_TIMEOUT = 5.0


class _Handler(WSGIRequestHandler):
    """Answers one request whose head the serving thread has already read."""

    def __init__(self, request: socket.socket, address: Any, server: _Server, head: bytes):
        self._head = head
        super().__init__(request, address, server)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self.wfile = self.connection.makefile("wb")

    def log_message(self, format: str, *args: Any) -> None:
        """Do not write one stderr line per scrape."""

    def get_stderr(self) -> io.StringIO:
        """Where wsgiref writes a failed response's traceback: nowhere.

        A client that stops reading or goes away mid-response is its own problem,
        not the application's; _work logs it at debug level.
        """
        return io.StringIO()


@dataclasses.dataclass
class _Waiting:
    """A connection whose request head has not fully arrived."""

    address: Any
    deadline: float
    head: bytearray = dataclasses.field(default_factory=bytearray)


class _Server(WSGIServer):
    """A WSGI server with a bounded number of request threads (see the note above)."""

    request_queue_size = 128  # listen backlog: a burst of scrapers is accepted, not refused

    def __init__(self, address: tuple[str, int], *, max_threads: int, timeout: float) -> None:
        self.max_threads = max_threads
        self.request_timeout = timeout
        self._waiting: dict[socket.socket, _Waiting] = {}
        self._queue: queue.SimpleQueue[tuple[socket.socket, Any, bytes] | None] = (
            queue.SimpleQueue()
        )
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._pool_lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        # the handler class is not used this way: _work makes a _Handler per request
        super().__init__(address, WSGIRequestHandler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup of the address."""
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()

    # -- the serving thread: accept, read request heads, expire slow ones ---------------

    def serve_forever(self, poll_interval: float = _POLL_S) -> None:
        sel = selectors.DefaultSelector()
        self.socket.setblocking(False)
        sel.register(self.socket, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(poll_interval):
                    if key.fileobj is self.socket:
                        self._accept(sel)
                        continue
                    conn: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        self._read(sel, conn, key.data)
                    except Exception:  # one bad connection must not stop the endpoint
                        log.exception("metrics endpoint: reading a request failed")
                        self._drop(sel, conn)
                self._expire(sel, time.monotonic())
        finally:
            for conn in list(self._waiting):
                self._drop(sel, conn)
            sel.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the serving loop and wait until it has stopped."""
        self._stop.set()
        self._stopped.wait()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        for _ in range(64):  # then let the reads and expiry run
            try:
                conn, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: this connection is lost, not the server
                log.debug("metrics endpoint: accept failed: %s", exc)
                return
            conn.setblocking(False)
            if len(self._waiting) >= _MAX_WAITING:
                self._drop(sel, next(iter(self._waiting)))  # the oldest: most likely stuck
            waiting = _Waiting(address, time.monotonic() + self.request_timeout)
            self._waiting[conn] = waiting
            sel.register(conn, selectors.EVENT_READ, waiting)

    def _read(self, sel: selectors.BaseSelector, conn: socket.socket, waiting: _Waiting) -> None:
        try:
            data = conn.recv(8192)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed or reset it
            self._drop(sel, conn)
            return
        head = waiting.head
        head += data
        if b"\r\n\r\n" in head or b"\n\n" in head:
            sel.unregister(conn)
            del self._waiting[conn]
            self._dispatch(conn, waiting.address, bytes(head))
        elif len(head) > _MAX_HEAD:
            _reply_now(conn, b"431 Request Header Fields Too Large")
            self._drop(sel, conn)

    def _expire(self, sel: selectors.BaseSelector, now: float) -> None:
        while self._waiting:
            conn, waiting = next(iter(self._waiting.items()))  # accepted first, due first
            if waiting.deadline > now:
                return
            _reply_now(conn, b"408 Request Timeout")
            self._drop(sel, conn)

    def _drop(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        self._waiting.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)
        conn.close()

    # -- the request threads --------------------------------------------------------------

    def _dispatch(self, conn: socket.socket, address: Any, head: bytes) -> None:
        with self._pool_lock:
            if self._queue.qsize() >= self.max_threads * _QUEUED_PER_THREAD:
                _reply_now(conn, b"503 Service Unavailable")
                conn.close()
                return
            self._queue.put((conn, address, head))
            if self._queue.qsize() > self._idle and len(self._workers) < self.max_threads:
                worker = threading.Thread(
                    target=self._work,
                    name=f"jobqueue-metrics-request-{len(self._workers) + 1}",
                    daemon=True,
                )
                self._workers.append(worker)
                self._idle += 1  # counted idle until it takes its first request
                worker.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            with self._pool_lock:
                self._idle -= 1
            conn, address, head = item
            try:
                conn.setblocking(True)
                conn.settimeout(self.request_timeout)
                _Handler(conn, address, self, head)
            except Exception as exc:  # a client gone or too slow: its connection only
                log.debug("metrics endpoint: request from %s failed: %r", address, exc)
            finally:
                self.shutdown_request(conn)
                with self._pool_lock:
                    self._idle += 1

    def server_close(self) -> None:
        """Close the listening socket; the request threads end after their current request."""
        with self._pool_lock:
            workers = list(self._workers)
        for _ in workers:
            self._queue.put(None)
        super().server_close()
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(self.request_timeout + 1.0)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _reply_now(conn: socket.socket, status: bytes) -> None:
    """Best effort, never blocking: tell a client why its connection is closed."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def _only_metrics(app: WSGIApplication) -> WSGIApplication:
    """``app`` at ``/metrics``; any other path is 404 (nothing else is served here)."""

    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics":
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: the metrics are at /metrics\n"]

    return serve


class MetricsServer:
    """A running Prometheus endpoint; close it with :meth:`close` or ``with``.

    Attributes:
        addr: The address the socket is bound to.
        port: The port it listens on (the chosen one when ``port=0`` was asked).
    """

    def __init__(self, httpd: _Server, thread: threading.Thread) -> None:
        self._httpd: _Server | None = httpd
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
    port: int,
    addr: str = "127.0.0.1",
    *,
    registry: CollectorRegistry | None = None,
    max_threads: int = _DEFAULT_THREADS,
    timeout: float = _DEFAULT_TIMEOUT,
) -> MetricsServer:
    """Serve ``registry`` in the Prometheus text format at ``http://addr:port/metrics``.

    One daemon thread accepts connections and reads each request's head without
    blocking; a complete request is answered by one of at most ``max_threads``
    threads. A connection whose head has not arrived ``timeout`` seconds after
    it was accepted is closed (408), and so is the oldest such connection once
    256 are waiting; the answering threads' sockets time out after ``timeout``
    seconds as well. So clients that connect and then send slowly or not at
    all hold sockets for a while, never threads, and scrapes keep working.
    Paths other than ``/metrics`` get 404.

    Args:
        port: TCP port; ``0`` picks a free one (read it from ``.port``).
        addr: Address to bind. Loopback by default; pass ``"0.0.0.0"`` (or ``"::"``)
            explicitly to let other machines scrape.
        registry: The ``prometheus_client`` registry to expose (default: the
            global ``REGISTRY``, where :class:`~jobqueue.telemetry.JobMetrics`
            registers unless told otherwise).
        max_threads: Requests answered at once (default 4); more complete
            requests wait in line, and beyond 8 per thread get 503.
        timeout: Seconds a client has to send its request, and to take each
            part of the response (default 5).

    Returns:
        The running server; call ``close()`` when done.

    Raises:
        MetricsServerError: If the port is taken, not allowed, or ``addr`` is not
            an address of this machine.
        InvalidArgumentError: If ``port`` is not in 0..65535, ``max_threads`` is
            not a whole number >= 1 or ``timeout`` not a positive number of
            seconds (a ``ValueError``).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(
            f"port must be an integer in 0..65535 (0 picks a free port), not {port!r}"
        )
    if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
        raise InvalidArgumentError(
            f"max_threads must be a whole number >= 1 (requests answered at once), "
            f"not {max_threads!r}"
        )
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (timeout > 0 and math.isfinite(timeout))
    ):
        raise InvalidArgumentError(
            f"timeout must be a positive number of seconds (such as 5), not {timeout!r}"
        )
    try:
        family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise MetricsServerError(
            errno.EADDRNOTAVAIL, f"cannot resolve metrics address {addr!r}: {exc}"
        ) from exc
    server_class = _Server6 if family == socket.AF_INET6 else _Server
    app = make_wsgi_app(registry if registry is not None else REGISTRY)
    try:
        httpd = server_class((addr, port), max_threads=max_threads, timeout=float(timeout))
        httpd.set_app(_only_metrics(app))
    except OSError as exc:
        raise MetricsServerError(exc.errno or 0, bind_message(exc, addr, port)) from exc
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


def bind_message(exc: OSError, addr: str, port: int, *, any_port: str = "port=0") -> str:
    """Why ``addr:port`` could not be served, and what to do.

    ``any_port`` is how the caller asks for a free port: ``port=0`` in Python,
    ``--port 0`` on the command line.
    """
    where = f"{addr}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot serve metrics on {where}: port {port} is already in use; pick another "
            f"port, pass {any_port} for a free one, or stop the process listening there"
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
