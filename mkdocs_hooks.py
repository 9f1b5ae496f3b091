"""MkDocs hook for the docs site (``mkdocs.yml`` -> ``hooks``).

jobqueue's docstrings use Sphinx roles (``:class:`~jobqueue.errors.LockError```),
which mkdocstrings renders literally. This turns them into plain code spans
(``LockError``), keeping only the last dotted part after a ``~``, as Sphinx does.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(
    r":(?:py:)?(?:class|meth|func|mod|attr|data|exc|obj|const):<code>(~?)([^<]+)</code>"
)


def _replace(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Rewrite Sphinx roles left in the rendered API pages."""
    return _ROLE.sub(_replace, html)
