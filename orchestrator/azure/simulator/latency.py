"""How long the simulated cloud takes: per call and per long-running operation.

Durations are simulated seconds on the :class:`~.clock.VirtualClock`; with ``realtime=True`` on
the clock they are really waited (benchmarks of apply against a slow cloud).  Spec strings
(``--simulate-latency`` / ``DEPLOYCTL_SIMULATE_LATENCY``), comma-separated ``key=value``:

- ``call=0.2`` seconds per request, or a range ``call=0.1-0.3`` (uniform, seeded);
- ``lro=2`` every long-running operation kind; ``endpoint=90``, ``deployment=300``,
  ``compute=120``, ``delete=30``, ``default=20`` one kind;
- ``scale=0.01`` multiplies every duration; ``realtime=1`` makes the clock a wall clock;
- ``arm=50`` multiplies ARM's request limits (bucket sizes and refill rates; ``arm=0``: no
  limits): a benchmark that compresses Azure's durations by a factor compresses ARM's refill
  by the same factor, or it measures throttling that the real durations would never meet.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

DEFAULT_LRO = {"endpoint": 60.0, "deployment": 240.0, "compute": 120.0, "delete": 30.0, "default": 20.0}
KEYS = ("call", "lro", *DEFAULT_LRO, "scale", "realtime", "arm")


class LatencySpecError(ValueError):
    """A latency spec that cannot be read (the message names the item and the keys allowed)."""


@dataclass
class LatencyModel:
    call: float = 0.0  # every request (the low end of call_range)
    call_high: float | None = None  # set: a request takes uniform(call, call_high)
    lro: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LRO))
    scale: float = 1.0
    realtime: bool = False
    arm: float = 1.0  # ARM's request limits multiplied by this (0: unlimited)
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._rng_lock = threading.Lock()

    def lro_seconds(self, kind: str) -> float:
        return self.lro.get(kind, self.lro["default"]) * self.scale

    def call_seconds(self) -> float:
        if self.call_high is None:
            return self.call * self.scale
        with self._rng_lock:
            return self._rng.uniform(self.call, self.call_high) * self.scale

    @classmethod
    def parse(cls, spec: str | None) -> LatencyModel:
        """Raises :class:`LatencySpecError` naming the bad item."""
        m = cls()
        for item in (s.strip() for s in (spec or "").split(",") if s.strip()):
            key, eq, value = (p.strip() for p in item.partition("="))
            try:
                if not eq or not value:
                    raise ValueError("expected key=value")
                if key == "call":
                    low, dash, high = value.partition("-")
                    m.call, m.call_high = _seconds(low), (_seconds(high) if dash else None)
                    if m.call_high is not None and m.call_high < m.call:
                        raise ValueError(f"the range {value} goes backwards")
                elif key == "lro":
                    m.lro = {k: _seconds(value) for k in DEFAULT_LRO}
                elif key == "scale":
                    m.scale = _seconds(value)
                elif key == "arm":
                    m.arm = _seconds(value)
                elif key == "realtime":
                    if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                        raise ValueError("expected 1 or 0")
                    m.realtime = value.lower() in ("1", "true", "yes")
                elif key in DEFAULT_LRO:
                    m.lro[key] = _seconds(value)
                else:
                    raise ValueError(f"unknown key {key!r}")
            except ValueError as e:
                raise LatencySpecError(f"latency spec {spec!r}: {item!r}: {e} (keys: {', '.join(KEYS)}; "
                                       "e.g. 'call=0.1-0.3,lro=2,realtime=1')") from None
        return m


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"{text!r} is not a number of seconds")
    return value
