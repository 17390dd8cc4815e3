"""The retry classifier and loop (pure, no sleeping)."""

from __future__ import annotations

import threading

import pytest

from orchestrator.errors import Interrupted, TargetError, TransientError
from orchestrator.retry import RetrySettings, call_with_retries, classify, retry_after_of

from .test_engine import HttpError


class ArmError(HttpError):
    def __init__(self, status, code, message="x", headers=None):
        super().__init__(status, message, headers)

        class E:
            pass

        self.error = E()
        self.error.code = code


class ServiceResponseError(Exception):
    """Same name as azure-core's: a connection dropped while waiting for the answer."""


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses(status):
    assert classify(HttpError(status)).transient
    # ...unless azure-core's own RetryPolicy already retried this HTTP call
    assert not classify(HttpError(status), http_retried=True).transient


@pytest.mark.parametrize("status", [400, 401, 403, 404, 412])
def test_permanent_statuses_fail_fast_with_the_service_message(status):
    c = classify(HttpError(status, "The subscription is not registered"))
    assert not c.transient and c.reason == "The subscription is not registered"


def test_conflicts():
    assert classify(HttpError(409, "Endpoint is in Updating state")).transient
    assert classify(ArmError(409, "AnotherOperationInProgress")).transient
    assert classify(HttpError(409, "Another operation is in progress", ), http_retried=True).transient  # never retried by azure-core
    assert not classify(HttpError(409, "A resource with this name already exists")).transient


def test_codes_and_connections():
    assert classify(ArmError(400, "OperationCanceled")).transient is False  # a 400 stays permanent
    assert classify(ServiceResponseError("timed out")).transient
    assert not classify(ServiceResponseError("timed out"), http_retried=True).transient
    assert classify(ConnectionResetError()).transient
    assert classify(TimeoutError()).transient
    assert classify(TransientError("busy", retry_after=3)).retry_after == 3
    assert not classify(TargetError("no", retryable=False)).transient
    assert not classify(ValueError("bug")).transient

    class LroFailed(Exception):
        error_code = "OperationCanceled"

    assert classify(LroFailed("canceled by a higher-priority operation")).transient


def test_retry_after_forms():
    assert retry_after_of(HttpError(429, headers={"Retry-After": "12"})) == 12
    assert retry_after_of(HttpError(429, headers={"retry-after-ms": "1500"})) == 1.5
    assert retry_after_of(HttpError(429, headers={"x-ms-retry-after-ms": "250"})) == 0.25
    assert retry_after_of(HttpError(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after_of(HttpError(429)) is None


def test_loop_waits_backoff_and_logs_each_retry():
    errors = [HttpError(503), HttpError(429, headers={"Retry-After": "30"}), None]
    sleeps, logged = [], []

    def op():
        e = errors.pop(0)
        if e:
            raise e
        return "ok"

    s = RetrySettings(attempts=5, initial_wait=1, multiplier=2, jitter=0, max_wait=60)
    assert call_with_retries(op, what="create x", settings=s, sleep=sleeps.append,
                             on_retry=lambda n, w, r: logged.append((n, w, r))) == "ok"
    assert sleeps == [1, 30]  # backoff, then the service's Retry-After
    assert [r for _, _, r in logged] == ["HTTP 503", "HTTP 429"]


def test_permanent_error_raised_untouched_on_first_attempt():
    calls = []

    def op():
        calls.append(1)
        raise HttpError(403, "AuthorizationFailed")

    with pytest.raises(HttpError, match="AuthorizationFailed"):
        call_with_retries(op, what="x", sleep=lambda s: None)
    assert len(calls) == 1


def test_cancel_interrupts_the_wait():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Interrupted):
        call_with_retries(lambda: (_ for _ in ()).throw(HttpError(503)), what="x", cancel=cancel,
                          settings=RetrySettings(initial_wait=5, jitter=0))


def test_cancel_cuts_a_real_wait_short_even_when_sleep_is_passed():
    """Callers that pass ``sleep=time.sleep`` (the Azure operation runner off the simulator)
    still wait on the cancel event, not for the whole backoff."""
    import time

    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        call_with_retries(lambda: (_ for _ in ()).throw(HttpError(503)), what="x", cancel=cancel,
                          sleep=time.sleep, settings=RetrySettings(initial_wait=30, jitter=0))
    assert time.monotonic() - started < 1.0


def test_cancel_is_checked_around_a_virtual_clock():
    """A custom sleep (the simulator's virtual clock) returns at once; cancel set meanwhile stops
    the next attempt."""
    cancel = threading.Event()
    calls = []

    def op():
        calls.append(1)
        raise HttpError(503)

    with pytest.raises(Interrupted):
        call_with_retries(op, what="x", cancel=cancel, sleep=lambda s: cancel.set(),
                          settings=RetrySettings(initial_wait=30, jitter=0))
    assert len(calls) == 1
