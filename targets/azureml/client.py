"""Azure clients of the Azure ML targets, all built through one :class:`AzureSession`.

- :func:`session_of` — the run's session (``--simulate`` sets one on the run options).
- :func:`ml_client` — an ``MLClient`` with the session's credential and transport, no progress
  bars.  Constructing it sends nothing.
- :func:`container_client` — a blob ``ContainerClient`` on a datastore, through the SAME
  transport and retry policy (azure-ai-ml's own uploads build blob clients without it).
- :func:`arm_get` — a plain ARM GET of any resource id (e.g. the AKS cluster behind a Kubernetes
  compute) through an azure-core pipeline with the session's transport, retry policy and a bearer
  token for ARM: no management SDK for one read.
- :func:`run_op` — one whole operation through :func:`orchestrator.retry.call_with_retries` with
  ``http_retried=True`` (azure-core already retried each HTTP call); what is still failing after
  that is re-raised as a non-retryable :class:`TargetError`, so the engine does not retry it twice.

Azure SDKs are imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from orchestrator.azure.session import AzureSession
from orchestrator.errors import DeployctlError, TargetError, TransientError
from orchestrator.retry import RetrySettings, call_with_retries, classify
from orchestrator.target import TargetContext

T = TypeVar("T")


_session_lock = threading.Lock()


def session_of(ctx: TargetContext) -> AzureSession:
    """The run's Azure session, made on first use and shared by every target of the run (one
    credential, one token cache); a run with only local targets never imports the Azure SDK."""
    with _session_lock:
        if ctx.options.azure is None:
            ctx.options.azure = AzureSession(credential=ctx.options.credential)
        session: AzureSession = ctx.options.azure
        return session


def credential_for(session: AzureSession, subscription: str | None, source: Any = None) -> Any:
    """The credential for ``subscription``: one the session was given for it, else the one a
    manifest's ``model_source.credential`` names, else the session's own."""
    if subscription and subscription in session.credentials_by_subscription:
        return session.credentials_by_subscription[subscription]
    if source is not None and source.type != "default" and session.simulator is None:
        from azure import identity

        if source.type == "azure-cli":
            return identity.AzureCliCredential(tenant_id=source.tenant_id)
        if source.type == "managed-identity":
            return identity.ManagedIdentityCredential(client_id=source.client_id)
        return identity.EnvironmentCredential()
    return session.get_credential(subscription)


def ml_client(session: AzureSession, subscription: str, resource_group: str | None = None,
              workspace: str | None = None, *, registry: str | None = None, credential: Any = None) -> Any:
    import logging

    from azure.ai.ml import MLClient

    # azure-ai-ml installs its own INFO handler on stderr ("Check: endpoint X exists"): keep the
    # CLI's output ours.  A user who wants the SDK's chatter lowers the level again after import.
    sdk_log = logging.getLogger("azure.ai.ml")
    if sdk_log.level == logging.INFO:
        sdk_log.setLevel(logging.WARNING)
    kw = session.client_kwargs()
    return MLClient(credential or session.get_credential(subscription), subscription, resource_group,
                    workspace, registry_name=registry, show_progress=False, **kw)


def container_client(session: AzureSession, datastore: Any, credential: Any) -> Any:
    """A ContainerClient for an Azure ML blob datastore (``datastores.get(..., include_secrets=True)``)."""
    from azure.storage.blob import ContainerClient

    account_url = f"{datastore.protocol or 'https'}://{datastore.account_name}.blob.{datastore.endpoint}"
    creds = getattr(datastore, "credentials", None)
    key = getattr(creds, "account_key", None) or getattr(creds, "sas_token", None)
    # Storage keeps its own StorageRetryPolicy (see AzureSession.storage_kwargs): same budget, same transport.
    return ContainerClient(account_url, datastore.container_name, credential=key or credential,
                           **session.storage_kwargs())


ARM = "https://management.azure.com"


def arm_get(session: AzureSession, credential: Any, resource_id: str, api_version: str) -> Any:
    """GET ``resource_id`` from ARM; the JSON body.  Errors are azure-core's ``HttpResponseError``
    (``status_code`` 403, 404...), as from any SDK client."""
    from azure.core import PipelineClient
    from azure.core.pipeline import policies
    from azure.core.rest import HttpRequest

    kw = session.client_kwargs()
    pipeline_policies = [policies.RequestIdPolicy(), policies.HeadersPolicy(), policies.UserAgentPolicy("deployctl"),
                         kw["retry_policy"], policies.BearerTokenCredentialPolicy(credential, f"{ARM}/.default"),
                         policies.NetworkTraceLoggingPolicy()]
    client = PipelineClient(ARM, policies=pipeline_policies, **({"transport": kw["transport"]} if "transport" in kw else {}))
    request = HttpRequest("GET", f"{ARM}/{resource_id.strip('/')}", params={"api-version": api_version},
                          headers={"Accept": "application/json"})
    with client:
        response = client.send_request(request)
        response.raise_for_status()
        return response.json()


def is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 404 or type(exc).__name__ == "ResourceNotFoundError"


def status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def error_code(exc: BaseException) -> str | None:
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None)
    return code if isinstance(code, str) else None


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

    sleep = _sleeper(ctx)

    def attempt() -> T:
        try:
            return fn()
        except DeployctlError:
            raise
        except Exception as e:
            if lro_canceled(e):  # azure-core ends a Canceled LRO with the poll's 200: say it is transient
                raise TransientError(describe(e), reason="OperationCanceled: canceled by another operation") from e
            raise

    try:
        return call_with_retries(attempt, what=what, settings=settings, http_retried=True, on_retry=on_retry, cancel=ctx.cancel,
                                 sleep=sleep)
    except TransientError as e:  # retries spent: the engine must not retry it a second time over
        cause = e.__cause__ if isinstance(e.__cause__, BaseException) else e
        raise TargetError(f"still failing after retries: {describe(cause)}", target=ctx.config.name,
                          resource=resource, operation=what) from cause
    except DeployctlError:
        raise
    except Exception as e:
        if classify(e, http_retried=True).transient:
            msg = f"still failing after retries: {describe(e)}"
        else:
            msg = describe(e)
        raise TargetError(msg, target=ctx.config.name, resource=resource, operation=what) from e


def lro_canceled(e: BaseException) -> bool:
    """A long-running operation that ended Canceled (Azure ML: preempted by a higher-priority
    operation, documented as retryable) — as opposed to Failed, which is not retried blindly."""
    if error_code(e) == "OperationCanceled":
        return True
    resp = getattr(e, "response", None)
    try:
        import json

        body = json.loads(resp.text()) if resp is not None else None
    except Exception:
        return False
    return isinstance(body, dict) and str(body.get("status", "")).lower() in ("canceled", "cancelled")


def _sleeper(ctx: TargetContext) -> Callable[[float], None]:
    """Sleep on the simulator's virtual clock when simulating, else for real."""
    sim = getattr(ctx.options.azure, "simulator", None)
    clock = getattr(sim, "clock", None)
    if clock is not None and hasattr(clock, "sleep"):
        return clock.sleep
    import time

    return time.sleep


def describe(e: BaseException) -> str:
    """The service's own message, without the SDK's multi-line boilerplate."""
    code = error_code(e)
    status = status_of(e)
    msg = getattr(getattr(e, "error", None), "message", None) or getattr(e, "message", None) or str(e)
    msg = str(msg).strip().splitlines()[0] if str(msg).strip() else type(e).__name__
    # a failed long-running operation arrives with the poll's 200: the code says it all
    head = " ".join(p for p in (f"HTTP {status}" if status and status >= 400 else "", code or "") if p)
    return f"{head}: {msg}" if head else msg
