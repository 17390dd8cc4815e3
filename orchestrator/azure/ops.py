"""The operation runner every Azure target calls: :func:`run_op`.

One whole operation (a read, a ``begin_*`` and its poller, an upload) runs through
:func:`orchestrator.retry.call_with_retries` with azure-core's ``RetryPolicy`` already
retried each HTTP call, so what it never retries — 409 "busy", long-running operations that
ended Canceled — is retried here, and, for idempotent operations, the transient statuses it gave
up on, each within the budget :mod:`orchestrator.azure.budgets` sets for that kind of operation.  What still fails is raised as a
typed :class:`~orchestrator.azure.errors.AzureOperationError` (:class:`AzureNotFound` for a 404),
non-retryable, so the engine does not retry it a second time over.

Under ``--simulate`` the waits run on the simulator's virtual clock.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from orchestrator.azure.budgets import PROBE, READ, Budget
from orchestrator.azure.errors import describe, error_code, typed
from orchestrator.azure.session import AzureSession, session_of
from orchestrator.errors import DeployctlError, Interrupted, TransientError
from orchestrator.retry import call_with_retries, classify
from orchestrator.target import TargetContext

T = TypeVar("T")


class _SdkDotFilter:
    """azure-ai-ml's AzureMLPolling prints a bare "." to stdout on every LRO poll (from the
    poller's own thread), which would corrupt ``-o json`` output and CI logs.  While an operation
    of ours runs, this stdout wrapper drops exactly those writes; everything else passes through."""

    active = 0
    lock = threading.Lock()

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        if text == "." and _SdkDotFilter.active:
            return 1
        return int(self._inner.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.contextmanager
def _quiet_sdk_progress() -> Any:
    with _SdkDotFilter.lock:
        if not isinstance(sys.stdout, _SdkDotFilter):
            sys.stdout = _SdkDotFilter(sys.stdout)
        _SdkDotFilter.active += 1
    try:
        yield
    finally:
        with _SdkDotFilter.lock:
            _SdkDotFilter.active -= 1


def run_op(ctx: TargetContext, what: str, fn: Callable[[], T], *, resource: str | None = None,
           budget: Budget = READ) -> T:
    """Run one whole operation within ``budget`` (:mod:`orchestrator.azure.budgets`): what
    azure-core never retries (409 busy, OperationCanceled) always, and, for an idempotent
    operation, also the transient statuses azure-core gave up on."""
    with _quiet_sdk_progress():
        return _run_op(ctx, what, fn, resource=resource, budget=budget)


def _run_op(ctx: TargetContext, what: str, fn: Callable[[], T], *, resource: str | None, budget: Budget) -> T:
    def on_retry(n: int, wait: float, reason: str) -> None:
        ctx.progress(f"{what}: retry {n} in {wait:.0f}s ({reason})")

    def attempt() -> T:
        try:
            return fn()
        except DeployctlError:
            raise
        except Exception as e:
            if lro_canceled(e):  # azure-core ends a Canceled LRO with the poll's 200: say it is transient
                raise TransientError(describe(e), reason="OperationCanceled: canceled by another operation") from e
            raise

    where: dict[str, Any] = {"target": ctx.config.name, "resource": resource, "operation": what}
    session = session_of(ctx.options)
    try:
        return call_with_retries(attempt, what=what, settings=budget.settings, http_retried=not budget.idempotent,
                                 on_retry=on_retry, sleep=sleeper(session), now=clock_of(session), cancel=ctx.cancel)
    except TransientError as e:  # retries spent: the engine must not retry it a second time over
        cause = e.__cause__ if isinstance(e.__cause__, BaseException) else e
        raise typed(f"still failing after retries: {describe(cause)}", cause, **where) from cause
    except DeployctlError:
        raise
    except Exception as e:
        transient = classify(e, http_retried=True).transient
        raise typed(("still failing after retries: " if transient else "") + describe(e), e, **where) from e


def lro_canceled(e: BaseException) -> bool:
    """A long-running operation that ended Canceled (Azure ML: preempted by a higher-priority
    operation, documented as retryable) — as opposed to Failed, which is not retried blindly."""
    if error_code(e) == "OperationCanceled":
        return True
    resp = getattr(e, "response", None)
    try:
        body = json.loads(resp.text()) if resp is not None else None
    except Exception:
        return False
    return isinstance(body, dict) and str(body.get("status", "")).lower() in ("canceled", "cancelled")


def clock_of(session: AzureSession | None) -> Callable[[], float]:
    """The clock retry budgets are measured on: the simulator's virtual one when simulating."""
    clock = getattr(getattr(session, "simulator", None), "clock", None)
    if clock is not None and hasattr(clock, "now"):
        return clock.now
    import time

    return time.monotonic


def sleeper(session: AzureSession | None) -> Callable[[float], None]:
    """Sleep on the simulator's virtual clock when simulating, else for real."""
    clock = getattr(getattr(session, "simulator", None), "clock", None)
    if clock is not None and hasattr(clock, "sleep"):
        return clock.sleep
    import time

    return time.sleep


def busy_answer(status: int, body: Any) -> bool:
    """Is an HTTP answer from a scoring endpoint its front door being busy (retry), rather than
    the model failing (do not)?  429, 503 and 504 always; 500 and 502 only with the platform's
    ``{"error": {"code": ...}}`` envelope — the scoring server's own errors (``run()`` raising,
    a container that cannot start) carry ``{"message": ...}`` and are real failures."""
    if status in (429, 503, 504):
        return True
    envelope = isinstance(body, dict) and isinstance(body.get("error"), dict) and "code" in body["error"]
    return status in (500, 502) and envelope


def probe(ctx: TargetContext, what: str, request: Callable[[], tuple[int, Any]], *, budget: Budget = PROBE) -> str | None:
    """Run a smoke test or health check (``request()`` -> (status, body)); None when healthy, else
    what went wrong.  A busy answer (:func:`busy_answer`) is asked again within ``budget``."""
    def once() -> None:
        try:
            status, body = request()
        except Interrupted:
            raise
        except Exception as e:  # azure-core (and run_op) already retried: report, do not retry
            raise _ProbeFailed(describe(e)) from e
        if 200 <= status < 300:
            return
        why = f"HTTP {status}: {str(body)[:300]}"
        if busy_answer(status, body):
            raise TransientError(why, reason=f"scoring answered HTTP {status}")
        raise _ProbeFailed(why)

    session = session_of(ctx.options)
    try:
        call_with_retries(once, what=what, settings=budget.settings, sleep=sleeper(session), now=clock_of(session),
                          on_retry=lambda n, wait, reason: ctx.progress(f"{what}: retry {n} in {wait:.0f}s ({reason})"))
    except (TransientError, _ProbeFailed) as e:
        return e.message
    return None


class _ProbeFailed(DeployctlError):
    """A probe's definite failure (not retried)."""
