"""HTTP calls to what a target deployed (scoring URIs, health routes), through the run's
transport (simulator or network): every Azure target's smoke test, health gate and invoke.

One azure-core pipeline per call: the same transport and HTTP retry policy as every SDK client.
``deployment`` sets the ``azureml-model-deployment`` header, which addresses one Azure ML
deployment directly whatever the traffic split (smoke tests of a deployment at 0%).
"""

from __future__ import annotations

import json
from typing import Any


def request(session: Any, method: str, url: str, *, headers: dict[str, str] | None = None, content: Any = None,
            timeout_s: float = 60.0) -> tuple[int, str, dict[str, str]]:
    """One HTTP request: (status, body text, headers)."""
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    kw = session.client_kwargs()
    kw.pop("polling_interval", None)
    client = PipelineClient(base_url=url, **kw)
    with client:
        resp = client.send_request(HttpRequest(method, url, headers=headers or {}, content=content),
                                   connection_timeout=timeout_s, read_timeout=timeout_s)
        return resp.status_code, resp.text(), dict(resp.headers)


def score(session: Any, scoring_uri: str, key: str | None, body: Any, *, deployment: str | None = None,
          timeout_s: float = 60.0) -> tuple[int, Any, dict[str, str]]:
    """POST ``body`` (JSON) to ``scoring_uri``; (status, parsed body, headers)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if deployment:
        headers["azureml-model-deployment"] = deployment
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    status, text, out_headers = request(session, "POST", scoring_uri, headers=headers, content=data, timeout_s=timeout_s)
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return status, parsed, out_headers
