"""azure-core pipeline policies deployctl adds to every Azure client.

:class:`ArmThrottlePolicy` keeps the run's requests within ARM's limits
(:mod:`orchestrator.azure.throttle`).

:class:`LoggedRetryPolicy` is azure-core's own ``RetryPolicy`` (same statuses, same Retry-After
handling, 409 never retried) with two changes: each retry is logged with its reason and wait, and
the exponential backoff gets jitter so parallel targets do not retry in lockstep.  It is the only
HTTP-level retry; whole operations are retried by :mod:`orchestrator.retry` with
``http_retried=True``, so no HTTP call is retried twice over.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from azure.core.pipeline.policies import HTTPPolicy, RetryPolicy

from orchestrator.azure.throttle import ArmThrottle

log = logging.getLogger("deployctl.azure")


class LoggedRetryPolicy(RetryPolicy):
    def __init__(self, *, jitter: float = 0.5, on_retry: Callable[[str, float, str], None] | None = None,
                 rng: random.Random | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jitter = jitter
        self.on_retry = on_retry
        self._rng = rng or random.Random()

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        base = super().get_backoff_time(settings)
        return base + self._rng.uniform(0, self.jitter * base) if base > 0 else base

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        after = self.get_retry_after(response) if response is not None else None
        wait = after if after else self.get_backoff_time(settings)
        history = settings.get("history") or []
        last = history[-1] if history else None
        if response is not None:
            reason = f"HTTP {response.http_response.status_code}"
            request = response.http_request
        else:
            reason = type(getattr(last, "error", None)).__name__ if last else "connection error"
            request = getattr(last, "http_request", None)
        # Path only: query strings can carry SAS tokens.
        where = f"{request.method} {urlsplit(request.url).path}" if request is not None else "request"
        log.warning("retrying %s in %.1fs: %s%s", where, wait, reason, " (Retry-After)" if after else "")
        if self.on_retry:
            self.on_retry(where, wait, reason)
        super().sleep(settings, transport, response)


class ArmThrottlePolicy(HTTPPolicy):
    """azure-core policy: wait for :class:`ArmThrottle`'s token, send, feed the answer back.
    Waits go through the transport's ``sleep`` so a simulated run waits in simulated time."""

    def __init__(self, throttle: ArmThrottle) -> None:
        super().__init__()
        self.throttle = throttle

    def send(self, request: Any) -> Any:
        http = request.http_request
        wait = self.throttle.reserve(http.method, http.url)
        if wait > 0:
            request.context.transport.sleep(wait)
        response = self.next.send(request)
        resp = response.http_response
        self.throttle.observe(http.method, http.url, resp.status_code, resp.headers)
        return response
