"""The Langflow layer: Langflow 1.13's ``JobQueueService`` surface over jobqueue's parts.

:mod:`jobqueue.langflow.queues` holds :class:`LangflowQueues` (the calls
``create_queue``, ``start_job``, ``get_queue_data``, ``cleanup_job``, the
``_closed`` gate, job owners) and :class:`QueuesView` (``_queues``);
:mod:`jobqueue.langflow.compat` holds :class:`LangflowCompat`, the members
``JobQueueService`` inherits.
"""

from __future__ import annotations

from jobqueue.langflow.compat import LangflowCompat
from jobqueue.langflow.queues import LangflowQueues, QueuesView

__all__ = ["LangflowCompat", "LangflowQueues", "QueuesView"]
