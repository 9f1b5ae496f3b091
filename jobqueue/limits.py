"""Per-handler concurrency and rate limits, and per-key rate limits (this process).

Per-key *concurrency* limits are stored with each job and enforced by the
claim statement itself, across processes; see :mod:`jobqueue.store.claim`.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import TypeVar

from jobqueue.errors import InvalidArgumentError
from jobqueue.store.claim import ClaimRequest

__all__ = ["Limiter", "Limits", "parse_rate"]

Rate = tuple[int, float]
K = TypeVar("K")


def parse_rate(value: object, name: str) -> Rate | None:
    """Check a ``(max_starts, per_seconds)`` pair.

    Raises:
        InvalidArgumentError: not a pair of a positive int and a positive number.
    """
    if value is None:
        return None
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], int)
        and not isinstance(value[0], bool)
        and value[0] >= 1
        and isinstance(value[1], int | float)
        and not isinstance(value[1], bool)
        and value[1] > 0
    ):
        return int(value[0]), float(value[1])
    raise InvalidArgumentError(
        f"{name} must be (max_starts, per_seconds), e.g. (10, 1.0) for 10 per second; got {value!r}"
    )


@dataclass(frozen=True, slots=True)
class Limits:
    """A handler's limits.

    Attributes:
        concurrency: at most this many of its jobs run at once in this process.
        rate: at most ``n`` starts per ``seconds`` in this process.
        key_concurrency: default ``concurrency_limit`` of its jobs that have a
            ``concurrency_key`` (enforced across processes).
        key_rate: at most ``n`` starts per ``seconds`` per ``concurrency_key``.
    """

    concurrency: int | None = None
    rate: Rate | None = None
    key_concurrency: int = 1
    key_rate: Rate | None = None

    @property
    def local(self) -> bool:
        """Whether the scheduler must track anything for this handler."""
        return self.concurrency is not None or self.rate is not None or self.key_rate is not None


class _Window:
    """Start times within the last ``per`` seconds (a sliding-window rate limit)."""

    __slots__ = ("n", "per", "starts")

    def __init__(self, rate: Rate) -> None:
        self.n, self.per = rate
        self.starts: deque[float] = deque()

    def room(self, now: float) -> int:
        while self.starts and self.starts[0] <= now - self.per:
            self.starts.popleft()
        return self.n - len(self.starts)

    def free_at(self) -> float:
        return self.starts[0] + self.per


class Limiter:
    """Turns the limits and what runs now into a :class:`ClaimRequest`."""

    def __init__(self, limits: dict[str, Limits]) -> None:
        self._limits = limits  # shared with the service: handler() may add entries later
        self.running: Counter[str] = Counter()
        self._rates: dict[str, _Window] = {}
        self._key_rates: dict[tuple[str, str], _Window] = {}

    def request(
        self, handlers: list[str], free: int, owner: str, now: float, event_seq: bool
    ) -> tuple[ClaimRequest | None, float | None]:
        """The claim for ``free`` slots, and when a rate window frees up if one is full."""
        names: list[str] = []
        handler_room: dict[str, int] = {}
        key_room: dict[tuple[str, str], int] = {}
        key_rates: dict[str, int] = {}
        wake: float | None = None
        for name in handlers:
            lim = self._limits.get(name)
            if lim is None or not lim.local:
                names.append(name)
                continue
            room = free
            if lim.concurrency is not None:
                room = min(room, lim.concurrency - self.running[name])
            if lim.rate is not None:
                window = self._window(self._rates, name, lim.rate)
                rate_room = window.room(now)
                if rate_room <= 0:
                    wake = _earliest(wake, window.free_at())
                room = min(room, rate_room)
            if lim.key_rate is not None:
                key_rates[name] = lim.key_rate[0]
                for (h, key), window in self._key_rates.items():
                    if h == name:
                        key_room[h, key] = r = window.room(now)
                        if r <= 0:
                            wake = _earliest(wake, window.free_at())
            if room > 0:
                names.append(name)
                handler_room[name] = room
        if not names:
            return None, wake
        return (
            ClaimRequest(names, free, owner, now, handler_room, key_room, key_rates, event_seq),
            wake,
        )

    def started(self, handler: str, key: str | None, now: float) -> None:
        """A claimed job of ``handler`` starts."""
        lim = self._limits.get(handler)
        if lim is None or not lim.local:
            return
        self.running[handler] += 1
        if lim.rate is not None:
            self._window(self._rates, handler, lim.rate).starts.append(now)
        if lim.key_rate is not None and key is not None:
            self._window(self._key_rates, (handler, key), lim.key_rate).starts.append(now)

    def ended(self, handler: str) -> None:
        """A job of ``handler`` gave its slot back."""
        if self.running[handler] > 0:
            self.running[handler] -= 1
        # Drop idle key windows so the map does not grow with every key ever seen.
        if self._key_rates and len(self._key_rates) > 1024:
            stale = [k for k, w in self._key_rates.items() if not w.starts]
            for k in stale:
                del self._key_rates[k]

    @staticmethod
    def _window(windows: dict[K, _Window], key: K, rate: Rate) -> _Window:
        window = windows.get(key)
        if window is None:
            window = windows[key] = _Window(rate)
        return window


def _earliest(a: float | None, b: float) -> float:
    return b if a is None or b < a else a
