"""JSON encoding for payloads, results and events: strict, size-capped, no pickle."""

from __future__ import annotations

import json
from typing import Any, Final

from jobqueue.errors import PayloadError, PayloadTooLargeError

__all__ = ["DEFAULT_MAX_BYTES", "decode", "encode"]

#: Default cap on an encoded payload or result (1 MiB).
DEFAULT_MAX_BYTES: Final = 1 << 20

_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_dumps = _encoder.encode


def encode(value: Any, what: str = "payload", limit: int = DEFAULT_MAX_BYTES) -> str:
    """Encode ``value`` as compact JSON text.

    ``ensure_ascii`` stays on, so lone surrogates are escaped and the text is
    always valid UTF-8 for SQLite.

    Raises:
        PayloadError: NaN/Infinity, a type JSON cannot hold, or nesting too deep.
        PayloadTooLargeError: the text is longer than ``limit`` bytes.
    """
    try:
        text = _dumps(value)
    except ValueError as exc:  # NaN / Infinity, circular reference
        raise PayloadError(
            f"{what} is not valid JSON ({exc}); replace NaN/Infinity with null or a string"
        ) from None
    except TypeError as exc:
        raise PayloadError(
            f"{what} must be JSON: dict, list, str, int, float, bool or None ({exc}); "
            "convert other objects (datetime, bytes, dataclasses) yourself"
        ) from None
    except RecursionError:
        raise PayloadError(f"{what} is nested too deeply to encode as JSON") from None
    if len(text) > limit:  # ensure_ascii: one char is one byte
        raise PayloadTooLargeError(what, len(text), limit)
    if "{" in text:  # json would turn non-str keys into text ({1: 'a'} -> {'1': 'a'})
        _check_keys(value, what)
    return text


def _check_keys(value: Any, what: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise PayloadError(
                        f"{what} has a dict key that is not a string ({key!r:.40}); JSON "
                        "would store it as text and read it back changed: use str keys"
                    )
                if isinstance(sub, dict | list | tuple):
                    stack.append(sub)
        elif isinstance(item, list | tuple):
            stack.extend(sub for sub in item if isinstance(sub, dict | list | tuple))


def decode(text: str | bytes | None) -> Any:
    """Decode stored JSON text (``None`` stays ``None``)."""
    if text is None:
        return None
    return json.loads(text)
