"""The worker process: ``python -m jobqueue worker module:service``.

:mod:`jobqueue.worker.loader` finds and checks the service,
:mod:`jobqueue.worker.process` runs it until a signal, and
:mod:`jobqueue.worker.snapshot` writes its memory report.
"""

from __future__ import annotations

from jobqueue.worker.loader import load_service, prepare_service
from jobqueue.worker.process import Worker, run_worker

__all__ = ["Worker", "load_service", "prepare_service", "run_worker"]
