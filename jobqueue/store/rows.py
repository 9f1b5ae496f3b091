"""Rows read by column name: the cursor every store module reads through."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

__all__ = ["by_name", "column", "getter", "getter_of"]


def by_name(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor of ``conn`` whose rows are :class:`sqlite3.Row`, read by column name.

    Set per cursor, not on the connection: the connection is shared, and its
    other readers (and tests) get plain tuples.
    """
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    return cur


def column(cur: sqlite3.Cursor, name: str) -> int:
    """The position of the column ``name`` in the result of ``cur``'s statement.

    Raises:
        KeyError: the statement has no column of that name.
    """
    for i, d in enumerate(cur.description or ()):
        if d[0] == name:
            return i
    raise KeyError(name)


def getter(cur: sqlite3.Cursor, *names: str) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A function of a row of ``cur`` (a plain tuple) returning the named columns, in order.

    The columns are found by name in the cursor's description, once per
    statement; reading them is then as fast as indexing (hot paths: the claim).

    Raises:
        KeyError: the statement has no column of one of those names.
    """
    idx = [column(cur, n) for n in names]
    if len(idx) == 1:  # itemgetter of one index returns the item, not a tuple
        (i,) = idx
        return lambda row: (row[i],)
    get: Callable[[Sequence[Any]], tuple[Any, ...]] = itemgetter(*idx)
    return get


_GETTERS: dict[tuple[str, tuple[str, ...]], Callable[[Sequence[Any]], tuple[Any, ...]]] = {}


def getter_of(
    sql: str, cur: sqlite3.Cursor, *names: str
) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """:func:`getter` for ``cur``, which ran ``sql``; found once per statement text.

    A statement's columns are the same every time it runs, so the positions
    found by name the first time are kept (a few hundred statements at most).
    """
    key = (sql, names)
    get = _GETTERS.get(key)
    if get is None:
        if len(_GETTERS) >= 512:
            _GETTERS.clear()
        get = _GETTERS[key] = getter(cur, *names)
    return get
