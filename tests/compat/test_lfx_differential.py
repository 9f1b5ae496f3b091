"""Differential test: the same calls on lfx 1.13's EventManager and on jobqueue's.

Every observable result is compared: the names and event types a factory
registers (and their order), the queue items (event id modulo its UUID,
the bytes, the timestamp's type), what ``register_event``,
``_validate_callback``, ``send_event`` and unknown names do, and the errors
(type, and lfx's message at the start of jobqueue's). The differences
docs/langflow.md lists are asserted as differences, so a change on either
side shows here.

Needs ``lfx==1.13.0`` (``nox -s compat`` installs it); skipped without it.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from jobqueue.errors import PayloadError
from jobqueue.events import manager as jobqueue_events

try:
    from lfx.events import event_manager as lfx_events
except ImportError as exc:  # the normal suite: lfx is not a dependency
    pytest.skip(
        f"lfx is not installed ({exc}); `nox -s compat` installs lfx==1.13.0 and runs this",
        allow_module_level=True,
    )

LFX_VERSION = "1.13.0"
#: jobqueue's default manager registers Langflow's events, then this one.
JOBQUEUE_EXTRA_DEFAULTS = {"on_progress": "progress"}


@dataclass(frozen=True)
class Impl:
    name: str
    module: ModuleType

    def manager(self, queue: Any) -> Any:
        return self.module.EventManager(queue)


LFX = Impl("lfx", lfx_events)
JOBQUEUE = Impl("jobqueue", jobqueue_events)


class Capture:
    """A foreign queue (as Langflow's tests use): records ``put_nowait`` items."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def put_nowait(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)


class Broken:
    def put_nowait(self, item: Any) -> None:
        raise RuntimeError("queue error")


def test_lfx_is_the_version_compared() -> None:
    from importlib.metadata import version

    assert version("lfx") == LFX_VERSION


# -- what a call returns or raises, made comparable ---------------------------------------


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", value)`` or ``("raised", exception)``."""
    try:
        return "ok", call()
    except Exception as exc:
        return "raised", exc


def assert_same_outcome(lfx: tuple[str, Any], ours: tuple[str, Any], what: str) -> None:
    assert lfx[0] == ours[0], f"{what}: lfx {lfx!r} vs jobqueue {ours!r}"
    if lfx[0] == "raised":
        theirs, mine = lfx[1], ours[1]
        for base in (TypeError, ValueError, RuntimeError, AttributeError):
            assert isinstance(theirs, base) == isinstance(mine, base), (what, theirs, mine)
        assert str(mine).startswith(str(theirs)), f"{what}: {str(theirs)!r} vs {str(mine)!r}"
    else:
        assert lfx[1] == ours[1], what


def item_view(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """A queue item with the UUID of its id checked and taken out."""
    event_id, raw, put_time = item
    if event_id is None:
        return (None, raw, type(put_time))
    kind, sep, rest = event_id.partition("-")
    parsed = uuid.UUID(rest)
    assert sep == "-"
    assert str(parsed) == rest
    assert parsed.version == 4
    return (kind, raw, type(put_time))


def registered(manager: Any) -> list[tuple[str, str, Any]]:
    """``(name, event_type, callback)`` in registration order."""
    return [
        (name, cb.keywords["event_type"], getattr(cb.func, "__name__", cb.func))
        for name, cb in manager.events.items()
    ]


# -- factories --------------------------------------------------------------------------------


@pytest.mark.parametrize("with_queue", [True, False])
def test_default_manager(with_queue: bool) -> None:
    queues = {impl.name: (Capture() if with_queue else None) for impl in (LFX, JOBQUEUE)}
    theirs = LFX.module.create_default_event_manager(queues["lfx"])
    ours = JOBQUEUE.module.create_default_event_manager(queues["jobqueue"])
    assert theirs.queue is queues["lfx"]
    assert ours.queue is queues["jobqueue"]
    lfx_names = registered(theirs)
    assert registered(ours)[: len(lfx_names)] == lfx_names
    extra = registered(ours)[len(lfx_names) :]
    assert [(n, t) for n, t, _ in extra] == list(JOBQUEUE_EXTRA_DEFAULTS.items())


@pytest.mark.parametrize("with_queue", [True, False])
def test_stream_tokens_manager(with_queue: bool) -> None:
    queues = {impl.name: (Capture() if with_queue else None) for impl in (LFX, JOBQUEUE)}
    theirs = LFX.module.create_stream_tokens_event_manager(queues["lfx"])
    ours = JOBQUEUE.module.create_stream_tokens_event_manager(queues["jobqueue"])
    assert registered(ours) == registered(theirs)
    assert (ours.queue is None) == (theirs.queue is None)


def test_every_registered_event_sends_the_same_item() -> None:
    for factory in ("create_default_event_manager", "create_stream_tokens_event_manager"):
        lfx_q, our_q = Capture(), Capture()
        theirs = getattr(LFX.module, factory)(lfx_q)
        ours = getattr(JOBQUEUE.module, factory)(our_q)
        for name in theirs.events:
            getattr(theirs, name)(data={"name": name, "n": [1, 2]})
            getattr(ours, name)(data={"name": name, "n": [1, 2]})
        assert [item_view(i) for i in our_q.items] == [item_view(i) for i in lfx_q.items]


def test_new_manager() -> None:
    for queue in (None, Capture()):
        theirs, ours = LFX.manager(queue), JOBQUEUE.manager(queue)
        assert (theirs.queue, theirs.events) == (ours.queue, ours.events) == (queue, {})


# -- register_event ---------------------------------------------------------------------------


def _two(event_type: Any, data: Any) -> None: ...


async def _async_two(event_type: Any, data: Any) -> None: ...


def _three(manager: Any, event_type: Any, data: Any) -> None: ...


@pytest.mark.parametrize(
    ("name", "event_type", "callback"),
    [
        ("on_x", "x", None),
        ("on_x", "x", _two),
        ("on_x", "x", _async_two),
        ("on_x", "x", _three),
        ("on_x", "x", "noop"),  # the manager's own noop
        ("on_x", "x", 42),  # not callable: taken all the same
        ("", "x", None),
        ("x", "x", None),
        ("onx", "x", _three),
    ],
)
def test_register_event(name: str, event_type: str, callback: Any) -> None:
    results = {}
    for impl in (LFX, JOBQUEUE):
        manager = impl.manager(Capture())
        cb = manager.noop if callback == "noop" else callback
        results[impl.name] = outcome(lambda m=manager, c=cb: m.register_event(name, event_type, c))
        if results[impl.name][0] == "ok":
            registered_cb = manager.events[name]
            expected = manager.send_event if cb is None else cb
            assert registered_cb.func == expected
            assert set(registered_cb.keywords) == (
                {"event_type"} if cb is None else {"manager", "event_type"}
            )
            assert getattr(manager, name) is registered_cb
    assert_same_outcome(results["lfx"], results["jobqueue"], f"register_event({name!r})")


def test_many_registrations() -> None:
    for impl in (LFX, JOBQUEUE):
        manager = impl.manager(Capture())
        for i in range(1000):
            manager.register_event(f"on_e{i}", "t", manager.noop)
        assert len(manager.events) == 1000


# -- _validate_callback -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "callback",
    [
        _three,
        lambda data, manager, event_type: None,
        "not callable",
        None,
        _two,
        lambda manager, event_type, data, extra: None,
        lambda manager, kind, data: None,
        lambda **kwargs: None,
        lambda *args: None,
    ],
    ids=repr,
)
def test_validate_callback(callback: Any) -> None:
    assert_same_outcome(
        outcome(lambda: LFX.module.EventManager._validate_callback(callback)),
        outcome(lambda: JOBQUEUE.module.EventManager._validate_callback(callback)),
        f"_validate_callback({callback!r})",
    )


# -- send_event ---------------------------------------------------------------------------------


SAME_DATA = [
    None,
    "text",
    "h\u00e9llo \u2603 \U0001f600",
    'quote " backslash \\ newline \n tab \t',
    0,
    -5,
    2**70,
    1.5,
    1e-7,
    True,
    False,
    [],
    {},
    [1, "a", None, 2.5, True],
    {"key": "value", "nested": [1, 2, {"deep": None}]},
    {"chunk": "tok"},
    (1, 2, "three"),
    {"tuple": (1, (2, 3))},
]


@pytest.mark.parametrize("data", SAME_DATA, ids=repr)
def test_send_event_items(data: Any) -> None:
    lfx_q, our_q = Capture(), Capture()
    lfx_m, our_m = LFX.manager(lfx_q), JOBQUEUE.manager(our_q)
    for event_type in ("token", "add_message", "end"):
        lfx_m.send_event(event_type=event_type, data=data)
        our_m.send_event(event_type=event_type, data=data)
    assert [item_view(i) for i in our_q.items] == [item_view(i) for i in lfx_q.items]
    ids = [i[0] for i in our_q.items]
    assert len(set(ids)) == len(ids)


#: Data lfx turns into JSON with FastAPI's encoder and jobqueue refuses (PayloadError): see
#: docs/langflow.md. Asserted as a difference, so that either side changing shows.
LFX_ONLY_DATA = [
    {1, 2},
    {1: "int key"},
    float("nan"),
    datetime.datetime(2024, 1, 2, 3, 4, 5),
    uuid.UUID(int=1),
    b"bytes",
]


@pytest.mark.parametrize("data", LFX_ONLY_DATA, ids=repr)
def test_send_event_data_only_lfx_encodes(data: Any) -> None:
    lfx_q = Capture()
    LFX.manager(lfx_q).send_event(event_type="x", data=data)
    assert len(lfx_q.items) == 1
    with pytest.raises(PayloadError):
        JOBQUEUE.manager(Capture()).send_event(event_type="x", data=data)


def test_send_event_without_queue_and_with_a_failing_queue() -> None:
    for impl in (LFX, JOBQUEUE):
        assert impl.manager(None).send_event(event_type="x", data=1) is None
        assert impl.manager(Broken()).send_event(event_type="x", data=1) is None  # logged, dropped


async def test_send_event_to_a_full_asyncio_queue_drops() -> None:
    for impl in (LFX, JOBQUEUE):
        queue: asyncio.Queue[Any] = asyncio.Queue(1)
        manager = impl.manager(queue)
        manager.send_event(event_type="x", data=1)
        manager.send_event(event_type="x", data=2)  # QueueFull: logged, dropped
        assert queue.qsize() == 1
        assert item_view(queue.get_nowait())[1] == b'{"event": "x", "data": 1}\n\n'


async def test_send_event_from_another_thread() -> None:
    results = {}
    for impl in (LFX, JOBQUEUE):
        queue: asyncio.Queue[Any] = asyncio.Queue()
        manager = impl.manager(queue)

        def produce(m: Any = manager) -> None:
            for i in range(20):
                m.send_event(event_type="token", data={"i": i})

        thread = threading.Thread(target=produce)
        thread.start()
        items = [await asyncio.wait_for(queue.get(), 5) for _ in range(20)]
        thread.join()
        results[impl.name] = [item_view(i) for i in items]
    assert results["jobqueue"] == results["lfx"]


# -- callbacks, unknown names, noop -----------------------------------------------------------


def test_callbacks_get_the_manager_type_and_data() -> None:
    calls: dict[str, list[tuple[Any, ...]]] = {}
    for impl in (LFX, JOBQUEUE):
        seen = calls.setdefault(impl.name, [])
        manager = impl.manager(Capture())

        def cb(*, manager: Any, event_type: str, data: Any, seen: list[Any] = seen) -> None:
            seen.append((type(manager).__name__, event_type, data))

        manager.register_event("on_custom", "custom", cb)
        manager.on_custom(data={"a": 1})
        assert outcome(lambda m=manager: m.on_custom())[0] == "raised"  # data= is required
    assert calls["jobqueue"] == calls["lfx"]


@pytest.mark.parametrize("name", ["on_missing", "non_registered_event", "some_name", "_private"])
def test_unknown_names_are_noop(name: str) -> None:
    for impl in (LFX, JOBQUEUE):
        manager = impl.manager(Capture())
        callback = getattr(manager, name)
        assert callback == manager.noop
        assert callback.__name__ == "noop"
        assert callback(data={"x": 1}) is None
        assert manager.queue.items == []


def test_dunder_names_differ_on_purpose() -> None:
    # lfx answers noop even for dunder names; jobqueue raises AttributeError for them so that
    # copy, pickle and similar protocols keep working (docs/langflow.md).
    theirs = LFX.manager(None)
    assert theirs.__custom_dunder__ == theirs.noop
    with pytest.raises(AttributeError):
        JOBQUEUE.manager(None).__custom_dunder__  # noqa: B018
