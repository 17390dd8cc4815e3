"""JSON requests to what a target deployed (a scoring URI, a function app), through the run's
transport (simulator or network) and HTTP retry policy, like every SDK client of the run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orchestrator.azure.session import AzureSession


def request_json(session: AzureSession, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                 body: Any = None, timeout_s: float = 60.0) -> tuple[int, Any, dict[str, str]]:
    """Send ``body`` (bytes and str as they are, anything else as JSON); (status, parsed body or
    text, headers)."""
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    kw = session.client_kwargs()
    kw.pop("polling_interval", None)
    data = None if body is None else body if isinstance(body, (bytes, str)) else json.dumps(body)
    req = HttpRequest(method, url, headers={"Content-Type": "application/json", **(headers or {})}, content=data)
    with PipelineClient(base_url=url, **kw) as client:
        resp = client.send_request(req, connection_timeout=timeout_s, read_timeout=timeout_s)
        text = resp.text()
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return resp.status_code, parsed, dict(resp.headers)
