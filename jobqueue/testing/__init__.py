"""Testing handlers with jobqueue: a virtual clock, a pytest plugin and assertions.

``pip install jobqueue`` registers the pytest plugin (``jobqueue.testing.plugin``): its
fixtures ``jobqueue_clock`` and ``jobqueue_service`` and its asyncio mode need no
configuration. See the Testing page of the docs.
"""

from jobqueue.testing.asserts import assert_events, assert_status, collect_events
from jobqueue.testing.clock import TestClock

__all__ = ["TestClock", "assert_events", "assert_status", "collect_events"]
