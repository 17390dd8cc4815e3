"""Plain request/response values the simulator works on (no azure-core types).

:class:`Request` is what :mod:`.transport` (or the 127.0.0.1 server) hands to the simulator;
:class:`Response` is what comes back.  ARM and storage error bodies are built here so every
provider answers failures the way Azure does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class UnsupportedRequest(AssertionError):
    """A request that matches no operation the simulator knows: never a silent 200."""


@dataclass
class Deferred:
    """An answer a provider cannot give while the simulator holds its lock (it starts a process,
    it waits): the simulator calls ``run`` once it has released every lock."""

    run: Callable[[], Response]


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    arm_remaining: tuple[str, int] | None = None  # ARM's budget left for this request's kind (set on receipt)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.host = (parts.hostname or "").lower()
        self.port = parts.port
        self.path = unquote(parts.path).rstrip("/") or "/"
        self.query = {k.lower(): v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    h = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return Response(status, b"" if obj is None else json.dumps(obj).encode(), h)


def arm_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The ARM error envelope (``{"error": {"code", "message"}}``) with ``x-ms-error-code``."""
    return json_response(status, {"error": {"code": code, "message": message}},
                         {"x-ms-error-code": code, **(headers or {})})


def storage_error(status: int, code: str, message: str, *, head: bool = False) -> Response:
    body = b"" if head else (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                             f"<Message>{message}</Message></Error>").encode()
    return Response(status, body, {"x-ms-error-code": code, "Content-Type": "application/xml"})
