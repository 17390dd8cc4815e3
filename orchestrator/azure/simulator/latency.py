"""How long the simulated cloud takes: per call and per long-running operation.

Durations are simulated seconds on the :class:`~.clock.VirtualClock`; with ``realtime=True`` on
the clock they are really waited (benchmarks of apply against a slow cloud).  Spec strings
(``DEPLOYCTL_SIMULATE_LATENCY``): ``call=0.2,endpoint=90,deployment=300,compute=120,default=20,realtime=1``
(``scale=0.01`` multiplies every duration).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_LRO = {"endpoint": 60.0, "deployment": 240.0, "compute": 120.0, "delete": 30.0, "default": 20.0}


@dataclass
class LatencyModel:
    call: float = 0.0  # every request
    lro: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LRO))
    scale: float = 1.0
    realtime: bool = False

    def lro_seconds(self, kind: str) -> float:
        return self.lro.get(kind, self.lro["default"]) * self.scale

    def call_seconds(self) -> float:
        return self.call * self.scale

    @classmethod
    def parse(cls, spec: str | None) -> LatencyModel:
        m = cls()
        for item in (s.strip() for s in (spec or "").split(",") if s.strip()):
            key, _, value = item.partition("=")
            try:
                if key == "call":
                    m.call = float(value)
                elif key == "scale":
                    m.scale = float(value)
                elif key == "realtime":
                    m.realtime = value.lower() in ("1", "true", "yes")
                elif key in DEFAULT_LRO:
                    m.lro[key] = float(value)
                else:
                    raise ValueError(f"unknown key {key!r} (call, scale, realtime, {', '.join(DEFAULT_LRO)})")
            except ValueError as e:
                raise ValueError(f"latency spec {spec!r}: {item!r}: {e}") from None
        return m
