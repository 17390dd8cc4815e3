"""The operation runner every Azure target calls: :func:`run_op`.

One whole operation (a read, a ``begin_*`` and its poller, an upload) runs through
:func:`orchestrator.retry.call_with_retries` with ``http_retried=True``: azure-core's
``RetryPolicy`` already retried each HTTP call, so only what it never retries — 409 "busy",
long-running operations that ended Canceled — is retried here.  What still fails is raised as a
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

from orchestrator.azure.errors import describe, error_code, typed
from orchestrator.azure.session import AzureSession, session_of
from orchestrator.errors import DeployctlError, TransientError
from orchestrator.retry import RetrySettings, call_with_retries, classify
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
           settings: RetrySettings = RetrySettings()) -> T:
    """Run one whole operation, retrying only what azure-core does not (409 busy, OperationCanceled)."""
    with _quiet_sdk_progress():
        return _run_op(ctx, what, fn, resource=resource, settings=settings)


def _run_op(ctx: TargetContext, what: str, fn: Callable[[], T], *, resource: str | None,
            settings: RetrySettings) -> T:
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
    try:
        return call_with_retries(attempt, what=what, settings=settings, http_retried=True, on_retry=on_retry,
                                 sleep=sleeper(session_of(ctx.options)))
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


def sleeper(session: AzureSession | None) -> Callable[[float], None]:
    """Sleep on the simulator's virtual clock when simulating, else for real."""
    clock = getattr(getattr(session, "simulator", None), "clock", None)
    if clock is not None and hasattr(clock, "sleep"):
        return clock.sleep
    import time

    return time.sleep
