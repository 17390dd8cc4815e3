"""The azure-core ``HttpTransport`` that hands every request to the simulator: no sockets.

Accepts both ``azure.core.pipeline.transport.HttpRequest`` (legacy) and
``azure.core.rest.HttpRequest`` and answers each with the matching response type, as
azure-core's own ``RequestsTransport`` does.  ``sleep()`` advances the simulator's virtual clock:
azure-core's ``RetryPolicy`` and LRO pollers wait through the transport, so retries and polling
cost no real time.  Injected connection faults surface as azure-core's own exceptions
(``ServiceRequestError`` / ``ServiceResponseError``), exactly what a dropped socket produces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.client import responses as REASONS
from typing import Any

from azure.core.pipeline.transport import HttpResponse as LegacyHttpResponse
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

from orchestrator.azure.simulator.messages import Request, Response

BLOCK = 64 * 1024


def body_bytes(data: Any) -> bytes:
    """Whatever an SDK put in a request body (bytes, str, JSON object, file, generator) as bytes."""
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (dict, list)):
        return json.dumps(data).encode()
    if hasattr(data, "read"):
        out = data.read()
        return out.encode("utf-8") if isinstance(out, str) else bytes(out)
    return b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in data)


def to_request(request: Any) -> Request:
    if hasattr(request, "content"):  # azure.core.rest.HttpRequest
        data = request.content
    else:
        data = request.data if request.data is not None else getattr(request, "files", None)
    headers = {k.lower(): str(v) for k, v in dict(request.headers).items()}
    return Request(request.method.upper(), request.url, headers, body_bytes(data))


class _Chunks:
    """What ``stream_download`` returns: an iterator callers may hang attributes on (the storage
    SDK sets ``.properties`` on it, as on azure-core's StreamDownloadGenerator)."""

    def __init__(self, body: bytes, response: Any = None) -> None:
        self._parts = iter([body[i:i + BLOCK] for i in range(0, len(body), BLOCK)])
        self.response = response
        self.request = getattr(response, "request", None)
        self.content_length = len(body)

    def __len__(self) -> int:
        return self.content_length

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._parts)

    def close(self) -> None:
        pass


def _chunks(body: bytes, response: Any = None) -> _Chunks:
    return _Chunks(body, response)


class _Socketless:
    def close(self) -> None:
        pass

    def read(self) -> bytes:
        return b""


class RestResponse(HttpResponseImpl):
    def __init__(self, request: Any, resp: Response) -> None:
        headers = case_insensitive_dict(resp.headers)
        super().__init__(request=request, internal_response=_Socketless(), status_code=resp.status,
                         reason=REASONS.get(resp.status, ""), content_type=headers.get("Content-Type"),
                         headers=headers, stream_download_generator=lambda **_: _chunks(resp.body))
        self._content = resp.body

    def stream_download(self, pipeline: Any = None, **kwargs: Any) -> _Chunks:
        return _chunks(self._content or b"", self)


class LegacyResponse(LegacyHttpResponse):
    def __init__(self, request: Any, resp: Response) -> None:
        super().__init__(request, None)
        self.status_code = resp.status
        self.headers = case_insensitive_dict(resp.headers)
        self.reason = REASONS.get(resp.status, "")
        self.content_type = self.headers.get("Content-Type")
        self._body = resp.body

    def body(self) -> bytes:
        return self._body

    def stream_download(self, pipeline: Any = None, **kwargs: Any) -> _Chunks:
        return _chunks(self._body, self)


class SimulatorTransport(HttpTransport):
    """``transport=`` for every Azure SDK client; shared, so open/close do nothing."""

    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator

    def __enter__(self) -> SimulatorTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request: Any, **kwargs: Any) -> Any:
        resp = self.simulator.handle(to_request(request))
        if hasattr(request, "content"):
            return RestResponse(request, resp)
        return LegacyResponse(request, resp)

    def sleep(self, duration: float) -> None:
        self.simulator.clock.sleep(duration)
