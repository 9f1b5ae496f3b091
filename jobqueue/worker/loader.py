"""Find the service a worker runs: ``module:attr`` on the command line.

:func:`load_service` imports it the way uvicorn and arq import an app;
:func:`prepare_service` applies ``--db`` and ``--concurrency`` before it opens.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from typing import Any

from jobqueue.errors import WorkerAppError
from jobqueue.service import JobQueueService
from jobqueue.store.connection import MEMORY

__all__ = ["check_factory", "load_service", "prepare_service"]

log = logging.getLogger("jobqueue.worker")


def load_service(target: str) -> JobQueueService:
    """Import ``module:attr`` and return the service it names.

    ``attr`` may be dotted (``module:app.jobs``) and may name a factory: a
    function (or class, or method) of your own code taking no arguments that
    returns the service. Nothing else is called: see :func:`check_factory`.
    The current directory is put on ``sys.path`` first, as uvicorn and arq do.

    Raises:
        WorkerAppError: the target is malformed, the module or attribute is
            missing, importing the module failed, the object is neither a
            service nor a factory, the factory raised or returned something
            else, or the service has no handlers registered.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise WorkerAppError(
            target,
            f"{target!r} is not of the form module:attr; name the module and the "
            "JobQueueService in it, for example `python -m jobqueue worker myapp.jobs:service`",
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise WorkerAppError(
                target,
                f"importing {module_name!r} failed: {exc}; install the missing package "
                "in the worker's environment",
            ) from exc
        raise WorkerAppError(
            target,
            f"no module named {module_name!r} (looked in the current directory {cwd} and "
            "sys.path); run the worker from your project directory or set PYTHONPATH",
        ) from exc
    except Exception as exc:
        raise WorkerAppError(
            target,
            f"importing {module_name!r} raised {type(exc).__name__}: {exc}; fix the module "
            "(--log-level DEBUG shows the traceback)",
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = [n for n, v in vars(module).items() if isinstance(v, JobQueueService)]
            hint = f"services defined there: {', '.join(found)}" if found else "it defines none"
            raise WorkerAppError(
                target,
                f"module {module_name!r} has no attribute {attr!r} ({hint}); "
                "name the JobQueueService instance after the colon",
            ) from None
    if not isinstance(obj, JobQueueService) and callable(obj):
        check_factory(obj, target)
        try:
            obj = obj()
        except (Exception, SystemExit) as exc:  # SystemExit: a factory must not end the worker
            raise WorkerAppError(
                target,
                f"calling {target}() raised {type(exc).__name__}: {_one_line(exc)}; fix the "
                "factory (--log-level DEBUG shows the traceback)",
            ) from exc
        if not isinstance(obj, JobQueueService):
            raise WorkerAppError(
                target,
                f"{target}() returned a {type(obj).__name__}, not a JobQueueService; make it "
                "return the service, or point the worker at the JobQueueService instance",
            )
    if not isinstance(obj, JobQueueService):
        raise WorkerAppError(
            target,
            f"{target} is a {type(obj).__name__}, not a JobQueueService; point to a "
            "JobQueueService instance, or to a function taking no arguments that returns one",
        )
    if not obj.handlers:
        raise WorkerAppError(
            target,
            f"{target} has no handlers registered; register them at import time with "
            f"@service.handler('name') in module {module_name!r}",
        )
    return obj


def check_factory(obj: Any, target: str) -> None:
    """Refuse to call ``obj`` unless it is a factory of the application's own code.

    A worker target is usually typed by hand, so whatever it names must not be
    called on a guess: ``os:system`` or ``json:loads`` would fail with a
    traceback, ``os:fork`` would fork and ``sys:exit`` would end the worker
    with exit code 0. Only a plain Python function, method or class is called,
    only when it is defined outside the standard library and jobqueue itself,
    takes no required arguments and is not ``async`` (an ``async def`` is a
    handler: calling it gives a coroutine, not a service).

    Raises:
        WorkerAppError: ``obj`` is not such a factory; the message says what to name instead.
    """
    point = (
        "point the worker at the JobQueueService the handlers are registered on (for example "
        "myapp.jobs:service), or at a function taking no arguments that returns it"
    )
    func = obj.__func__ if inspect.ismethod(obj) else obj
    if isinstance(obj, type):
        kind = "class"
    elif inspect.isfunction(func):
        kind = "method" if func is not obj else "function"
    else:  # builtins, C functions, partials, instances with __call__...
        raise WorkerAppError(
            target, f"{target} is a {type(obj).__name__}, not a JobQueueService; {point}"
        )
    module = getattr(obj, "__module__", None) or ""
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in ("builtins", "jobqueue"):
        owner = "jobqueue" if top == "jobqueue" else "the standard library"
        raise WorkerAppError(
            target,
            f"{target} is a {kind} of {owner} ({module}), not a JobQueueService of your "
            f"application, so the worker does not call it; {point}",
        )
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError) as exc:
        raise WorkerAppError(
            target, f"{target} is a {kind} whose signature cannot be read ({exc}); {point}"
        ) from None
    required = [
        name
        for name, p in signature.parameters.items()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise WorkerAppError(
            target, f"{target} is a {kind} that takes arguments ({', '.join(required)}); {point}"
        )
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        raise WorkerAppError(
            target,
            f"{target} is an async function: calling it gives a coroutine, not a "
            f"JobQueueService (an async def is a handler, not a factory); {point}",
        )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:199] + "…"


def prepare_service(
    service: JobQueueService,
    *,
    path: str | os.PathLike[str] | None = None,
    concurrency: int | None = None,
    target: str = "the service",
) -> None:
    """Point a service that is not started yet at ``path`` and set its concurrency.

    Raises:
        WorkerAppError: the service was already started, or it has no database
            file and no ``path`` was given.
    """
    if service.state != "new":
        raise WorkerAppError(
            target,
            f"{target} was already started ({service.state}); create it at import time "
            "without starting it, the worker opens and closes it",
        )
    if path is None and service.path == MEMORY:
        raise WorkerAppError(
            target,
            f"{target} has no database file, so no other process can give it jobs; pass "
            "--db FILE or create it with JobQueueService('jobs.db')",
        )
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise WorkerAppError(target, f"concurrency must be an int >= 1, got {concurrency!r}")
    if path is not None and os.fspath(path) != service.path and service.locks_made:
        log.warning(
            "lock_key handlers keep the locks made for %r; pass the same file to "
            "JobQueueService() and --db to lock next to --db",
            service.path,
        )
    service.configure(path=path, concurrency=concurrency)
