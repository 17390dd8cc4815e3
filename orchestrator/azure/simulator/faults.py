"""Deterministic, seeded fault injection.

Kinds: ``429`` (with Retry-After), ``500`` ``502`` ``503`` ``504``, ``reset`` (connection reset
before a response: azure-core's ``ServiceRequestError``), ``timeout`` (read timeout:
``ServiceResponseError``), ``slow`` (the response arrives after ``slow_s`` simulated seconds),
``lro-failed`` / ``lro-canceled`` (the next long-running operation ends Failed / Canceled).

Three ways to ask for them, combinable:

- by rate: ``faults.set_rate(0.1, kinds=("429", "503"))`` — each request draws from a seeded RNG;
- by operation: ``faults.on("OnlineEndpoints_CreateOrUpdate", "429", times=2)`` — the operationId
  from the REST spec (or the simulator's own names: ``Blob_Put``, ``Blob_Get``, ``Score`` ...);
- as a scripted sequence: ``faults.script("429", "503")`` — the next requests, in order.

Scripted and rate faults skip the storage data planes (blob, queue): azure-storage's clients made
by ``get_blob_client()``/``upload_blob()`` wrap the transport in a ``TransportWrapper`` whose
``sleep()`` is the real ``time.sleep``, so their retries would wait in real time.  Faults named for
a storage operation (``503@Blob_Put``) still apply; build a ``BlobClient`` directly with
``transport=`` to keep its retries on the virtual clock.

Spec strings (``--simulate`` faults, ``DEPLOYCTL_SIMULATE_FAULTS``), comma-separated items:
``rate=0.1``, ``kinds=429|503``, ``seed=3``, ``retry_after=2``, ``slow=5``, ``KIND:N`` (script
KIND N times), ``KIND@OPERATION:N`` (N times on that operation).  Example:
``"rate=0.05,seed=3"`` or ``"429:2,503:1,lro-failed@OnlineDeployments_CreateOrUpdate:1"``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KINDS = ("429", "500", "502", "503", "504", "reset", "timeout", "slow", "lro-failed", "lro-canceled")
LRO_KINDS = ("lro-failed", "lro-canceled")


@dataclass
class Fault:
    kind: str
    retry_after: float = 1.0
    slow_s: float = 5.0


@dataclass
class FaultInjector:
    seed: int = 0
    retry_after: float = 1.0
    slow_s: float = 5.0
    rate: float = 0.0
    rate_kinds: tuple[str, ...] = ("429", "500", "503")
    scripted: list[str] = field(default_factory=list)
    by_operation: dict[str, list[str]] = field(default_factory=dict)
    injected: list[tuple[str, str]] = field(default_factory=list)  # (operation, kind) log

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _check(self, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        return kind

    def set_rate(self, rate: float, *, kinds: tuple[str, ...] | None = None) -> FaultInjector:
        self.rate = float(rate)
        if kinds:
            self.rate_kinds = tuple(self._check(k) for k in kinds)
        return self

    def on(self, operation: str, kind: str, *, times: int = 1) -> FaultInjector:
        self.by_operation.setdefault(operation.lower(), []).extend([self._check(kind)] * times)
        return self

    def script(self, *kinds: str) -> FaultInjector:
        self.scripted.extend(self._check(k) for k in kinds)
        return self

    def clear(self) -> None:
        self.rate, self.scripted, self.by_operation = 0.0, [], {}

    def _fault(self, operation: str, kind: str) -> Fault:
        self.injected.append((operation, kind))
        return Fault(kind, self.retry_after, self.slow_s)

    def next_request(self, operation: str, *, untargeted: bool = True) -> Fault | None:
        """The fault for this request, if any (long-running-operation outcomes excluded).
        ``untargeted=False``: only faults named for this operation apply (see the simulator)."""
        queue = self.by_operation.get(operation.lower())
        if queue and queue[0] not in LRO_KINDS:
            return self._fault(operation, queue.pop(0))
        if not untargeted:
            return None
        if self.scripted and self.scripted[0] not in LRO_KINDS:
            return self._fault(operation, self.scripted.pop(0))
        if self.rate and self._rng.random() < self.rate:
            kinds = [k for k in self.rate_kinds if k not in LRO_KINDS]
            if kinds:
                return self._fault(operation, self._rng.choice(kinds))
        return None

    def lro_outcome(self, operation: str) -> str | None:
        """``lro-failed`` / ``lro-canceled`` when the long-running operation starting now must end so."""
        queue = self.by_operation.get(operation.lower())
        if queue and queue[0] in LRO_KINDS:
            return self._fault(operation, queue.pop(0)).kind
        if self.scripted and self.scripted[0] in LRO_KINDS:
            return self._fault(operation, self.scripted.pop(0)).kind
        if self.rate and any(k in LRO_KINDS for k in self.rate_kinds) and self._rng.random() < self.rate:
            return self._fault(operation, self._rng.choice([k for k in self.rate_kinds if k in LRO_KINDS])).kind
        return None

    @classmethod
    def parse(cls, spec: str | None, *, default_seed: int = 0) -> FaultInjector:
        inj = cls(seed=default_seed)
        if not spec:
            return inj
        items = [s.strip() for s in spec.split(",") if s.strip()]
        for item in items:  # settings first, so the RNG is seeded before use
            key, _, value = item.partition("=")
            if not _:
                continue
            try:
                if key == "seed":
                    inj.seed = int(value)
                    inj._rng = random.Random(inj.seed)
                elif key == "rate":
                    inj.rate = float(value)
                elif key == "kinds":
                    inj.rate_kinds = tuple(inj._check(k) for k in value.split("|") if k)
                elif key == "retry_after":
                    inj.retry_after = float(value)
                elif key == "slow":
                    inj.slow_s = float(value)
                else:
                    raise ValueError(f"unknown setting {key!r}")
            except ValueError as e:
                raise ValueError(f"fault spec {spec!r}: {item!r}: {e}") from None
        for item in items:
            if "=" in item:
                continue
            what, _, n = item.partition(":")
            try:
                times = int(n) if n else 1
                kind, _, op = what.partition("@")
                if op:
                    inj.on(op, kind, times=times)
                else:
                    inj.script(*[kind] * times)
            except ValueError as e:
                raise ValueError(f"fault spec {spec!r}: {item!r}: {e}") from None
        return inj
