"""Plain ARM requests for any provider, through the session's transport and retry policy.

For the one read or write no management SDK is worth importing for (e.g. the AKS cluster behind
an Azure ML Kubernetes compute): an azure-core pipeline with the session's ``RetryPolicy``, a
bearer token for ARM, and ``transport=`` (the simulator under ``--simulate``).  Errors are
azure-core's ``HttpResponseError`` (``status_code`` 403, 404...), exactly as from an SDK client,
so :func:`orchestrator.azure.ops.run_op` types them the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.azure.session import AzureSession

if TYPE_CHECKING:
    from orchestrator.azure.quota import Usage

ARM = "https://management.azure.com"


def arm_request(session: AzureSession, credential: Any, method: str, resource_id: str, api_version: str,
                body: Any = None, params: Mapping[str, str] | None = None) -> Any:
    """``method`` on ``resource_id`` (``/subscriptions/...``) with ``params`` beside the
    api-version; the JSON body of the answer (None when empty)."""
    from azure.core import PipelineClient
    from azure.core.pipeline import policies
    from azure.core.rest import HttpRequest

    kw = session.client_kwargs()
    pipeline_policies = [policies.RequestIdPolicy(), policies.HeadersPolicy(), policies.UserAgentPolicy("deployctl"),
                         kw["retry_policy"], *kw["per_retry_policies"], policies.BearerTokenCredentialPolicy(credential, f"{ARM}/.default"),
                         policies.NetworkTraceLoggingPolicy()]
    client = PipelineClient(ARM, policies=pipeline_policies, **({"transport": kw["transport"]} if "transport" in kw else {}))
    request = HttpRequest(method, f"{ARM}/{resource_id.strip('/')}", params={**(params or {}), "api-version": api_version},
                          headers={"Accept": "application/json"}, json=body)
    with client:
        response = client.send_request(request)
        response.raise_for_status()
        return response.json() if response.content else None


def arm_get(session: AzureSession, credential: Any, resource_id: str, api_version: str) -> Any:
    """GET ``resource_id`` from ARM; the JSON body."""
    return arm_request(session, credential, "GET", resource_id, api_version)


def provider_usages(session: AzureSession, credential: Any, subscription: str, provider: str, location: str,
                    api_version: str) -> list[Usage]:
    """The quota rows of ``provider`` (e.g. ``Microsoft.ContainerInstance``) in ``location``."""
    from orchestrator.azure.quota import parse_usages

    region = location.lower().replace(" ", "")
    return parse_usages(arm_get(session, credential,
                                f"/subscriptions/{subscription}/providers/{provider}/locations/{region}/usages",
                                api_version))
