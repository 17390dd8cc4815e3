"""Azure Container Instances: container groups that really run the image they name, and the
public addresses they answer on (``<label>.<region>.azurecontainer.io``).

Management (ARM, ``Microsoft.ContainerInstance``), as the service behaves:
- PUT ``containerGroups/{name}`` validates before accepting (synchronous 400/409, nothing stored):
  a region without ACI, a region out of capacity (``capacity_errors`` on demand), GPUs, more than
  4 vCPU / 16 GB, duplicate ports, a DNS label taken in the region, the region's core quota, and an
  image that cannot be pulled (missing from the simulated registry, or credentials that do not
  work: a scoped token's password, admin credentials, or a user-assigned identity on the group).
  Then 201 + ``Azure-AsyncOperation``; when the operation ends the group runs.  ``secureValue``
  environment variables are kept out of every response, as ACI does.
- ``containers/{c}/logs`` returns the container's log; ``locations/{region}/usages`` the cores and
  groups in use against the quota (``state["aci"]["core_limit"]``, default 100).

Data plane: ``http://<fqdn>:<port>/`` and ``/score`` reach the container, which is the image
itself: its deployctl layers (runtime, site-packages, model, code) unpacked from the simulated
registry and run by the simulator's scorer machinery (warm across CLI runs).  The scoring key the
group was given as a secure value is required, as deployctl's runtime requires it.  An image
without deployctl's runtime starts and exits (``Terminated``, restart count 1, its log says why).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import http.client
import io
import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Deferred, Request, Response, arm_error, json_response

NS = "Microsoft.ContainerInstance"
GROUP = re.compile(r"/providers/Microsoft\.ContainerInstance/containerGroups/([^/]+)", re.IGNORECASE)
USAGES = re.compile(r"^/subscriptions/([^/]+)/providers/Microsoft\.ContainerInstance/locations/([^/]+)/usages$",
                    re.IGNORECASE)
LOGS = re.compile(r"^/containers/([^/]+)/logs$", re.IGNORECASE)
HOST = re.compile(r"^([a-z0-9-]+)\.([a-z0-9]+)\.azurecontainer\.io$")
KEY_ENV = "DEPLOYCTL_SCORING_KEY"
MAX_CPU, MAX_MEMORY_GB, DEFAULT_CORE_LIMIT = 4, 16.0, 100
GROUPS_TYPE = "microsoft.containerinstance/containergroups"
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


def settings(sim: Any) -> dict[str, Any]:
    """Knobs tests turn: ``unavailable_regions``, ``capacity_errors`` {region: count}, ``core_limit``."""
    return sim.state.setdefault("aci", {"unavailable_regions": [], "capacity_errors": {}, "core_limit": DEFAULT_CORE_LIMIT})


def _groups(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.state["resources"].values() if r.get("type", "").lower() == GROUPS_TYPE]


def _public(res: dict[str, Any]) -> dict[str, Any]:
    """A group as ACI shows it: secure values and the simulator's own fields left out."""
    out = {k: v for k, v in copy.deepcopy(res).items() if not k.startswith("_")}
    for c in out.get("properties", {}).get("containers", []):
        for e in c.get("properties", {}).get("environmentVariables", []) or []:
            e.pop("secureValue", None)
    for cred in out.get("properties", {}).get("imageRegistryCredentials", []) or []:
        cred.pop("password", None)
    return out


def _cores(res: dict[str, Any]) -> float:
    return sum(float(((c.get("properties") or {}).get("resources") or {}).get("requests", {}).get("cpu") or 0)
               for c in res.get("properties", {}).get("containers", []))


def _image_parts(image: str) -> tuple[str, str, str]:
    """(host, repository, tag or digest) of an image reference."""
    rest, ref = (image.split("@", 1) if "@" in image else (image.rsplit(":", 1) if ":" in image.split("/")[-1] else (image, "latest")))
    host, _, repo = rest.partition("/")
    return host.lower(), repo, ref


def _registry_store(sim: Any, host: str) -> dict[str, Any] | None:
    return (sim.state.get("acr") or {}).get(host)


def _manifest(sim: Any, image: str) -> tuple[dict[str, Any], str] | None:
    host, repo, ref = _image_parts(image)
    store = _registry_store(sim, host)
    repo_entry = (store or {}).get("repos", {}).get(repo)
    if repo_entry is None:
        return None
    digest = ref if ref.startswith("sha256:") else repo_entry["tags"].get(ref)
    entry = repo_entry["manifests"].get(digest or "")
    if entry is None:
        return None
    doc = json.loads(base64.b64decode(entry["data"]))
    if "manifests" in doc:  # an index: the linux/amd64 image
        for m in doc["manifests"]:
            if (m.get("platform") or {}).get("architecture") in (None, "amd64"):
                return _manifest(sim, f"{host}/{repo}@{m['digest']}")
        return None
    return doc, str(digest)


def _blob(sim: Any, host: str, digest: str) -> bytes:
    from orchestrator.azure.simulator.providers.acr import read_blob

    data = read_blob(sim, host, digest)
    if data is None:
        raise LookupError(f"blob {digest} is missing from {host}")
    return data


def image_config(sim: Any, image: str) -> dict[str, Any] | None:
    found = _manifest(sim, image)
    if found is None:
        return None
    doc, _ = found
    return dict(json.loads(_blob(sim, _image_parts(image)[0], doc["config"]["digest"])))


def image_problem(sim: Any, image: str) -> str | None:
    """Why ``image`` cannot be pulled from the simulated cloud whatever the credentials, or None."""
    host = _image_parts(image)[0]
    if not host.endswith(".azurecr.io"):  # Docker Hub ("nginx"), MCR...: outside the simulated cloud, assumed pullable
        return None
    if _manifest(sim, image) is None:
        return f"the image '{image}' was not found in {host}"
    return None


def _can_pull(sim: Any, body: dict[str, Any], image: str) -> str | None:
    """None when the group may pull ``image``; else why not (the message ACI gives)."""
    from orchestrator.azure.simulator.providers.acr import credentials_work

    host = _image_parts(image)[0]
    if not host.endswith(".azurecr.io"):  # a public registry: pulled anonymously
        return None
    missing = image_problem(sim, image)
    if missing:
        return missing
    props = body.get("properties") or {}
    creds = [c for c in props.get("imageRegistryCredentials") or [] if str(c.get("server", "")).lower() == host]
    if not creds:
        return f"no imageRegistryCredentials for {host} (anonymous pull is disabled on Azure Container Registry)"
    cred = creds[0]
    if cred.get("identity"):
        assigned = ((body.get("identity") or {}).get("userAssignedIdentities") or {})
        if cred["identity"].lower() not in {k.lower() for k in assigned}:
            return f"the identity {cred['identity']} is not assigned to the container group"
        if cred["identity"].lower() in {d.lower() for d in sim.state.get("denied_pulls", [])}:
            return f"the identity {cred['identity']} has no AcrPull role on {host}"
        return None
    if not credentials_work(sim, host, str(cred.get("username", "")), str(cred.get("password", ""))):
        return f"the registry {host} refused the credentials of user '{cred.get('username')}'"
    return None


def validate(sim: Any, path: str, body: dict[str, Any]) -> Response | None:
    """The synchronous checks of a container group PUT (nothing is stored when one fails)."""
    loc = str(body.get("location") or "").lower().replace(" ", "")
    props = body.get("properties") or {}
    knobs = settings(sim)
    if loc in knobs["unavailable_regions"]:
        return arm_error(400, "LocationNotAvailableForResourceType", f"The provided location '{loc}' is not available "
                         f"for resource type '{NS}/containerGroups'.")
    if knobs["capacity_errors"].get(loc, 0) > 0:
        knobs["capacity_errors"][loc] -= 1
        return arm_error(409, "InsufficientCapacity", f"The requested resource is not available in the location "
                         f"'{loc}' at this moment. Please retry with a different resource request or in another location.")
    containers = props.get("containers") or []
    ports: list[int] = []
    cpu = memory = 0.0
    for c in containers:
        cp = c.get("properties") or {}
        req = (cp.get("resources") or {}).get("requests") or {}
        if req.get("gpu"):
            return arm_error(400, "UnsupportedGpuSku", "GPU resources are not available for new container groups "
                             f"in '{loc}'.")
        cpu += float(req.get("cpu") or 0)
        memory += float(req.get("memoryInGB") or 0)
        ports += [int(p["port"]) for p in cp.get("ports") or []]
    if len(ports) != len(set(ports)):
        return arm_error(400, "DuplicateContainerPorts", f"Container group ports {ports} are not unique across containers.")
    group_ports = [int(p["port"]) for p in (props.get("ipAddress") or {}).get("ports") or []]
    if any(p not in ports for p in group_ports):
        return arm_error(400, "InvalidContainerGroupPorts", f"Group ports {group_ports} must be ports of its containers {ports}.")
    if cpu > MAX_CPU or memory > MAX_MEMORY_GB:
        return arm_error(400, "ResourceRequestsExceedLimit", f"The container group requests {cpu:g} CPU and {memory:g} GB; "
                         f"the limit in '{loc}' is {MAX_CPU} CPU and {MAX_MEMORY_GB:g} GB.")
    label = ((props.get("ipAddress") or {}).get("dnsNameLabel") or "").lower()
    sub = arm.subscription_of(path) or ""
    others = [g for g in _groups(sim) if arm.key_of(g["id"]) != arm.key_of(path)]
    if label and any(str(g.get("location", "")).lower() == loc and
                     ((g["properties"].get("ipAddress") or {}).get("dnsNameLabel") or "").lower() == label for g in others):
        return arm_error(400, "DnsNameLabelAlreadyInUse", f"The DNS name label '{label}' is already in use in '{loc}'.")
    used = sum(_cores(g) for g in others if str(g.get("location", "")).lower() == loc
               and (arm.subscription_of(g["id"]) or "").lower() == sub.lower())
    if used + cpu > knobs["core_limit"]:
        return arm_error(409, "StandardCoresQuotaExceeded", f"Operation would exceed the 'StandardCores' quota in '{loc}': "
                         f"limit {knobs['core_limit']}, in use {used:g}, requested {cpu:g}.")
    for c in containers:
        image = str((c.get("properties") or {}).get("image") or "")
        why = _can_pull(sim, body, image)
        if why:
            return arm_error(400, "InaccessibleImage", f"The image '{image}' in container group '{path.rsplit('/', 1)[-1]}' "
                             f"is not accessible: {why}.")
    return None


def _started(sim: Any, op: dict[str, Any], res: dict[str, Any] | None) -> None:
    """The group's operation ended: its containers run (or start and exit, for a non-deployctl image)."""
    if res is None or op["outcome"] != "Succeeded":
        return
    props = res["properties"]
    state = "Running"
    for c in props.get("containers", []):
        image = c["properties"]["image"]
        config = image_config(sim, image) if _image_parts(image)[0].endswith(".azurecr.io") else None
        env = dict(e.split("=", 1) for e in ((config or {}).get("config") or {}).get("Env") or [] if "=" in e)
        if config is None:  # a public image the simulator does not hold: it runs, it cannot be called
            view = {"restartCount": 0, "currentState": {"state": "Running", "detailStatus": ""}}
            log = f"{image}: a public image; the simulator runs only images pushed to its registries\n"
        elif "DEPLOYCTL_ENTRY" in env:
            view = {"restartCount": 0, "currentState": {"state": "Running", "detailStatus": ""}}
            log = ""
        else:
            cmd = " ".join((config.get("config") or {}).get("Cmd") or [])
            log = (f"{cmd or 'the image'}: deployctl's scoring runtime is not in this image "
                   f"(no DEPLOYCTL_ENTRY in its config): it cannot serve /score\n")
            view = {"restartCount": 1, "currentState": {"state": "Terminated", "exitCode": 1, "detailStatus": "Error"}}
            state = "Failed"
        c["properties"]["instanceView"] = view
        res.setdefault("_logs", {})[c["name"]] = log
    props["instanceView"] = {"state": state}


class ContainerInstances:
    """The ``Microsoft.ContainerInstance`` namespace (what spec-driven CRUD cannot do alone)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        sim.hooks["aci.started"] = _started

    def handle(self, req: Request, operation: str | None) -> Response | None:
        sim = self.sim
        if m := USAGES.match(req.path):
            sub, loc = m.group(1).lower(), m.group(2).lower()
            mine = [g for g in _groups(sim) if (arm.subscription_of(g["id"]) or "").lower() == sub
                    and str(g.get("location", "")).lower() == loc]
            limit = settings(sim)["core_limit"]
            rows = [("ContainerGroups", len(mine), 100), ("StandardCores", sum(_cores(g) for g in mine), limit)]
            return json_response(200, {"value": [
                {"id": f"{req.path}/{n}", "unit": "Count", "currentValue": int(cur), "limit": int(lim),
                 "name": {"value": n, "localizedValue": n}} for n, cur, lim in rows]})
        m = GROUP.search(req.path)
        if m is None:
            if req.method == "GET" and req.path.lower().endswith("/containergroups"):
                return arm.list_response([_public(r) for r in arm.children(sim, req.path)])
            return None
        path, tail = req.path[: m.end()], req.path[m.end():]
        res = sim.get(path)
        if (lm := LOGS.match(tail)) and req.method == "GET":
            if res is None:
                return arm.not_found(path)
            log = (res.get("_logs") or {}).get(lm.group(1))
            if log is None or log == "":
                log = _scorer_log(sim, res)
            lines = log.splitlines(keepends=True)
            tail_n = int(req.query.get("tail") or 0)
            return json_response(200, {"content": "".join(lines[-tail_n:] if tail_n else lines)})
        if tail:
            return None
        if req.method == "GET":
            return json_response(200, _public(res)) if res is not None else arm.not_found(path)
        if req.method == "PUT":
            return self.put(req, path, res)
        if req.method == "PATCH":
            if res is None:
                return arm.not_found(path)
            res["tags"] = dict((req.json() or {}).get("tags") or {})
            return json_response(200, _public(res))
        return None  # DELETE: spec-driven (an LRO when the simulator models async deletes)

    def put(self, req: Request, path: str, existing: dict[str, Any] | None) -> Response:
        sim = self.sim
        body = req.json()
        if not isinstance(body, dict):
            return arm_error(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.")
        bad = validate(sim, path, body)
        if bad is not None:
            return bad
        loc = str(body["location"]).lower().replace(" ", "")
        props = copy.deepcopy(body.get("properties") or {})
        ip = props.get("ipAddress")
        if ip is not None:
            ip["ip"] = "20." + ".".join(str(b) for b in hashlib.sha256(path.encode()).digest()[:3])
            if ip.get("dnsNameLabel"):
                ip["fqdn"] = f"{ip['dnsNameLabel'].lower()}.{loc}.azurecontainer.io"
        for c in props.get("containers", []):
            c["properties"]["instanceView"] = None
        props["instanceView"] = {"state": "Pending"}
        new = sim.put_resource(path, {**body, "properties": props, "_logs": {}}, location=loc)
        new["properties"]["provisioningState"] = "Creating" if existing is None else "Updating"
        op = arm.start_operation(sim, path, "create" if existing is None else "update", kind="aci",
                                 operation="ContainerGroups_CreateOrUpdate", location=loc, namespace=NS, hook="aci.started")
        return arm.lro_response(sim, op, 201 if existing is None else 200, _public(new),
                                api_version=req.query.get("api-version", ""))


# -- the containers themselves -------------------------------------------------------------------

def _secure_env(res: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in res["properties"].get("containers", []):
        for e in c["properties"].get("environmentVariables") or []:
            if e.get("secureValue") is not None:
                out[e["name"]] = str(e["secureValue"])
    return out


def _plain_env(res: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in res["properties"].get("containers", []):
        for e in c["properties"].get("environmentVariables") or []:
            if e.get("value") is not None:
                out[e["name"]] = str(e["value"])
    return out


def served_digest(sim: Any, res: dict[str, Any]) -> str:
    """What a group's container serves, by content: its image by digest and its plain variables."""
    image = res["properties"]["containers"][0]["properties"]["image"]
    found = _manifest(sim, image)
    served = {"aci": found[1] if found else image, "env": _plain_env(res)}
    return hashlib.sha256(json.dumps(served, sort_keys=True).encode()).hexdigest()[:32]


def unpack(sim: Any, image: str, root: Path) -> dict[str, Any]:
    """Extract every layer of ``image`` (base first) under ``root``; returns the image config.
    Regular files and folders only: links and devices have no place in a scoring root."""
    found = _manifest(sim, image)
    if found is None:
        raise LookupError(f"{image} is not in the simulated registry")
    doc, _ = found
    host = _image_parts(image)[0]
    root.mkdir(parents=True, exist_ok=True)
    for layer in doc.get("layers", []):
        data = _blob(sim, host, layer["digest"])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                target = (root / member.name).resolve()
                if not target.is_relative_to(root.resolve()):
                    continue
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    target.write_bytes(src.read() if src else b"")
                    target.chmod(member.mode & 0o755 or 0o644)
    return dict(json.loads(_blob(sim, host, doc["config"]["digest"])))


def prepare_container(sim: Any, res: dict[str, Any], workdir: Path) -> tuple[Path, Path, str, Path, dict[str, str]]:
    """Stage a group's container for the scorer (see :func:`prepare_image`)."""
    return prepare_image(sim, res["properties"]["containers"][0]["properties"]["image"], _plain_env(res), workdir)


def prepare_image(sim: Any, image: str, plain_env: dict[str, str], workdir: Path) -> tuple[Path, Path, str, Path, dict[str, str]]:
    """Stage ``image`` of the simulated registry for the scorer, as a container platform (ACI, App
    Service) runs it with ``plain_env``: (python, code dir, entry, model dir, environment).
    The image's own runtime and site-packages go first on PYTHONPATH; the interpreter is a plain
    one of the image's Python version (the base image's own cannot run on this machine)."""
    from targets.local.envs import build_environment

    root = workdir / "rootfs"
    config = unpack(sim, image, root)
    env = dict(e.split("=", 1) for e in (config.get("config") or {}).get("Env") or [] if "=" in e)
    python = (config.get("config") or {}).get("Labels", {}).get("io.deployctl.python") or env.get("PYTHON_VERSION", "3.11")
    python = ".".join(str(python).split(".")[:2])

    def inside(p: str) -> str:
        return str(root / p.lstrip("/"))

    run_env = {k: v for k, v in env.items() if k not in ("PATH", "PYTHONPATH", "HOME", "PORT")}
    run_env["PYTHONPATH"] = ":".join(inside(p) for p in env.get("PYTHONPATH", "").split(":") if p)
    run_env.update(plain_env)
    run_env.pop("PORT", None)
    return (Path(build_environment(requirements="", python=python)), Path(inside(env.get("DEPLOYCTL_CODE_DIR", "/opt/deployctl/code"))),
            env.get("DEPLOYCTL_ENTRY", "score.py"), Path(inside(env.get("AZUREML_MODEL_DIR", "/opt/deployctl/model"))), run_env)


def _runtime(sim: Any) -> Any:
    from orchestrator.azure.simulator.providers.scoring import Scoring

    return next(p for p in sim.providers if isinstance(p, Scoring)).ensure_runtime()


def _scorer_log(sim: Any, res: dict[str, Any]) -> str:
    runtime = _runtime(sim)
    try:
        return str(runtime.log_of(arm.key_of(res["id"]), served_digest(sim, res)))
    except (LookupError, OSError):
        return ""


def runtime_request(req: Request, key: str | None, scorer: Callable[[], Any], crashed: Callable[[Exception], Response],
                    health_paths: tuple[str, ...] = ("/",)) -> Response | Deferred:
    """A request to a container running deployctl's runtime (ACI, App Service): a health path
    starts it (``scorer()``, warm afterwards), ``/score`` checks the key as the runtime does; a
    container that exits while starting answers ``crashed(error)``."""
    if req.method == "GET" and req.path in health_paths:
        def health() -> Response:
            try:
                port = scorer().port
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:  # the runtime's own answer: its headers (init() seconds) reach the caller
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    answer = Response(resp.status, resp.read(), {k: v for k, v in resp.getheaders()
                                                                 if k.lower().startswith(("content-type", "x-"))})
                finally:
                    conn.close()
            except Exception as e:  # init() failing: the container exits
                return crashed(e)
            return answer
        return Deferred(health)
    if req.path != "/score":
        return Response(404, b'{"message": "not found"}', {"Content-Type": "application/json"})
    auth = (req.header("authorization") or "").removeprefix("Bearer ").strip()
    if key and auth != key:
        return json_response(401, {"message": "Authorization: Bearer <key> is required (see deployctl status --show-keys)"})
    body, ctype = req.body, req.header("content-type") or "application/json"

    def score() -> Response:
        try:
            status, out, headers = scorer().score(body, {"Content-Type": ctype})
        except Exception as e:
            return crashed(e)
        return Response(status, out, {"Content-Type": headers.get("content-type", "application/json")})
    return Deferred(score)


class ContainerEndpoints:
    """``http://<label>.<region>.azurecontainer.io:<port>/...``: the group's container."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def owns(self, req: Request) -> bool:
        return bool(HOST.match(req.host))

    def operation(self, req: Request) -> str:
        return "ContainerScore" if req.path == "/score" else "ContainerHttp"

    def handle(self, req: Request) -> Response | Deferred | None:
        sim = self.sim
        group = next((g for g in _groups(sim)
                      if ((g["properties"].get("ipAddress") or {}).get("fqdn") or "").lower() == req.host), None)
        if group is None:
            return Response(502, b"name does not resolve: no container group has this address", dict(TEXT))
        ports = [int(p["port"]) for p in (group["properties"].get("ipAddress") or {}).get("ports") or []]
        port = req.port or 80
        if port not in ports or (group["properties"].get("instanceView") or {}).get("state") != "Running":
            return Response(502, b"connection refused", dict(TEXT))
        key = _secure_env(group).get(KEY_ENV)
        res = copy.deepcopy(group)
        return runtime_request(req, key, lambda: self._scorer(res), lambda e: self._crashed(res, e))

    def _scorer(self, res: dict[str, Any]) -> Any:
        sim = self.sim
        digest = served_digest(sim, res)
        return _runtime(sim).serve(arm.key_of(res["id"]), digest, lambda workdir: prepare_container(sim, res, workdir))

    def _crashed(self, res: dict[str, Any], e: Exception) -> Response:
        """The container exited while starting: the group shows it (Terminated, a restart, its
        log) as ACI does, and the caller sees a refused connection."""
        with self.sim._lock:
            live = self.sim.get(res["id"])
            if live is not None:
                for c in live["properties"].get("containers", []):
                    view = c["properties"].get("instanceView") or {}
                    c["properties"]["instanceView"] = {
                        "restartCount": int(view.get("restartCount") or 0) + 1,
                        "currentState": {"state": "Terminated", "exitCode": 1, "detailStatus": "Error"}}
                    live.setdefault("_logs", {})[c["name"]] = str(e)
        return Response(502, f"connection refused: the container exited ({str(e).splitlines()[0] if str(e) else e!r})".encode(),
                        dict(TEXT))
