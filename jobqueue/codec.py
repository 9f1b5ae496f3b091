"""JSON encoding for payloads, results and events: strict, size-capped, no pickle."""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any, Final

from jobqueue.errors import PayloadError, PayloadTooLargeError

__all__ = ["DEFAULT_MAX_BYTES", "decode", "encode", "encode_plain", "storable"]

#: Default cap on an encoded payload or result (1 MiB).
DEFAULT_MAX_BYTES: Final = 1 << 20

_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
#: ``json.dumps``' own separators: event items are byte-equal to Langflow's.
_spaced_encoder = json.JSONEncoder(allow_nan=False)
_CONTAINERS: Final = frozenset({dict, list, tuple})
_STR: Final = frozenset({str})


def _c_dumps(encoder: json.JSONEncoder) -> Callable[[Any], str] | None:
    """The C encoder built once, or ``None`` where the C accelerator is missing.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which is two
    thirds of the cost of encoding a small event. Without a markers dict the
    C encoder does not look for cycles; a cycle ends in ``RecursionError``,
    which :func:`encode` reports like too deep a nesting.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return None
    iterencode = make(
        None, encoder.default, json.encoder.encode_basestring_ascii, None,
        encoder.key_separator, encoder.item_separator, False, False, False,
    )  # fmt: skip

    def dumps(value: Any) -> str:
        return "".join(iterencode(value, 0))

    try:  # the argument list is private: check it means what we think
        dumps(float("nan"))
    except ValueError:
        if dumps({"a": [1, "\u00e9"]}) == encoder.encode({"a": [1, "\u00e9"]}):
            return dumps
    return None  # pragma: no cover


_dumps = _c_dumps(_encoder) or _encoder.encode
_dumps_spaced = _c_dumps(_spaced_encoder) or _spaced_encoder.encode


def encode(
    value: Any, what: str = "payload", limit: int = DEFAULT_MAX_BYTES, *, spaced: bool = False
) -> str:
    """Encode ``value`` as compact JSON text (``spaced``: with ``json.dumps``' separators).

    ``ensure_ascii`` stays on, so lone surrogates are escaped and the text is
    always valid UTF-8 for SQLite. ``spaced=True`` gives the text
    ``json.dumps(value)`` gives (``", "`` and ``": "``), as event items use.

    Raises:
        PayloadError: NaN/Infinity, a type JSON cannot hold, or nesting too deep.
        PayloadTooLargeError: the text is longer than ``limit`` bytes.
    """
    try:  # as _text(), inline: the hot path of every submit
        text = (_dumps_spaced if spaced else _dumps)(value)
    except (ValueError, TypeError, RecursionError):
        text = _text(value, what, spaced)  # raises the error, worded
    if len(text) > limit:  # ensure_ascii: one char is one byte
        raise PayloadTooLargeError(what, len(text), limit)
    # json would turn non-str keys into text ({1: 'a'} -> {'1': 'a'}). A flat dict
    # of str keys (most events and payloads) is cleared by two C-level scans.
    if "{" in text and not (
        type(value) is dict
        and _STR.issuperset(map(type, value))
        and _CONTAINERS.isdisjoint(map(type, value.values()))
    ):
        _check_keys(value, what)
    return text


#: Types whose values decoding their own JSON gives back, equal and of the same type.
_PLAIN: Final = frozenset({str, int, float, bool, type(None)})


def encode_plain(
    value: Any, what: str = "payload", limit: int = DEFAULT_MAX_BYTES, *, spaced: bool = False
) -> tuple[str, bool]:
    """:func:`encode`, and whether ``decode`` of the text gives back ``value`` exactly.

    True for a plain value (str, int, float, bool, None, of exactly those
    types) and for a dict of str keys to plain values (most events): a copy
    of such a dict is what decoding would build, so a consumer in this
    process can have the copy instead.

    Raises:
        PayloadError: as :func:`encode`.
        PayloadTooLargeError: as :func:`encode`.
    """
    try:  # as _text(), inline: the hot path of every event
        text = (_dumps_spaced if spaced else _dumps)(value)
    except (ValueError, TypeError, RecursionError):
        text = _text(value, what, spaced)  # raises the error, worded
    if len(text) > limit:  # ensure_ascii: one char is one byte
        raise PayloadTooLargeError(what, len(text), limit)
    kind = type(value)
    if kind in _PLAIN:
        return text, True
    # json would turn non-str keys into text ({1: 'a'} -> {'1': 'a'}). A flat dict
    # of str keys (most events and payloads) is cleared by two C-level scans.
    if kind is dict and _STR.issuperset(map(type, value)):
        if _PLAIN.issuperset(map(type, value.values())):
            return text, True
        if _CONTAINERS.isdisjoint(map(type, value.values())):
            return text, False
    if "{" in text:
        _check_keys(value, what)
    return text, False


def _text(value: Any, what: str, spaced: bool) -> str:
    try:
        return (_dumps_spaced if spaced else _dumps)(value)
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
        raise PayloadError(
            f"{what} is nested too deeply (or refers to itself) to encode as JSON"
        ) from None


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


# The C scanner, as json.loads uses it (typeshed does not declare the attribute).
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def decode(text: str | bytes | None) -> Any:
    """Decode stored JSON text (``None`` stays ``None``).

    What this library wrote is ASCII JSON starting at its first character:
    the scanner takes it directly, skipping ``json.loads``' encoding
    detection and its two whitespace passes (a third of the cost on a small
    event). Anything else goes through ``json.loads``, with its errors.
    """
    if text is None:
        return None
    try:
        chars = text.decode() if isinstance(text, bytes) else text
        value, end = _scan(chars, 0)
    except (StopIteration, UnicodeDecodeError):
        return json.loads(text)
    if end != len(chars) and not (end + 2 == len(chars) and chars.endswith("\n\n")):
        # (an event item's bytes end in a blank line)
        return json.loads(text)  # trailing data: json.loads says what is wrong
    return value


def storable(text: str) -> str:
    """``text`` as SQLite can store it: lone surrogates become ``\\udXXX`` escapes.

    Exception messages and tracebacks are arbitrary text; a lone surrogate in one
    would make the outcome that carries it impossible to write.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
