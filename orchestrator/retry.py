"""The one retry layer for whole operations, on tenacity.

Errors are classified as transient (retry with exponential backoff and jitter, honouring the
service's Retry-After) or permanent (fail fast with the service's own message):

- transient: 408, 429, 500, 502, 503, 504; connection resets and timeouts; ARM 409 "another
  operation is in progress" / resource "Updating"; Azure ML ``OperationCanceled``;
  :class:`~orchestrator.errors.TransientError`.
- permanent: every other 4xx (400 bad request, 401/403 auth, 404 not found, quota), and anything
  unrecognised.

Coordination with azure-core: SDK clients keep azure-core's own ``RetryPolicy`` for single HTTP
calls (it already retries 408/429/5xx with Retry-After).  Operations made of those calls pass
``http_retried=True`` here, so a 429 or 503 that reaches this layer after azure-core gave up is
not retried a second time over; only what azure-core never retries — 409 conflicts, long-running
operations that ended Failed with a transient code or Canceled — is retried here.  No HTTP call
is retried twice over.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.errors import Interrupted, TransientError

if TYPE_CHECKING:
    import tenacity

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Error codes (ARM and Azure ML) that mean "busy, try again", whatever the HTTP status.
TRANSIENT_CODES = frozenset({
    "OperationCanceled", "Conflict", "AnotherOperationInProgress", "OperationNotAllowed_InProgress",
    "RetryableErrorDueToAnotherOperation", "ResourceNotReady", "TooManyRequests", "ServerBusy",
    "InternalServerError", "ServiceUnavailable", "GatewayTimeout",
})
# Messages of 409s that are a busy resource, not a real conflict (from Azure ML and ARM).
_BUSY_PHRASES = ("in progress", "updating state", "is updating", "another operation", "is being", "provisioning state")


@dataclass(frozen=True)
class RetrySettings:
    """Budget for one operation.  Azure ML endpoint operations can stay busy for minutes (a
    deployment update holds the endpoint), so the elapsed budget is generous while each wait is
    capped to keep progress visible."""

    attempts: int = 6
    initial_wait: float = 1.0
    max_wait: float = 60.0
    multiplier: float = 2.0
    jitter: float = 1.0
    max_elapsed: float = 900.0


@dataclass(frozen=True)
class Classification:
    transient: bool
    reason: str
    retry_after: float | None = None


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if code is None:
        resp = getattr(exc, "response", None)
        code = getattr(resp, "status_code", None)
    return code if isinstance(code, int) else None


def _error_code(exc: BaseException) -> str | None:
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None) or getattr(exc, "error_code", None)
    return code if isinstance(code, str) else None


def retry_after_of(exc: BaseException) -> float | None:
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        return exc.retry_after
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None) or {}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        v = headers.get(name)
        if v is not None:
            try:
                return float(v) / 1000.0
            except ValueError:
                pass
    v = headers.get("Retry-After") or headers.get("retry-after")
    if v is not None:
        try:
            return float(v)
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                return max(0.0, parsedate_to_datetime(v).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def classify(exc: BaseException, *, http_retried: bool = False) -> Classification:
    """Is ``exc`` worth retrying?  Pure (reads only the exception)."""
    if isinstance(exc, TransientError):
        return Classification(True, exc.reason or str(exc), exc.retry_after)
    if getattr(exc, "retryable", None) is False:
        return Classification(False, str(exc))
    name = type(exc).__name__
    status = _status(exc)
    code = _error_code(exc)
    message = str(getattr(exc, "message", None) or exc)
    if status is None:
        # azure-core: ServiceRequestError (never reached the service), ServiceResponseError
        # (connection dropped or timed out while waiting); stdlib connection errors.
        if name in ("ServiceRequestError", "ServiceResponseError") or isinstance(
            exc, ConnectionError | TimeoutError
        ):
            if http_retried:
                return Classification(False, f"connection failed after retries: {message}")
            return Classification(True, f"connection problem: {name}")
        if code in TRANSIENT_CODES:
            return Classification(True, f"{code}: {message}")
        return Classification(False, message)
    if status == 409:
        if code in TRANSIENT_CODES or any(p in message.lower() for p in _BUSY_PHRASES):
            return Classification(True, f"409 {code or 'Conflict'}: resource busy", retry_after_of(exc))
        return Classification(False, message)
    if status in TRANSIENT_STATUS:
        if http_retried:
            return Classification(False, f"HTTP {status} persisted after the client's retries: {message}")
        return Classification(True, f"HTTP {status}", retry_after_of(exc))
    return Classification(False, message)


def _backoff(s: RetrySettings, rng: random.Random, attempt: int, exc: BaseException | None) -> float:
    """Exponential backoff with full jitter, but never shorter than the service's Retry-After."""
    backoff = min(s.max_wait, s.initial_wait * s.multiplier ** (attempt - 1))
    wait = backoff + rng.uniform(0, s.jitter)
    after = getattr(exc, "_deployctl_retry_after", None)
    if after is not None:
        wait = max(wait, after)
    return min(wait, max(s.max_wait, after or 0.0))


def call_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    settings: RetrySettings = RetrySettings(),
    http_retried: bool = False,
    on_retry: Callable[[int, float, str], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    rng: random.Random | None = None,
    now: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``fn``; retry it while it fails transiently.  ``on_retry(attempt, wait, reason)`` is
    called before each wait, so every retry is logged with its reason.  The last error is raised
    as it was (permanent errors on the first attempt, untouched).  ``now`` is the clock the
    elapsed budget is measured on (a simulator's virtual clock, with its ``sleep``).

    ``cancel`` (Ctrl-C) ends a wait at once with :class:`Interrupted`, and no attempt starts
    once it is set.  Real waits (``sleep`` None or ``time.sleep``) wait on the event itself; a
    custom ``sleep`` (a simulator's virtual clock, a test's recorder) is checked around."""

    def transient(exc: BaseException) -> bool:
        c = classify(exc, http_retried=http_retried)
        if c.transient:
            try:
                exc._deployctl_retry_after = c.retry_after  # type: ignore[attr-defined]
                exc._deployctl_reason = c.reason  # type: ignore[attr-defined]
            except AttributeError:  # pragma: no cover - exceptions with __slots__
                pass
        return c.transient

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        if on_retry:
            on_retry(state.attempt_number, wait, getattr(exc, "_deployctl_reason", str(exc)))

    def pause(seconds: float) -> None:
        if cancel is None:
            (sleep or time.sleep)(seconds)
            return
        if not cancel.is_set():
            if sleep is None or sleep is time.sleep:
                cancel.wait(seconds)
            else:
                sleep(seconds)
        if cancel.is_set():
            raise Interrupted(f"interrupted while waiting to retry {what}")

    # The first attempt runs plainly: most calls succeed, and a run whose calls all succeed never
    # imports tenacity (a no-op apply's budget is a few hundred milliseconds, start-up included).
    started = now()
    try:
        return fn()
    except BaseException as e:
        if settings.attempts <= 1 or not transient(e):
            raise
        first: list[BaseException] = [e]

    import tenacity

    gen = rng or random.Random()

    def attempt() -> T:
        if first:  # attempt 1 already ran above: replay its error so tenacity counts and waits on it
            raise first.pop()
        return fn()

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return _backoff(settings, gen, state.attempt_number, exc)

    def stop(state: tenacity.RetryCallState) -> bool:
        return state.attempt_number >= settings.attempts or now() - started >= settings.max_elapsed

    retryer = tenacity.Retrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception(transient),
        before_sleep=before_sleep,
        sleep=pause,
        reraise=True,
    )
    result: Any = retryer(attempt)
    return result
