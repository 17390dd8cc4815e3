"""Scoring requests to what a target deployed (an online endpoint, a container group), through
the run's transport (simulator or network): every Azure target's smoke test, health gate and
invoke.  ``deployment`` sets the ``azureml-model-deployment`` header, which addresses one Azure ML
deployment directly whatever the traffic split (smoke tests of a deployment at 0%).
"""

from __future__ import annotations

from typing import Any

from orchestrator.azure.http import request_json


def score(session: Any, scoring_uri: str, key: str | None, body: Any, *, deployment: str | None = None,
          timeout_s: float = 60.0) -> tuple[int, Any, dict[str, str]]:
    """POST ``body`` (JSON) to ``scoring_uri`` with the key as a bearer token; (status, parsed body, headers)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    return request_json(session, "POST", scoring_uri, headers=headers, body=body, timeout_s=timeout_s)
