"""``python -m jobqueue web --db FILE``: the dashboard served on its own by uvicorn.

It binds 127.0.0.1 by default and prints a URL with a one-time token; the
browser trades it for a session cookie. A non-loopback ``--host`` needs the
token (``--no-token`` is refused there), and the ``Host`` header is checked
against the names served (against DNS rebinding). SIGINT or SIGTERM ends the
open event streams first, then the server, so it exits promptly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import secrets
import signal
import socket
from collections.abc import Iterator
from typing import Any

from jobqueue.cli.render import Output
from jobqueue.cli.worker import port_number

__all__ = ["add_web_parser", "is_loopback", "web_command"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def add_web_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add the ``web`` subcommand to the parser's subcommands ``sub``."""
    w = sub.add_parser(
        "web",
        parents=parents,
        help="serve the web dashboard until SIGINT/SIGTERM",
        description="Serve the web dashboard of a database file (needs the web extra: "
        'pip install "jobqueue[web]"). Prints a URL with a one-time sign-in token on stdout.',
    )
    w.add_argument(
        "--host", default="127.0.0.1", metavar="ADDR", help="bind address (default: 127.0.0.1)"
    )
    w.add_argument(
        "--port", type=port_number, default=8080, metavar="PORT", help="TCP port (0: a free one)"
    )
    w.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another Host header name to serve (the loopback names and --host always are)",
    )
    w.add_argument("--read-only", action="store_true", help="show jobs, never change them")
    w.add_argument(
        "--no-token",
        action="store_true",
        help="no sign-in: anyone who can reach the port gets in (loopback --host only)",
    )


def is_loopback(host: str) -> bool:
    """True for an address (or ``localhost``) that only this machine can reach."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def web_command(args: argparse.Namespace, out: Output) -> int:
    """Serve until SIGINT/SIGTERM; exit 0 then, 1 when the port is taken, 2 on bad usage."""
    if args.no_token and not is_loopback(args.host):
        out.error(
            f"--no-token with --host {args.host}: anyone on the network could change jobs; "
            "drop --no-token (sign in with the printed URL) or bind 127.0.0.1"
        )
        return EXIT_USAGE
    # The diagnosis every command gives (a damaged file, another program's, a newer
    # schema) before anything listens; the dashboard's own service migrates an older one.
    from jobqueue.store.readonly import ReadOnlyStore

    ReadOnlyStore(args.db, command="web", allow_older=True).close()
    try:
        import uvicorn

        from jobqueue.web import create_app
    except ImportError as exc:
        out.error(
            f"the dashboard needs the web extra ({exc.name} is missing): "
            'pip install "jobqueue[web]"'
        )
        return EXIT_USAGE
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        out.error(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; try another --port")
        return EXIT_FAILED
    token = None if args.no_token else secrets.token_urlsafe(24)
    hosts = None
    if is_loopback(args.host) or args.allow_host or args.host not in ("0.0.0.0", "::"):
        hosts = {*_LOOPBACK_NAMES, args.host, *args.allow_host}
    app = create_app(
        args.db,
        token=token,
        read_only=args.read_only,
        authorize=(lambda request: "full") if token is None else None,
        allowed_hosts=hosts,
    )
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    logging.getLogger("jobqueue.web").setLevel(logging.INFO)  # who changed what, on stderr
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=3, proxy_headers=False
    )
    server = _server(config)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        closing: list[asyncio.Task[None]] = []

        def stop() -> None:
            server.should_exit = True
            if not closing:  # open streams end now, so the server need not wait for them
                closing.append(loop.create_task(app.state.dashboard.hub.close()))

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn's flag)
            await asyncio.sleep(0.02)
        if server.started:
            print(url, flush=True)
            out.note("open the URL above in a browser (the token works once); Ctrl-C stops")
        await task

    asyncio.run(serve())
    return EXIT_OK


def _server(config: Any) -> Any:
    """uvicorn's server, with our signal handlers in place of its own."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # serve() put SIGINT/SIGTERM handlers on the loop: streams end first

    return Server(config)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
