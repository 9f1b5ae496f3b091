"""What-if for the lead: the 20,000-job workload with hot-path records un-frozen, cheaper ids.

Run (from the repository root)::

    PYTHONPATH=. python bench/profiles/whatif_frozen.py --variant submit_many --rounds 8

Nothing in ``jobqueue/`` is edited: in this process only, the frozen slotted
dataclasses ``Job``, ``NewJob``, ``Claimed`` (``jobqueue/store/jobs.py``) and
``Outcome`` (``jobqueue/store/outcomes.py``) are swapped for equal classes
without ``frozen=True``, and/or ``uuid.uuid4()`` in ``jobqueue/service.py`` for
``os.urandom(16).hex()``. Modes, each run once per round in an order that
alternates (so a noisy neighbour hits them alike):

``base``      the library as it is
``internal``  ``NewJob``, ``Claimed``, ``Outcome`` un-frozen (``Job`` stays frozen)
``thaw``      the same plus ``Job``
``ids``       ``base`` with cheap ids
``thaw+ids``  both

Printed per mode: median jobs/s, the event-loop thread's CPU per job
(``time.thread_time``), and the median over rounds of the ratio to ``base``
of the same round. Every run's rows are read back (all ``completed``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import throughput  # noqa: E402
from _common import count_statuses, temp_db  # noqa: E402

import jobqueue.service as service_module  # noqa: E402
import jobqueue.store.jobs as jobs_module  # noqa: E402
import jobqueue.store.outcomes as outcomes_module  # noqa: E402

_SKIP = {
    "__dict__",
    "__weakref__",
    "__slots__",
    "__dataclass_fields__",
    "__dataclass_params__",
    "__init__",
    "__setattr__",
    "__delattr__",
    "__hash__",
    "__repr__",
    "__eq__",
    "__match_args__",
    "__getstate__",
    "__setstate__",
}


def thaw(cls: type) -> type:
    """The same dataclass (fields, defaults, methods) with slots but without ``frozen``."""
    member = type(jobs_module.Job.id)  # slot descriptors are regenerated
    ns: dict[str, Any] = {
        k: v for k, v in cls.__dict__.items() if k not in _SKIP and not isinstance(v, member)
    }
    ns["__annotations__"] = dict(cls.__annotations__)
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            ns[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            ns[f.name] = dataclasses.field(default_factory=f.default_factory)
    new = dataclasses.dataclass(slots=True)(type(cls.__name__, (), ns))
    new.__module__, new.__qualname__ = cls.__module__, cls.__qualname__
    return new


ORIGINAL = {
    "Job": jobs_module.Job,
    "NewJob": jobs_module.NewJob,
    "Claimed": jobs_module.Claimed,
    "Outcome": outcomes_module.Outcome,
}
THAWED = {name: thaw(cls) for name, cls in ORIGINAL.items()}


class _CheapUUID:
    __slots__ = ("hex",)

    def __init__(self) -> None:
        self.hex = os.urandom(16).hex()


_CHEAP_UUID_MODULE = type("cheap_uuid", (), {"uuid4": _CheapUUID})


def set_mode(mode: str) -> None:
    thawed = {"internal": {"NewJob", "Claimed", "Outcome"}, "thaw": set(THAWED)}
    names = thawed["thaw"] if mode.startswith("thaw") else thawed.get(mode, set())
    for name, orig in ORIGINAL.items():
        new = THAWED[name] if name in names else orig
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("jobqueue") and getattr(
                module, name, None
            ) in (orig, THAWED[name]):
                setattr(module, name, new)
    service_module.uuid = _CHEAP_UUID_MODULE if mode.endswith("ids") else uuid  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--variant", choices=("submit_many", "submit_gather"), default="submit_many"
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args(argv)
    modes = ["base", "internal", "thaw", "ids", "thaw+ids"]
    cfg = throughput.make_config(
        throughput.parse_args(["--jobs", str(args.jobs), "--only", f"jobqueue_{args.variant}"])
    )
    res: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            set_mode(mode)
            with temp_db() as path:
                c0 = time.thread_time()
                out = asyncio.run(throughput._jobqueue_throughput(cfg, path, args.variant))
                cpu = (time.thread_time() - c0) / args.jobs * 1e6
                statuses = count_statuses(path)
            if statuses != {"completed": args.jobs}:
                raise SystemExit(f"{mode}: rows read back {statuses}")
            res[mode].append((out["jobs_per_s"], cpu))
    set_mode("base")
    base = res["base"]
    for mode in modes:
        rate = statistics.median(x[0] for x in res[mode])
        cpu = statistics.median(x[1] for x in res[mode])
        x_rate = statistics.median(a[0] / b[0] for a, b in zip(res[mode], base, strict=True))
        x_cpu = statistics.median(a[1] / b[1] for a, b in zip(res[mode], base, strict=True))
        print(
            f"{args.variant:13s} {mode:9s} {rate:8.0f} jobs/s  loop CPU {cpu:5.1f} us/job  "
            f"vs base: rate x{x_rate:.3f}, loop CPU x{x_cpu:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
