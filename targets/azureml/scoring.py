"""Scoring requests to an online endpoint, through the run's transport (simulator or network).

One azure-core pipeline per target: the same transport and HTTP retry policy as every SDK
client.  ``deployment`` sets the ``azureml-model-deployment`` header, which addresses one
deployment directly whatever the traffic split (smoke tests of a deployment at 0%).
"""

from __future__ import annotations

import json
from typing import Any


def score(session: Any, scoring_uri: str, key: str | None, body: Any, *, deployment: str | None = None,
          timeout_s: float = 60.0) -> tuple[int, Any, dict[str, str]]:
    """POST ``body`` (JSON) to ``scoring_uri``; (status, parsed body, headers)."""
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    kw = session.client_kwargs()
    kw.pop("polling_interval", None)
    client = PipelineClient(base_url=scoring_uri, **kw)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if deployment:
        headers["azureml-model-deployment"] = deployment
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    req = HttpRequest("POST", scoring_uri, headers=headers, content=data)
    with client:
        resp = client.send_request(req, connection_timeout=timeout_s, read_timeout=timeout_s)
        text = resp.text()
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return resp.status_code, parsed, dict(resp.headers)
