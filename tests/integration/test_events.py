"""EventManager and EventQueue: Langflow's shapes, warnings, threads and the full-queue policy."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import pytest

from jobqueue import EventManager, create_default_event_manager
from jobqueue.errors import PayloadError
from jobqueue.events import DEFAULT_EVENTS, Event, EventQueue, EventQueueFull, decode_item
from jobqueue.events.items import EMPTY

LANGFLOW_DEFAULTS = {
    "on_token",
    "on_vertices_sorted",
    "on_error",
    "on_end",
    "on_message",
    "on_remove_message",
    "on_end_vertex",
    "on_build_start",
    "on_build_end",
    "on_log",
}


def _body(item) -> dict:
    event_id, raw, put_time = item
    assert isinstance(event_id, str)
    assert isinstance(raw, bytes)
    assert isinstance(put_time, float)
    assert raw.endswith(b"\n\n")
    return json.loads(raw)


async def test_default_events() -> None:
    em = create_default_event_manager(asyncio.Queue())
    assert set(em.events) == LANGFLOW_DEFAULTS | {"on_progress"}
    assert DEFAULT_EVENTS["on_progress"] == "progress"
    assert DEFAULT_EVENTS["on_message"] == "add_message"


async def test_item_format() -> None:
    q: asyncio.Queue = asyncio.Queue()
    em = create_default_event_manager(q)
    t0 = time.time()
    em.on_token(data={"chunk": "hé"})
    em.on_progress(data={"done": 1, "total": 2})
    em.on_end(data={"ok": True})
    items = [q.get_nowait() for _ in range(3)]
    assert [_body(i) for i in items] == [
        {"event": "token", "data": {"chunk": "hé"}},
        {"event": "progress", "data": {"done": 1, "total": 2}},
        {"event": "end", "data": {"ok": True}},
    ]
    ids = [i[0] for i in items]
    assert len(set(ids)) == 3
    assert all(t0 <= i[2] <= time.time() for i in items)
    assert items[0][2] <= items[1][2] <= items[2][2]
    assert em.last_seq == 3


async def test_unknown_name_warns_once_per_name(caplog: pytest.LogCaptureFixture) -> None:
    q: asyncio.Queue = asyncio.Queue()
    em = create_default_event_manager(q)
    with caplog.at_level(logging.WARNING, logger="jobqueue.events"):
        em.on_tokn(data={"chunk": "a"})
        em.on_tokn(data={"chunk": "b"})
        em.on_tokn(data={"chunk": "c"})
        em.on_finished(data=1)
    warnings = [r for r in caplog.records if r.name == "jobqueue.events"]
    assert len(warnings) == 2
    assert "on_tokn" in warnings[0].getMessage()
    assert "on_token" in warnings[0].getMessage()  # lists the known names
    assert "on_finished" in warnings[1].getMessage()
    assert q.empty()
    assert em.not_an_event == em.noop  # any unknown name is the no-op, as in Langflow
    with pytest.raises(AttributeError):
        em.__not_a_dunder__  # noqa: B018 - dunder names stay attribute errors (copy, pickle)


async def test_strict_mode_raises_with_known_names() -> None:
    em = create_default_event_manager(asyncio.Queue(), strict=True)
    with pytest.raises(AttributeError) as ei:
        em.on_tokn(data=1)
    assert "on_tokn" in str(ei.value)
    assert "on_token" in str(ei.value)
    assert "on_progress" in str(ei.value)


@pytest.mark.parametrize("name", ["", "token", "onToken", "progress_on"])
async def test_register_event_validation(name: str) -> None:
    em = EventManager(asyncio.Queue())
    with pytest.raises(ValueError, match="Event name"):
        em.register_event(name, "x")
    assert em.events == {}


async def test_register_event_with_callback() -> None:
    q: asyncio.Queue = asyncio.Queue()
    em = EventManager(q)
    seen = []

    def cb(*, manager, event_type, data):
        seen.append((manager, event_type, data))
        manager.send_event(event_type=event_type, data={"wrapped": data})

    em.register_event("on_custom", "custom", cb)
    em.on_custom(data=5)
    assert seen == [(em, "custom", 5)]
    assert _body(q.get_nowait()) == {"event": "custom", "data": {"wrapped": 5}}
    # Taken as given (as Langflow does); only calling it shows a wrong signature.
    em.register_event("on_bad", "bad", lambda data: None)
    with pytest.raises(TypeError):
        em.on_bad(data=1)


async def test_send_event_from_another_thread() -> None:
    q: asyncio.Queue = asyncio.Queue()
    em = create_default_event_manager(q)
    main = threading.get_ident()

    def worker() -> None:
        assert threading.get_ident() != main
        for i in range(50):
            em.on_token(data={"chunk": str(i)})
        em.on_end(data={"n": 50})

    t = threading.Thread(target=worker)
    t.start()
    got = []
    while True:
        item = await asyncio.wait_for(q.get(), timeout=5)
        body = _body(item)
        got.append(body)
        if body["event"] == "end":
            break
    t.join()
    assert [b["data"]["chunk"] for b in got[:-1]] == [str(i) for i in range(50)]
    assert got[-1] == {"event": "end", "data": {"n": 50}}


async def test_full_queue_tokens_coalesce() -> None:
    q = EventQueue(3)
    em = create_default_event_manager(q)
    for i in range(10):
        em.on_token(data={"chunk": str(i)})
    assert q.qsize() == 3
    bodies = [_body(q.get_nowait()) for _ in range(3)]
    chunks = "".join(b["data"]["chunk"] for b in bodies)
    assert chunks == "0123456789"  # nothing lost, order kept
    assert q.coalesced == 7


async def test_merges_are_encoded_once_not_per_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled consumer must not cost each token the whole merged chunk (quadratic)."""
    import jobqueue.events.queue as queue_module

    encodes: list[str] = []
    real = queue_module.encode_event

    def counting(event_type: str, data: Any) -> Any:
        encodes.append(event_type)
        return real(event_type, data)

    monkeypatch.setattr(queue_module, "encode_event", counting)
    q = EventQueue(3)
    q.keep = True  # as when service.events() reads it: kept data must be the merged data
    em = create_default_event_manager(q)
    for i in range(1000):
        em.on_token(data={"chunk": f"{i},", "i": i})
    assert len(encodes) == 0  # merges noted, nothing encoded yet
    first = q.take_event()
    assert isinstance(first, Event)
    assert len(encodes) == 0  # the merged item is the last one: still open
    em.on_progress(data={"done": 1})  # another item follows the merged one: encoded now
    assert encodes == ["token"]
    events = [q.take_event() for _ in range(3)]
    assert q.take_event() is EMPTY
    assert [getattr(e, "type", None) for e in events] == ["token", "token", "progress"]
    merged = events[1]
    assert isinstance(merged, Event)
    assert merged.data == {"chunk": "".join(f"{i}," for i in range(2, 1000)), "i": 999}
    assert len(encodes) == 1  # one encode for 998 merges


async def test_full_queue_progress_replaces() -> None:
    q = EventQueue(2)
    em = create_default_event_manager(q)
    em.on_message(data="m")
    for i in range(20):
        em.on_progress(data={"done": i})
    assert q.qsize() == 2
    bodies = [_body(q.get_nowait()) for _ in range(2)]
    assert bodies[0]["event"] == "add_message"
    assert bodies[1] == {"event": "progress", "data": {"done": 19}}


async def test_a_queue_past_its_bound_still_applies_back_pressure() -> None:
    """A forced ``error`` event can take the queue past maxsize; it is still full then,
    so ``asend`` waits for room instead of putting past the bound."""
    q = EventQueue(2)
    em = create_default_event_manager(q)
    em.on_message(data=1)
    em.on_error(data={"e": 1})  # forced in: 2 items in a queue of 2
    em.on_error(data={"e": 2})  # forced again: 3 items
    assert q.qsize() == 3
    assert q.full()
    sending = asyncio.ensure_future(em.asend("add_message", 2))
    await asyncio.sleep(0.01)
    assert not sending.done()  # waits: not admitted past the bound
    assert q.qsize() == 3
    for _ in range(2):
        q.get_nowait()
    await asyncio.wait_for(sending, 1)
    assert [_body(q.get_nowait())["event"] for _ in range(2)] == ["error", "add_message"]
    q.put_nowait(("x-1", b"{}", 0.0))
    q.put_nowait(("x-2", b"{}", 0.0))
    with pytest.raises(asyncio.QueueFull):  # the synchronous put refuses at the bound
        q.put_nowait(("x-3", b"{}", 0.0))


async def test_full_queue_end_admitted_others_refused() -> None:
    q = EventQueue(2)
    em = create_default_event_manager(q)
    em.on_message(data=1)
    em.on_message(data=2)
    with pytest.raises(EventQueueFull) as ei:
        em.on_message(data=3)
    assert isinstance(ei.value, asyncio.QueueFull)
    with pytest.raises(EventQueueFull):
        em.on_build_start(data={})
    em.on_error(data={"e": 1})
    em.on_end(data={"done": True})
    em.end_stream()
    em.end_stream()  # once only
    assert q.qsize() == 5
    items = [q.get_nowait() for _ in range(5)]
    assert [_body(i)["event"] for i in items[:4]] == ["add_message", "add_message", "error", "end"]
    assert items[4][:2] == (None, None)
    assert q.ended
    assert q.sentinel_taken


async def test_asend_waits_for_room() -> None:
    q = EventQueue(1)
    em = create_default_event_manager(q)
    em.on_message(data=1)
    sender = asyncio.create_task(em.asend("add_message", 2))
    await asyncio.sleep(0.02)
    assert not sender.done()
    assert _body(q.get_nowait())["data"] == 1
    await asyncio.wait_for(sender, 2)
    assert _body(q.get_nowait())["data"] == 2


@pytest.mark.parametrize("bad", [float("nan"), {1, 2}, object(), {"x": float("inf")}])
async def test_non_json_data_rejected(bad) -> None:
    q: asyncio.Queue = asyncio.Queue()
    em = create_default_event_manager(q)
    with pytest.raises(PayloadError):
        em.on_token(data=bad)
    with pytest.raises(PayloadError):
        await em.asend("token", bad)
    assert q.empty()


async def test_time_in_queue() -> None:
    q = EventQueue()
    waits: list[float] = []
    q.on_consume = waits.append
    em = create_default_event_manager(q)
    em.on_token(data={"chunk": "a"})
    await asyncio.sleep(0.05)
    item = await q.get()
    ev = decode_item(item)
    assert ev is not None
    assert ev.type == "token"
    assert ev.data == {"chunk": "a"}
    assert 0.04 <= ev.time_in_queue < 5
    assert len(waits) == 1
    assert 0.04 <= waits[0] < 5
    em.end_stream()
    assert decode_item(await q.get()) is None


async def test_manager_without_queue_is_silent() -> None:
    em = create_default_event_manager(None)
    em.on_token(data={"chunk": "x"})
    em.end_stream()
    assert em.last_seq == 0
