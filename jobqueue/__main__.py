"""``python -m jobqueue``: see :mod:`jobqueue.cli.main`."""

from jobqueue.cli.main import entrypoint

entrypoint()
