"""The simulated cloud: state, dispatch by host, faults, access control, persistence.

One :class:`AzureSimulator` holds every resource, blob, queue message and long-running
operation as plain JSON-able data (``save``/``load``), answers requests from
:class:`~.transport.SimulatorTransport` (or the optional 127.0.0.1 server), and records each in
``requests`` for assertions.  Dispatch is by host: ARM (``management.azure.com``), blob and queue
data planes, Azure ML scoring hosts, the App Service SCM (Kudu) host.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator.azure.simulator import arm, conformance, persist
from orchestrator.azure.simulator.clock import VirtualClock
from orchestrator.azure.simulator.credential import SimulatedCredential, principal_of
from orchestrator.azure.simulator.faults import FaultInjector
from orchestrator.azure.simulator.latency import LatencyModel
from orchestrator.azure.simulator.messages import (
    Deferred,
    Request,
    Response,
    UnsupportedRequest,
    arm_error,
    json_response,
)

DEFAULT_LOCATION = "eastus"
DEFAULT_CORE_LIMIT = 100


@dataclass
class LoggedRequest:
    method: str
    url: str
    host: str
    path: str
    api_version: str | None
    operation: str
    status: int
    principal: str | None
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def _empty_state() -> dict[str, Any]:
    return {"version": persist.STATE_VERSION, "clock": None, "counter": 0, "resources": {}, "operations": {},
            "blobs": {}, "queues": {}, "denied": [], "quotas": {}, "logs": {}, "kudu": {}}


class AzureSimulator:
    """One simulated cloud.

    ``seed``: ids, keys, traffic routing and rate faults are drawn from it (same seed, same run).
    ``clock``: a :class:`VirtualClock` (default: a new one; ``VirtualClock(realtime=True)`` waits for real).
    ``specs_dir``: the REST specs for conformance (default ``<repo>/../shared/azure-rest-api-specs``;
    absent: checking off).  ``strict``: tests (only what was seeded exists; unknown operations and
    non-conforming requests raise :class:`UnsupportedRequest`) vs ``--simulate`` (resource groups and
    workspaces appear on first reference; failures answer HTTP 501/400).

    Attributes: ``transport``, ``credential``, ``clock``, ``faults``, ``latency``, ``requests``
    (:class:`LoggedRequest` per request), ``unsupported``, ``conformance``, ``state`` (JSON-able).
    """

    def __init__(self, *, seed: int = 0, clock: VirtualClock | None = None, specs_dir: Path | None = None,
                 strict: bool = True) -> None:
        self.seed = seed
        self.clock = clock or VirtualClock()
        self.strict = strict
        self.faults = FaultInjector(seed=seed)
        self.latency = LatencyModel()
        self.rng = random.Random(seed)
        self.state = _empty_state()
        self.requests: list[LoggedRequest] = []
        self.unsupported: list[str] = []
        self.default_location = DEFAULT_LOCATION
        self.default_core_limit = DEFAULT_CORE_LIMIT
        self.poll_hint_s = 10  # Retry-After on every poll response, capped at the time left
        self.async_deletes = True
        self.async_namespaces = {"microsoft.containerinstance", "microsoft.containerregistry"}
        self.hooks: dict[str, Callable[[AzureSimulator, dict[str, Any], dict[str, Any] | None], None]] = {}
        self.conformance = conformance.Checker.load(specs_dir)
        self._lock = threading.RLock()
        self.store: persist.Store | None = None  # set: every mutation is written to its file (see persist.py)
        self._writers = 0  # requests of this process between taking the file's lock and their flush
        self._writers_guard = threading.Lock()
        self._file_lock: Any = None
        self._flush_lock = threading.Lock()
        self._generation = self._flushed = 0  # mutations made / written
        self.flushes = 0  # writes of the state file by mutating requests
        self.credential = SimulatedCredential()
        # ARM's request limits (token buckets per subscription, principal and kind of request);
        # None: unlimited.  Buckets live per process, on the simulated clock.
        from orchestrator.azure.throttle import ARM_LIMITS

        self.arm_limits: Any = dict(ARM_LIMITS)
        self._arm_buckets: dict[tuple[str, str | None, str], Any] = {}
        self._arm_lock = threading.Lock()
        from orchestrator.azure.simulator.transport import SimulatorTransport

        self.transport = SimulatorTransport(self)
        from orchestrator.azure.simulator.providers import PROVIDERS

        self.providers = [p(self) for p in PROVIDERS]
        self._server: Any = None

    # ---- helpers providers use -------------------------------------------------------------
    def new_id(self) -> str:
        self.state["counter"] += 1
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def secret(self, n: int = 32) -> str:
        return base64.b64encode(self.rng.randbytes(n)).decode()

    def iso(self, t: float | None = None) -> str:
        t = self.clock.now() if t is None else t
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")

    def etag(self) -> str:
        return f'"{self.new_id()}"'

    @staticmethod
    def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = AzureSimulator.merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out

    def get(self, path: str) -> dict[str, Any] | None:
        return self.state["resources"].get(arm.key_of(path))

    def put_resource(self, path: str, body: dict[str, Any], *, location: str | None = None) -> dict[str, Any]:
        """Store a resource under its id with ARM's envelope (id, name, type, systemData)."""
        k = arm.key_of(path)
        old = self.state["resources"].get(k)
        res = copy.deepcopy(body)
        res["id"] = path
        res["name"] = path.rstrip("/").rsplit("/", 1)[-1]
        res["type"] = arm.resource_type(path) if "/providers/" in path else "Microsoft.Resources/resourceGroups"
        if location or (old and old.get("location")):
            res["location"] = location or old["location"]
        res.setdefault("properties", {})
        res["properties"].setdefault("provisioningState", "Succeeded")
        now = self.iso()
        created = (old or {}).get("systemData", {}).get("createdAt", now)
        res["systemData"] = {"createdAt": created, "createdBy": "deployctl-user", "createdByType": "User",
                             "lastModifiedAt": now, "lastModifiedBy": "deployctl-user", "lastModifiedByType": "User"}
        res["etag"] = self.etag()
        self.state["resources"][k] = res
        return res

    @staticmethod
    def created_201(namespace: str) -> bool:
        """azure-mgmt-web's PUTs accept only 200/202: App Service answers a create with 200."""
        return namespace.lower() != "microsoft.web"

    def remove_tree(self, key: str) -> None:
        key = arm.key_of(key)
        for k in [k for k in self.state["resources"] if k == key or k.startswith(key + "/")]:
            del self.state["resources"][k]

    # ---- dispatch ---------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        """Answer one request.  Waits (the latency model's, a slow fault's) and starting a scoring
        process happen outside every lock, so concurrent requests proceed side by side as on Azure;
        only reading and changing the state is serialized (a few milliseconds).  With a
        :attr:`store`, a mutation is on disk before it is answered (see :meth:`_flush`)."""
        if self.latency.call_seconds():
            self.clock.sleep(self.latency.call_seconds())
        store = self.store
        writes = store is not None and not store.read_only and self.mutates(req)
        if writes:
            self._enter_writer()
        try:
            with self._lock:
                if not writes:
                    self._refresh_if_idle()
                resp, wait = self._dispatch(req)
                self._generation += writes
                generation = self._generation
            if writes:
                self._flush(generation)
        finally:
            if writes:
                self._leave_writer()
        if wait:
            self.clock.sleep(wait)
        if isinstance(resp, Deferred):  # e.g. scoring: the scorer may need seconds to start
            return resp.run()
        if isinstance(resp, BaseException):
            raise resp
        return resp

    # Writes (group commit).  The first of this process's concurrent writers takes the file's lock
    # and re-reads what other processes wrote; the lock is kept until the last of them has flushed.
    # A flush serializes the state under the simulator's lock, then writes it outside it, covering
    # every mutation made so far: writers that arrive during a write share the next one, so a
    # fleet's concurrent creates cost a few writes of the file, not one each.
    def _enter_writer(self) -> None:
        assert self.store is not None
        with self._writers_guard:
            if self._writers == 0:
                self._file_lock = self.store.locked()
                self._file_lock.__enter__()
                with self._lock:
                    self.refresh()
            self._writers += 1

    def _leave_writer(self) -> None:
        with self._writers_guard:
            self._writers -= 1
            if self._writers == 0 and self._file_lock is not None:
                self._file_lock.__exit__(None, None, None)
                self._file_lock = None

    def _refresh_if_idle(self) -> None:
        """A read re-reads what other processes wrote, unless this process holds the file (then
        any change on disk is its own, and older than what it holds)."""
        if self._writers == 0:
            self.refresh()

    def _flush(self, generation: int) -> None:
        assert self.store is not None
        with self._flush_lock:
            if self._flushed >= generation:
                return  # a flush that started after this mutation already wrote it
            with self._lock:
                self.state["clock"] = self.clock.now()
                data = persist.dumps(self.state)
                upto = self._generation
            self.store.write_bytes(data)
            self._flushed = upto
            self.flushes += 1

    @staticmethod
    def mutates(req: Request) -> bool:
        """May this request change the cloud?  (Scoring requests and reads never do.)"""
        if req.method in ("GET", "HEAD"):
            return False
        scoring_host = req.host.endswith((".inference.ml.azure.com", ".azurecontainer.io"))
        return not (req.path.lower() == "/score" and scoring_host)

    def _dispatch(self, req: Request) -> tuple[Any, float]:
        """(the response, or a :class:`Deferred`, or the exception to raise; seconds to wait first)."""
        arm.finish_due(self)
        provider = next((p for p in self.providers if p.owns(req)), None)
        operation = provider.operation(req) if provider else "Unknown"
        principal = principal_of(req.header("authorization"))
        log = LoggedRequest(req.method, req.url, req.host, req.path, req.query.get("api-version"), operation,
                            0, principal, req.body if len(req.body) < 65536 else b"")
        self.requests.append(log)
        # storage SDK sub-clients sleep for real on retries (see faults.py): only targeted faults
        fault = self.faults.next_request(operation, untargeted=type(provider).__name__ not in
                                         ("BlobService", "QueueService"))
        wait = 0.0
        if fault is not None:
            resp, wait = self._fault_response(fault, req, log)
            if resp is not None:
                if isinstance(resp, Response):
                    log.status = resp.status
                return resp, wait
        throttled = self._arm_throttled(req, principal)
        if throttled is not None:
            log.status = throttled.status
            return throttled, wait
        if provider is None:
            resp = self._unsupported(req, f"no simulated service answers host {req.host!r}")
        else:
            denied = self._denied(req, principal)
            resp = denied or provider.handle(req)
            if resp is None:
                resp = self._unsupported(req, f"{operation}: not simulated")
        if isinstance(resp, Deferred):
            deferred = resp
            return Deferred(lambda: self._logged(deferred.run(), log)), wait
        log.status = resp.status
        if req.host == "management.azure.com":
            resp.headers.setdefault("x-ms-request-id", self.new_id())
            remaining = req.arm_remaining
            if remaining is not None:  # the budget header ARM sends with every answer
                resp.headers.setdefault(f"x-ms-ratelimit-remaining-subscription-{remaining[0]}", str(remaining[1]))
        return resp, wait

    def scale_arm_limits(self, factor: float) -> None:
        """ARM's buckets and refill rates x ``factor`` (0: no limits), for runs that compress
        Azure's durations (``--simulate-latency arm=...``)."""
        from orchestrator.azure.throttle import ARM_LIMITS, BucketLimit

        with self._arm_lock:
            self._arm_buckets.clear()
            self.arm_limits = {k: BucketLimit(v.capacity * factor, v.refill_per_s * factor)
                               for k, v in ARM_LIMITS.items()} if factor > 0 else None

    def _arm_throttled(self, req: Request, principal: str | None) -> Response | None:
        """ARM's throttling: a request finding its bucket empty is refused with 429 and a
        Retry-After before any resource provider sees it."""
        from orchestrator.azure.throttle import TokenBucket, bucket_scope, request_kind

        scope = bucket_scope(req.url) if self.arm_limits else None
        if scope is None:
            return None
        kind = request_kind(req.method)
        with self._arm_lock:
            key = (scope, principal, kind)
            bucket = self._arm_buckets.get(key)
            if bucket is None:
                bucket = self._arm_buckets[key] = TokenBucket(self.arm_limits[kind], self.clock.now())
            wait = bucket.try_take(self.clock.now())
            req.arm_remaining = (kind, max(0, int(bucket.tokens)))
        if wait <= 0:
            return None
        return arm_error(429, "SubscriptionRequestsThrottled",
                         f"Number of '{kind}' requests for subscription '{scope}' exceeded the limit; "
                         "retry after the time in Retry-After.",
                         {"Retry-After": str(max(1, math.ceil(wait))),
                          f"x-ms-ratelimit-remaining-subscription-{kind}": "0"})

    @staticmethod
    def _logged(resp: Response, log: LoggedRequest) -> Response:
        log.status = resp.status
        return resp

    # ---- persistence ------------------------------------------------------------------------
    def adopt_state(self, state: dict[str, Any]) -> None:
        """Take ``state`` (read from disk) as the cloud; the simulated time never goes back."""
        self.state = _empty_state()
        self.state.update(state)
        saved = float(state.get("clock") or 0.0)
        if saved > self.clock.now():
            self.clock.advance(saved - self.clock.now())
        # Ids stay unique across runs: the RNG continues from how many ids were handed out.
        self.rng.seed(f"{self.seed}:{self.state.get('counter', 0)}")

    def refresh(self) -> None:
        """Re-read the file when another process wrote it since this one last read or wrote it."""
        if self.store is not None and self.store.changed():
            state = self.store.read()
            if state is not None:
                self.adopt_state(state)

    def persist(self) -> None:
        """Write the state now (callers hold the store's lock and have refreshed first)."""
        if self.store is not None and not self.store.read_only:
            self.state["clock"] = self.clock.now()
            self.store.write(self.state)

    def _fault_response(self, fault: Any, req: Request, log: LoggedRequest) -> tuple[Any, float]:
        """(a response or the exception to raise, or None to answer normally; seconds to wait first)."""
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError

        if fault.kind == "reset":
            log.status = -1
            return ServiceRequestError("Connection reset by peer (simulated)"), 0.0
        if fault.kind == "timeout":
            log.status = -1
            return ServiceResponseError("Read timed out (simulated)"), 30.0
        if fault.kind == "slow":
            return None, float(fault.slow_s)
        status = int(fault.kind)
        headers = {"Retry-After": f"{fault.retry_after:g}"} if status in (429, 503) else {}
        code = {429: "TooManyRequests", 500: "InternalServerError", 502: "BadGateway",
                503: "ServiceUnavailable", 504: "GatewayTimeout"}[status]
        return arm_error(status, code, f"Simulated {status} ({code}).", headers), 0.0

    def _unsupported(self, req: Request, why: str) -> Response:
        msg = f"Azure simulator: {req.method} {req.url}: {why}"
        self.unsupported.append(msg)
        if self.strict:
            raise UnsupportedRequest(msg)
        return arm_error(501, "NotSimulated", msg)

    def check_request(self, req: Request, operation: str | None) -> Response | None:
        """Conformance (strict mode raises, else 400 like ARM's validation)."""
        problems = self.conformance.check(req, operation)
        if not problems:
            return None
        msg = f"Azure simulator: {req.method} {req.path}: request does not conform to the REST spec: " + "; ".join(problems)
        self.unsupported.append(msg)
        if self.strict:
            raise UnsupportedRequest(msg)
        return arm_error(400, "InvalidRequestContent", msg)

    # ---- access control ---------------------------------------------------------------------
    def deny(self, *, subscription: str, resource_group: str | None = None, workspace: str | None = None,
             principal: str | None = None) -> None:
        """Requests by ``principal`` (None: everyone) on this subscription / workspace get 403."""
        scope = f"/subscriptions/{subscription}"
        if resource_group:
            scope += f"/resourcegroups/{resource_group}"
            if workspace:
                scope += f"/providers/microsoft.machinelearningservices/workspaces/{workspace}"
        self.state["denied"].append({"scope": scope.lower(), "principal": principal})

    def _denied(self, req: Request, principal: str | None) -> Response | None:
        p = req.path.lower()
        for d in self.state["denied"]:
            if (p == d["scope"] or p.startswith(d["scope"] + "/")) and d["principal"] in (None, principal):
                return arm_error(403, "AuthorizationFailed",
                                 f"The client '{principal}' does not have authorization to perform action over "
                                 f"scope '{req.path}' or the scope is invalid.")
        return None

    # ---- seeding ----------------------------------------------------------------------------
    def add_subscription(self, subscription: str) -> None:
        self.state["quotas"].setdefault(subscription, {})

    def add_resource_group(self, subscription: str, name: str, location: str = DEFAULT_LOCATION) -> dict[str, Any]:
        self.add_subscription(subscription)
        path = f"/subscriptions/{subscription}/resourceGroups/{name}"
        return self.get(path) or self.put_resource(path, {"properties": {}}, location=location)

    def set_quota(self, subscription: str, location: str, family: str, limit: int) -> None:
        self.state["quotas"].setdefault(subscription, {}).setdefault(location.lower(), {})[family] = limit

    def quota_limit(self, subscription: str, location: str, family: str) -> int:
        q = self.state["quotas"].get(subscription, {}).get(location.lower(), {})
        return int(q.get(family, q.get("*", self.default_core_limit)))

    def ml(self) -> Any:
        return next(p.ml for p in self.providers if hasattr(p, "ml"))

    def add_workspace(self, subscription: str, resource_group: str, name: str,
                      location: str = DEFAULT_LOCATION) -> dict[str, Any]:
        return self.ml().add_workspace(subscription, resource_group, name, location)

    def add_kubernetes_compute(self, subscription: str, resource_group: str, workspace: str, name: str, *,
                               instance_types: dict[str, Any] | None = None,
                               cluster_id: str | None = None) -> dict[str, Any]:
        """A Kubernetes compute; its AKS cluster is ``cluster_id`` (seed it with :meth:`add_aks_cluster`),
        by default a cluster of the compute's name with one pool of 3 x Standard_D4s_v3."""
        return self.ml().add_kubernetes_compute(subscription, resource_group, workspace, name, instance_types,
                                                cluster_id)

    def add_aks_cluster(self, subscription: str, resource_group: str, name: str, *,
                        pools: list[dict[str, Any]] | None = None, kubernetes_version: str = "1.29.2",
                        location: str | None = None) -> dict[str, Any]:
        """An AKS managed cluster; ``pools`` are agentPoolProfiles (name, count, vmSize, and optionally
        enableAutoScaling/maxCount, maxPods, osType, mode)."""
        cs = next(p.namespaces["microsoft.containerservice"] for p in self.providers if hasattr(p, "namespaces"))
        return cs.add_cluster(subscription, resource_group, name, pools=pools,
                              kubernetes_version=kubernetes_version, location=location)

    def add_registry(self, subscription: str, resource_group: str, name: str,
                     location: str = DEFAULT_LOCATION) -> dict[str, Any]:
        return self.ml().add_registry(subscription, resource_group, name, location)

    def add_model(self, subscription: str, resource_group: str, workspace: str, name: str, version: str,
                  files: dict[str, bytes], folder: str = "model", **properties: Any) -> dict[str, Any]:
        """A model version in a workspace, its files uploaded to the workspace's blob store as the
        folder ``folder`` (a deployment finds them under ``$AZUREML_MODEL_DIR/<folder>/``)."""
        return self.ml().add_model(subscription, resource_group, workspace, name, version, files, properties, folder)

    # ---- session & persistence -------------------------------------------------------------
    def session(self) -> Any:
        from orchestrator.azure.session import AzureSession

        return AzureSession(credential=self.credential, transport=self.transport, simulator=self)

    def save(self, path: Path) -> None:
        from orchestrator.azure.simulator.persist import save

        save(self, Path(path))

    @classmethod
    def load(cls, path: Path, **kwargs: Any) -> AzureSimulator:
        from orchestrator.azure.simulator.persist import load

        return load(cls, Path(path), **kwargs)

    def serve(self, port: int = 0) -> str:
        """Also answer on http://127.0.0.1:<port> (clients that cannot take a transport)."""
        from orchestrator.azure.simulator.server import serve

        self._server = serve(self, port)
        return self._server.url

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        for p in self.providers:
            getattr(p, "close", lambda: None)()

    def dump(self) -> str:
        return json.dumps(self.state, indent=1, sort_keys=True)


def arm_ok(obj: Any, status: int = 200) -> Response:
    return json_response(status, obj)
