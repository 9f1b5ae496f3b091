"""Find the service a worker runs: ``module:attr`` on the command line.

:func:`load_service` imports it the way uvicorn and arq import an app;
:func:`prepare_service` applies ``--db`` and ``--concurrency`` before it opens.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

from jobqueue.errors import WorkerAppError
from jobqueue.service import JobQueueService
from jobqueue.store.connection import MEMORY

__all__ = ["load_service", "prepare_service"]

log = logging.getLogger("jobqueue.worker")


def load_service(target: str) -> JobQueueService:
    """Import ``module:attr`` and return the service it names.

    ``attr`` may be dotted (``module:app.jobs``) and may name a function taking
    no arguments that returns the service. The current directory is put on
    ``sys.path`` first, as uvicorn and arq do.

    Raises:
        WorkerAppError: the target is malformed, the module or attribute is
            missing, importing the module failed, or the object is not a
            service with handlers registered.
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
    if not isinstance(obj, JobQueueService) and callable(obj) and not isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, JobQueueService):
        raise WorkerAppError(
            target,
            f"{target} is a {type(obj).__name__}, not a JobQueueService; point to a "
            "JobQueueService instance, or to a function taking no arguments that returns one",
        )
    if not obj._handlers:
        raise WorkerAppError(
            target,
            f"{target} has no handlers registered; register them at import time with "
            f"@service.handler('name') in module {module_name!r}",
        )
    return obj


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
    if service._state != "new":
        raise WorkerAppError(
            target,
            f"{target} was already started ({service._state}); create it at import time "
            "without starting it, the worker opens and closes it",
        )
    if path is not None:
        if service._locks is not None and os.fspath(path) != service.path:
            log.warning(
                "lock_key handlers keep the locks made for %r; pass the same file to "
                "JobQueueService() and --db to lock next to --db",
                service.path,
            )
        service.path = os.fspath(path)
    elif service.path == MEMORY:
        raise WorkerAppError(
            target,
            f"{target} has no database file, so no other process can give it jobs; pass "
            "--db FILE or create it with JobQueueService('jobs.db')",
        )
    if concurrency is not None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise WorkerAppError(target, f"concurrency must be an int >= 1, got {concurrency!r}")
        service._concurrency = concurrency
