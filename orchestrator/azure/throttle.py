"""Stay under Azure Resource Manager's request limits instead of bouncing off them.

ARM throttles with token buckets (since 2024, per region): per subscription and principal,
reads 250 tokens refilled at 25/s, writes and deletes 200 at 10/s (learn.microsoft.com,
"Understand how Azure Resource Manager throttles requests").  A fleet apply with dozens of
targets polling long-running operations in parallel would drain the read bucket in seconds and
then spend its time in 429 back-offs, each retry costing another token.

:class:`ArmThrottle` keeps the same buckets on this side, one per (subscription, kind), shared by
every client of a run: a request waits for a token before it is sent, so the run's request rate
never exceeds what ARM refills, whatever ``--parallel`` says.  Azure's answers correct the local
estimate: ``x-ms-ratelimit-remaining-subscription-<kind>`` lowers the tokens (other tools share
the subscription's budget), and a 429's ``Retry-After`` pauses every request of that bucket, not
only the one that was refused.

:class:`~orchestrator.azure.policies.ArmThrottlePolicy` is the azure-core policy that applies
it, placed after the retry policy so every attempt (retries included) takes a token.  Only ARM
hosts are throttled; data planes (blob, scoring, registries) have their own limits.  This module
imports no Azure SDK: the engine sizes its parallelism from these limits before any is loaded.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

ARM_HOSTS = frozenset({"management.azure.com", "management.usgovcloudapi.net", "management.chinacloudapi.cn"})


@dataclass(frozen=True)
class BucketLimit:
    capacity: float
    refill_per_s: float


# Per subscription (and per principal) and per tenant alike.
ARM_LIMITS: Mapping[str, BucketLimit] = {
    "reads": BucketLimit(250, 25),
    "writes": BucketLimit(200, 10),
    "deletes": BucketLimit(200, 10),
}

_SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)


def request_kind(method: str) -> str:
    """ARM's bucket for an HTTP method (POST actions, e.g. listKeys, count as writes)."""
    method = method.upper()
    if method in ("GET", "HEAD", "OPTIONS"):
        return "reads"
    return "deletes" if method == "DELETE" else "writes"


def bucket_scope(url: str) -> str | None:
    """The subscription an ARM URL counts against, ``"tenant"`` for tenant-level calls, or None
    for a host ARM does not serve."""
    parts = urlsplit(url)
    if parts.hostname not in ARM_HOSTS:
        return None
    m = _SUBSCRIPTION.match(parts.path)
    return m.group(1).lower() if m else "tenant"


class TokenBucket:
    """A token bucket on an injected clock.  :meth:`reserve` takes a token now or books the next
    free one and says how long to wait for it, so waiting threads are served in order and
    never all wake at once."""

    def __init__(self, limit: BucketLimit, now: float) -> None:
        self.limit = limit
        self._tokens = float(limit.capacity)
        self._at = now
        self._paused_until = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.limit.capacity, self._tokens + (now - self._at) * self.limit.refill_per_s)
            self._at = now

    def reserve(self, now: float) -> float:
        """Take one token; the seconds to wait before using it (0: go now)."""
        self._refill(now)
        self._tokens -= 1.0
        wait = max(0.0, -self._tokens / self.limit.refill_per_s)
        return max(wait, self._paused_until - now)

    def try_take(self, now: float) -> float:
        """The server's side: take a token if there is one (0.0), else refuse and say in how
        many seconds one will be there (ARM's Retry-After)."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.limit.refill_per_s

    def observe_remaining(self, remaining: int, now: float) -> None:
        """ARM says how many tokens are left: never believe we have more."""
        self._refill(now)
        self._tokens = min(self._tokens, float(remaining))

    def pause(self, seconds: float, now: float) -> None:
        """ARM refused a request (429): nobody sends on this bucket for ``seconds``."""
        self._refill(now)
        self._tokens = min(self._tokens, 0.0)
        self._paused_until = max(self._paused_until, now + seconds)

    @property
    def tokens(self) -> float:
        return self._tokens


class ArmThrottle:
    """The run's ARM buckets (one per subscription and kind), on ``clock`` (seconds) and waiting
    with ``sleep`` — the simulator's virtual clock under ``--simulate``, real time otherwise."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 limits: Mapping[str, BucketLimit] = ARM_LIMITS) -> None:
        self.clock = clock
        self.limits = limits
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()
        self.waited = 0.0  # total seconds requests waited for a token (for reports and tests)
        self.throttled = 0  # 429s seen

    def _bucket(self, scope: str, kind: str) -> TokenBucket:
        key = (scope, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.limits[kind], self.clock())
        return bucket

    def reserve(self, method: str, url: str) -> float:
        """Book a token for this request; the seconds to wait before sending it."""
        scope = bucket_scope(url)
        kind = request_kind(method)
        if scope is None or kind not in self.limits:  # not ARM, or no limit on this kind
            return 0.0
        with self._lock:
            wait = self._bucket(scope, kind).reserve(self.clock())
            self.waited += wait
            return wait

    def observe(self, method: str, url: str, status: int, headers: Mapping[str, str]) -> None:
        scope = bucket_scope(url)
        if scope is None:
            return
        kind = request_kind(method)
        if kind not in self.limits:
            return
        headers = {k.lower(): v for k, v in headers.items()}
        remaining = headers.get(f"x-ms-ratelimit-remaining-subscription-{kind}")
        with self._lock:
            bucket = self._bucket(scope, kind)
            now = self.clock()
            if remaining is not None and remaining.strip().isdigit():
                bucket.observe_remaining(int(remaining), now)
            if status == 429:
                self.throttled += 1
                bucket.pause(_retry_after(headers), now)


def _retry_after(headers: Mapping[str, str]) -> float:
    value = headers.get("retry-after") or ""
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0  # an HTTP-date or nothing: ARM sends seconds; a short pause is safe either way


# The engine's default parallelism for Azure targets.  A target waiting on a long-running
# operation reads once per poll (ARM's LROs advise 5-30 s; deployctl's own waits poll no faster
# than every 5 s), so the read refill sustains ``refill x interval`` waiting targets.  No
# headroom is kept: the run's buckets (above) pace whatever goes beyond, so running more targets
# than this delays their polls a little, it never draws 429s.  Writes come in short bursts per
# target (a handful each) that the 200-token bucket absorbs.
LRO_POLL_INTERVAL_S = 5.0


def sustainable_parallelism(poll_interval_s: float = LRO_POLL_INTERVAL_S) -> int:
    """How many Azure targets one subscription can have waiting at once within ARM's read refill."""
    return max(1, int(ARM_LIMITS["reads"].refill_per_s * poll_interval_s))
