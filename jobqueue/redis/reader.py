"""The consumer side: a cursor over one job's stream, on any worker.

Every :class:`StreamReader` has its own cursor, so two readers in one
process each get every event. What a reader yields (:class:`BusEvent`):

* ``kind="event"``: one event, in the order the producer sent it;
* ``kind="gap"``: entries trimmed before this reader got to them
  (``missed`` of them), said out loud instead of skipped silently;
* ``kind="end"``: the last item, with ``outcome``: what the end entry says
  (``completed``, ``failed``, ``cancelled``), ``lost`` when the job's worker
  stopped holding its lease, ``deleted`` when the stream was removed while
  being read, ``missing`` when it never appeared within ``startup_grace_s``.

When Redis does not answer, the reader tries again until ``outage_s`` has
passed, then raises :class:`~jobqueue.errors.BusUnavailableError`: an outage
never looks like the end of a job.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from jobqueue.errors import BusUnavailableError
from jobqueue.redis.bridge import BusStats
from jobqueue.redis.keys import (
    LEASE_PREFIX,
    SENTINEL,
    Keys,
    entry_seq,
    is_connection_error,
    raise_if_cancelling,
)

__all__ = ["DECLARE_LOST", "BusEvent", "StreamReader"]

# Ends a stream with outcome "lost", atomically, if the job's runner is still the
# worker whose lease was seen missing, that lease is still missing, and the stream
# has no end yet. KEYS: stream, runner key, lease key. ARGV: worker, ts, ttl.
DECLARE_LOST: Final = """
local w = redis.call('GET', KEYS[2])
if (not w) or w ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local id = '*'
if top[1] then
  local f = top[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'data' and f[i + 1] == '__sentinel__' then
      redis.call('DEL', KEYS[2])
      return 1
    end
  end
  local ms, seq = string.match(top[1][1], '^(%d+)-(%d+)$')
  if ms == '0' then id = '0-' .. tostring(tonumber(seq) + 1) end
else
  id = '0-1'
end
redis.call('XADD', KEYS[1], id, 'event_id', '__sentinel__', 'data', '__sentinel__',
  'ts', ARGV[2], 'outcome', 'lost')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
return 2
"""


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One item a :class:`StreamReader` yields."""

    kind: str  # "event", "gap" or "end"
    #: The entry's number (``0-<seq>`` ids); 0 for entries of other producers.
    seq: int
    #: Langflow's ``event_id`` (``"<type>-<uuid>"``) of an event; ``None`` otherwise.
    event_id: str | None
    #: Langflow's bytes of an event: ``{"event": type, "data": ...}`` and two newlines.
    data: bytes | None
    ts: float
    outcome: str | None = None
    missed: int = 0
    stream_id: str = ""

    @property
    def type(self) -> str:
        """The event's type (``"token"``, ``"end"``...), or ``kind`` for a gap or an end."""
        if self.kind != "event" or self.data is None:
            return self.kind
        return str(self.decoded().get("event", ""))

    def decoded(self) -> dict[str, Any]:
        """The event's JSON body (``{"event": ..., "data": ...}``); ``{}`` if it is not JSON."""
        if self.data is None:
            return {}
        try:
            body = json.loads(self.data)
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}


class StreamReader:
    """Reads one job's stream from ``after`` on (an entry id; ``"0-0"``: the start).

    Args:
        client: a ``redis.asyncio.Redis``.
        job_id: the job.
        url: the bus's address for error messages (no password).
        after: read the entries after this id (``"0-<seq>"`` resumes after event ``seq``).
        startup_grace_s: how long a stream that does not exist yet is waited for.
        lease_s: how long a dead worker's job takes to end as ``lost``.
        outage_s: how long Redis may fail before :class:`BusUnavailableError`.
        stats: counters to bump (gaps, lost).
    """

    COUNT: Final = 512

    def __init__(
        self,
        client: Any,
        job_id: str,
        *,
        url: str,
        after: str = "0-0",
        startup_grace_s: float = 30.0,
        lease_s: float = 5.0,
        outage_s: float = 30.0,
        stats: BusStats | None = None,
    ) -> None:
        self._client = client
        self._keys = Keys(job_id)
        self._url = url
        self.cursor = after
        self._last_seq = entry_seq(after) or 0
        self._grace = startup_grace_s
        self._lease_s = lease_s
        self._outage_s = outage_s
        self._stats = stats if stats is not None else BusStats()
        self._block_ms = max(10, min(1000, int(lease_s * 1000 / 8)))
        self._created = time.monotonic()
        self._seen = False  # the stream existed at some read
        self._missing_since: float | None = None  # the runner's lease was first seen gone
        self.first_read_done = False
        #: How the stream ended, once the end was read.
        self.outcome: str | None = None

    def __aiter__(self) -> AsyncIterator[BusEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[BusEvent]:
        while self.outcome is None:
            for item in await self.read():
                yield item

    async def read(self) -> list[BusEvent]:
        """The next items (at least one, the end being the last of all); waits for them."""
        if self.outcome is not None:
            return []
        failing_since: float | None = None
        while True:
            try:
                items = await self._read_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                if not is_connection_error(exc):
                    raise
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= self._outage_s:
                    raise BusUnavailableError(self._url, exc, waited=now - failing_since) from exc
                raise_if_cancelling()
                await asyncio.sleep(min(0.25, self._outage_s / 10))
                continue
            failing_since = None
            if items:
                return items

    async def _read_once(self) -> list[BusEvent]:
        stream = self._keys.stream
        reply = await self._client.xread(
            {stream: self.cursor}, count=self.COUNT, block=self._block_ms
        )
        raise_if_cancelling()
        self.first_read_done = True
        if reply:
            self._seen = True
            self._missing_since = None
            return self._convert(reply[0][1])
        return await self._idle()

    def _convert(self, entries: list[Any]) -> list[BusEvent]:
        out: list[BusEvent] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            seq = entry_seq(entry_id)
            if seq is not None and seq > self._last_seq + 1 and self._last_seq >= 0:
                missed = seq - self._last_seq - 1
                self._stats.gaps += 1
                self._stats.missed += missed
                out.append(BusEvent("gap", seq - 1, None, None, time.time(), missed=missed))
            if seq is not None:
                self._last_seq = seq
            self.cursor = entry_id
            data = fields.get(b"data")
            ts = _float(fields.get(b"ts"))
            if data == SENTINEL:
                outcome = (fields.get(b"outcome") or b"unknown").decode()
                self.outcome = outcome
                out.append(BusEvent("end", seq or 0, None, None, ts, outcome, 0, entry_id))
                return out
            event_id = (fields.get(b"event_id") or b"").decode()
            out.append(BusEvent("event", seq or 0, event_id, data, ts, None, 0, entry_id))
        return out

    async def _idle(self) -> list[BusEvent]:
        """Nothing new within a block: is the stream gone, never coming, or its worker dead?"""
        keys = self._keys
        pipe = self._client.pipeline(transaction=False)
        pipe.exists(keys.stream)
        pipe.get(keys.runner)
        exists, runner = await pipe.execute()
        now = time.monotonic()
        if exists:
            self._seen = True
        elif self._seen:
            return self._end("deleted")
        elif runner is None and now - self._created > self._grace:
            return self._end("missing")
        if runner is None:
            self._missing_since = None
            return []
        worker = runner.decode() if isinstance(runner, bytes) else str(runner)
        if await self._client.exists(LEASE_PREFIX + worker):
            self._missing_since = None
            return []
        # Seen gone twice, a fifth of the lease apart: an owner that was only cut
        # off from Redis for a moment has renewed it by then.
        if self._missing_since is None:
            self._missing_since = now
            return []
        if now - self._missing_since < self._lease_s / 5:
            return []
        ttl = max(60, int(self._lease_s * 10))
        done = await self._client.eval(
            DECLARE_LOST, 3, keys.stream, keys.runner, LEASE_PREFIX + worker, worker,
            repr(time.time()), ttl,
        )  # fmt: skip
        if int(done) == 2:
            self._stats.lost_declared += 1
        return []  # the end entry (ours or the worker's) is read by the next XREAD

    def _end(self, outcome: str) -> list[BusEvent]:
        self.outcome = outcome
        return [BusEvent("end", 0, None, None, time.time(), outcome)]


def _float(raw: Any) -> float:
    try:
        return float(raw or 0)
    except (TypeError, ValueError):
        return 0.0
