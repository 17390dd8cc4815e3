"""The HTTP retry policy every Azure client gets, through azure-core's own pipeline."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("azure.core")

from azure.core import PipelineClient  # noqa: E402
from azure.core.pipeline.transport import HttpResponse, HttpTransport  # noqa: E402
from azure.core.rest import HttpRequest  # noqa: E402

from orchestrator.azure import AzureSession  # noqa: E402


class _Resp(HttpResponse):
    def __init__(self, request, status, headers):
        super().__init__(request, None)
        self.status_code = status
        self.headers = headers
        self.reason = "x"
        self.content_type = "application/json"

    def body(self):
        return b"{}"


class ScriptedTransport(HttpTransport):
    """Answers with a scripted list of statuses; records sleeps instead of sleeping."""

    def __init__(self, script):
        self.script = list(script)
        self.sleeps = []
        self.sent = 0

    def send(self, request, **kw):
        self.sent += 1
        status, headers = self.script.pop(0)
        return _Resp(request, status, headers)

    def sleep(self, seconds):
        self.sleeps.append(seconds)

    def open(self):
        pass

    def close(self):
        pass

    def __exit__(self, *a):
        pass


def client(transport):
    kw = AzureSession(transport=transport).client_kwargs()
    return PipelineClient("https://management.azure.com", policies=[kw["retry_policy"]], transport=transport)


def test_retry_after_is_honoured_and_logged(caplog):
    t = ScriptedTransport([(429, {"Retry-After": "17"}), (503, {}), (200, {})])
    with caplog.at_level(logging.WARNING, logger="deployctl.azure"):
        resp = client(t).send_request(HttpRequest("GET", "https://management.azure.com/subscriptions/s?sig=SECRET"))
    assert resp.status_code == 200 and t.sent == 3
    assert t.sleeps[0] == 17
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "retrying GET /subscriptions/s in 17.0s: HTTP 429 (Retry-After)"
    assert "HTTP 503" in messages[1]
    assert not any("SECRET" in m for m in messages)


def test_conflict_is_never_retried_at_the_http_level():
    t = ScriptedTransport([(409, {}), (200, {})])
    resp = client(t).send_request(HttpRequest("PUT", "https://management.azure.com/x"))
    assert resp.status_code == 409 and t.sent == 1  # 409s are the operation layer's to retry


def test_http_retries_are_bounded():
    t = ScriptedTransport([(503, {})] * 10)
    resp = client(t).send_request(HttpRequest("GET", "https://management.azure.com/x"))
    assert resp.status_code == 503 and t.sent == 4  # 1 + retry_total (3)
