"""Command line: ``python -m jobqueue`` (also installed as ``jobqueue``)."""
