"""Azure ML scoring hosts (``https://<endpoint>.<region>.inference.ml.azure.com``): online
endpoints really score, batch endpoints really run jobs.

A POST to ``/score`` on an endpoint whose deployment reached Succeeded runs the uploaded
``score.py`` with the uploaded model through the local target's runtime
(``targets.local.scorer.Scorer`` in an environment built by ``targets.local.envs``): the
deployment's code, model and environment are read back from the simulated blob store.  For a
persisted cloud (``--simulate``) the scorer stays warm across CLI runs (:mod:`..scorers`).  The
``azureml-model-deployment`` header addresses one deployment; otherwise traffic decides (seeded).
Batch ``invoke`` (POST ``/jobs``) creates a job that runs the batch contract over the input files
once its simulated duration has passed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Deferred, Request, Response, json_response

HOST = re.compile(r"^([a-z0-9-]+)\.([a-z0-9]+)\.inference\.ml\.azure\.com$")
DATASTORE_URI = re.compile(r"datastores/([^/]+)/paths/(.*)$")
NS = "microsoft.machinelearningservices"
# the data-plane invoke names input types "UriFolder"; ARM jobs use the discriminators "uri_folder"...
INPUT_TYPES = {"urifolder": "uri_folder", "urifile": "uri_file", "mltable": "mltable", "literal": "literal",
               "custommodel": "custom_model", "mlflowmodel": "mlflow_model"}


def find_endpoint(sim: Any, name: str, location: str, kind: str) -> dict[str, Any] | None:
    for r in sim.state["resources"].values():
        if r.get("type", "").lower() == f"{NS}/workspaces/{kind}" and r["name"].lower() == name \
                and r.get("location", "").lower() == location:
            return r
    return None


def model_ref(ref: Any, sim: Any = None) -> str:
    """The ARM id a deployment's model reference names: online deployments give an id, batch
    deployments ``{"referenceType": "Id", "assetId"}``; registry models ``azureml://registries/...``."""
    out = str((ref.get("assetId") if isinstance(ref, dict) else ref) or "")
    m = re.match(r"^azureml://registries/([^/]+)/(.+)$", out, re.IGNORECASE)
    if m and sim is not None:
        reg = next((r for r in sim.state["resources"].values()
                    if r.get("type", "").lower() == f"{NS}/registries" and r["name"].lower() == m.group(1).lower()), None)
        if reg is not None:
            return f"{reg['id']}/{m.group(2)}"
    return out


def workspace_of(res_id: str) -> str:
    m = re.match(r"^(.*/workspaces/[^/]+)", res_id, re.IGNORECASE)
    return m.group(1) if m else res_id


def locate(sim: Any, ws_id: str, uri: str) -> tuple[str, str, str]:
    """(account, container, prefix) of an ``azureml://datastores/<ds>/paths/<p>`` (or blob https) URI."""
    m = DATASTORE_URI.search(uri)
    if m:
        ds = sim.get(f"{ws_id}/datastores/{m.group(1)}")
        if ds is None:
            raise LookupError(f"datastore {m.group(1)} not found")
        return ds["properties"]["accountName"], ds["properties"]["containerName"], m.group(2).strip("/")
    hm = re.match(r"^https://([a-z0-9]+)\.blob\.core\.windows\.net/([^/]+)/?(.*)$", uri.split("?")[0])
    if not hm:
        raise LookupError(f"cannot read asset URI {uri}")
    return hm.group(1), hm.group(2), hm.group(3).strip("/")


def _files_at(sim: Any, ws_id: str, uri: str) -> list[tuple[str, str]]:
    """(path relative to the URI, blob name) of every file an asset URI names."""
    from orchestrator.azure.simulator.providers import storage

    account, container, prefix = locate(sim, ws_id, uri)
    names = storage.list_blob_names(sim, account, container, prefix)
    if not names:
        raise LookupError(f"no files at {uri}")
    out = []
    for n in names:
        rel = n[len(prefix):].lstrip("/") or Path(n).name
        if rel != ".deployctl-complete" and ".." not in Path(rel).parts:
            out.append((rel, n))
    return out


def materialize(sim: Any, ws_id: str, uri: str, dest: Path) -> Path:
    """Download the blobs under an ``azureml://datastores/<ds>/paths/<p>`` (or blob https) URI."""
    from orchestrator.azure.simulator.providers import storage

    account, container, _ = locate(sim, ws_id, uri)
    files = _files_at(sim, ws_id, uri)
    dest.mkdir(parents=True, exist_ok=True)
    for rel, n in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(storage.get_blob(sim, account, container, n) or b"")
    return dest


def image_of(env: dict[str, Any]) -> str | None:
    """The image Azure ML runs as is for an environment with an inference config (a custom
    container, such as deployctl's own image: ``environment_image: deployctl``), or None."""
    props = env.get("properties") or {}
    return str(props["image"]) if props.get("inferenceConfig") and props.get("image") else None


def _assets(sim: Any, dep: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """(code, model, environment) resources of a deployment; no code when the environment's image
    serves it (an inference config)."""
    props = dep["properties"]
    code = sim.get((props.get("codeConfiguration") or {}).get("codeId") or "")
    model = sim.get(model_ref(props.get("model"), sim))
    env = sim.get(props.get("environmentId") or "")
    if model is None or env is None or (code is None and image_of(env) is None):
        raise LookupError("the deployment's code, model or environment is not in the simulated workspace")
    return code, model, env


def served_digest(sim: Any, dep: dict[str, Any]) -> str:
    """What a deployment's scorer serves, by content (file hashes, environment, entry, variables):
    deployments with equal digests can share one scorer process."""
    ws_id, props = workspace_of(dep["id"]), dep["properties"]
    code, model, env = _assets(sim, dep)

    def listing(uri: str) -> list[tuple[str, str]]:
        account, container, _ = locate(sim, ws_id, uri)
        blobs = sim.state["blobs"].get(account, {}).get(container, {})  # md5: the content hash the service keeps
        return [(rel, blobs[n]["md5"]) for rel, n in _files_at(sim, ws_id, uri)]

    model_uri = model["properties"]["modelUri"]
    served = {"code": listing(code["properties"]["codeUri"]) if code else None, "model": listing(model_uri),
              "model_folder": Path(model_uri.rstrip("/")).name if _is_folder(model_uri) else None,
              "conda": env["properties"].get("condaFile"), "image": image_of(env),  # an image by digest: its content
              "entry": (props.get("codeConfiguration") or {}).get("scoringScript") or "score.py",
              "variables": props.get("environmentVariables") or {}}
    return hashlib.sha256(json.dumps(served, sort_keys=True).encode()).hexdigest()[:32]


def _is_folder(model_uri: str) -> bool:
    return model_uri.endswith("/") or not Path(model_uri.split("?")[0]).suffix


class Runtime:
    """Scorers of deployments.  In memory (tests' simulators): started on first request, reused,
    stopped with the simulator.  For a persisted cloud (``--simulate``): warm processes that
    outlive the run, shared by content (:mod:`..scorers`)."""

    def __init__(self, sim: Any, state_file: Path | None = None) -> None:
        from orchestrator.azure.simulator.scorers import ScorerRegistry, home_of

        self.sim = sim
        self.registry = ScorerRegistry(home_of(state_file), watch=state_file) if state_file is not None else None
        self.scorers: dict[str, tuple[str, Any]] = {}
        self.workdirs: dict[str, Path] = {}
        self.tmp = tempfile.TemporaryDirectory(prefix="deployctl-sim-")
        self._starting = threading.Lock()  # in memory: one start at a time
        # In-memory scorers are processes: stop them when the simulator is dropped without close()
        # (or at interpreter exit), so forgotten simulators do not leave servers running.
        self._finalizer = weakref.finalize(self, _stop_all, self.scorers, self.tmp)

    def stage(self, dep: dict[str, Any], work: Path) -> tuple[Any, Path | None, Path, str, str | None]:
        """Copy a deployment's code and model out of the simulated cloud (under the simulator's lock):
        (conda file or None, code dir or None, model dir, entry, the environment's image or None)."""
        sim, ws_id = self.sim, workspace_of(dep["id"])
        with sim._lock:
            code, model, env = _assets(sim, dep)
            code_dir = materialize(sim, ws_id, code["properties"]["codeUri"], work / "code") if code else None
            # As on Azure: AZUREML_MODEL_DIR holds the registered folder by its name (a file: directly)
            model_uri = model["properties"]["modelUri"]
            model_dir = work / "model"
            materialize(sim, ws_id, model_uri,
                        model_dir / Path(model_uri.rstrip("/")).name if _is_folder(model_uri) else model_dir)
            conda = env["properties"].get("condaFile")
        entry = (dep["properties"].get("codeConfiguration") or {}).get("scoringScript") or "score.py"
        return conda, code_dir, model_dir, entry, image_of(env)

    def prepare(self, dep: dict[str, Any], work: Path | None = None) -> tuple[Path, Path, str, Path, dict[str, str]]:
        """(python, code dir, entry, model dir, environment) of a deployment, from the simulated
        cloud.  An environment with an inference config runs its image (deployctl's runtime, its
        site-packages and code), with the registered model mounted at AZUREML_MODEL_DIR, as Azure
        ML mounts it."""
        from targets.local.envs import build_environment

        work = work or Path(self.tmp.name) / dep["etag"].strip('"')
        variables = {k: str(v) for k, v in (dep["properties"].get("environmentVariables") or {}).items()}
        conda, code_dir, model_dir, entry, image = self.stage(dep, work)
        if image is not None:
            from orchestrator.azure.simulator.providers.aci import prepare_image

            python, code_dir, entry, _, env = prepare_image(self.sim, image, variables, work / "image")
            return python, code_dir, entry, model_dir, env
        assert code_dir is not None  # _assets: no code only with an image
        python = build_environment(conda=conda) if conda else build_environment(requirements="")
        return Path(python), code_dir, entry, model_dir, variables

    def scorer(self, dep: dict[str, Any], digest: str) -> Any:
        return self.serve(arm.key_of(dep["id"]), digest, lambda workdir: self.prepare(dep, workdir))

    def serve(self, key: str, digest: str, prepare: Any) -> Any:
        """The scorer serving ``digest`` for the resource ``key`` (an endpoint deployment, a
        container group), started from ``prepare(workdir) -> (python, code dir, entry, model dir,
        env)`` when none runs: warm across runs for a persisted cloud, per simulator otherwise."""
        from targets.local.scorer import Scorer

        if self.registry is not None:
            if (warm := self.registry.running(digest)) is not None:
                return warm
            return self.registry.get_or_start(digest, prepare)  # one start per digest, across processes
        with self._starting:
            held = self.scorers.get(key)
            if held and held[0] == digest:
                return held[1]
            if held:
                held[1].stop()
            workdir = Path(self.tmp.name) / hashlib.sha256(f"{key}:{digest}".encode()).hexdigest()[:16]
            python, code_dir, entry, model_dir, env = prepare(workdir)
            s = Scorer(python, code_dir, entry, model_dir, env=env).start(workdir / "run")
            self.scorers[key] = (digest, s)
            self.workdirs[key] = workdir / "run"
            return s

    def log_of(self, key: str, digest: str) -> str:
        """What the scorer serving ``digest`` wrote (its server log), or ""."""
        home = self.registry.home / digest if self.registry is not None else self.workdirs.get(key)
        log = home / "server.log" if home is not None else None
        return log.read_text(errors="replace") if log is not None and log.exists() else ""

    def reap(self) -> list[str]:
        """Stop the warm scorers no deployment or container group of the cloud serves any more
        (deleted, changed, reset)."""
        from orchestrator.azure.simulator.providers import aci, appservice

        if self.registry is None or not self.registry.digests():
            return []
        if self.sim.store is not None and self.sim.store.read_only:
            # plan, status, logs change nothing a scorer serves; the run that deletes or changes a
            # deployment reaps its scorer (this walk costs O(deployments x blobs): 0.5 s at 100)
            return []
        keep = set()
        with self.sim._lock:
            self.sim.refresh()
            for r in list(self.sim.state["resources"].values()):
                if r.get("type", "").lower() == f"{NS}/workspaces/onlineendpoints/deployments".lower():
                    with contextlib.suppress(LookupError, KeyError):
                        keep.add(served_digest(self.sim, r))
                elif r.get("type", "").lower() == aci.GROUPS_TYPE:
                    with contextlib.suppress(LookupError, KeyError, IndexError):
                        keep.add(aci.served_digest(self.sim, r))
            keep |= appservice.served_digests(self.sim)
        return self.registry.reap(keep)

    def close(self) -> None:
        self._finalizer()


def _stop_all(scorers: dict[str, tuple[str, Any]], tmp: tempfile.TemporaryDirectory[str]) -> None:
    for _, s in scorers.values():
        try:
            s.stop()
        except Exception:  # a server that already exited
            pass
    scorers.clear()
    tmp.cleanup()


class Scoring:
    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.runtime: Runtime | None = None

    def owns(self, req: Request) -> bool:
        return bool(HOST.match(req.host))

    def operation(self, req: Request) -> str:
        return "BatchEndpoint_Invoke" if req.path.lower().startswith("/jobs") else "Score"

    def close(self) -> None:
        runtime = self.ensure_runtime() if self.sim.store is not None else self.runtime
        if runtime is not None:
            runtime.reap()
            runtime.close()
            self.runtime = None

    def ensure_runtime(self) -> Runtime:
        if self.runtime is None:
            store = self.sim.store
            self.runtime = Runtime(self.sim, store.path.absolute() if store is not None else None)
        return self.runtime

    def handle(self, req: Request) -> Response | Deferred | None:
        m = HOST.match(req.host)
        assert m
        name, location = m.group(1), m.group(2)
        if req.path.lower() == "/jobs" and req.method == "POST":
            ep = find_endpoint(self.sim, name, location, "batchendpoints")
            return self.invoke(req, ep) if ep else _msg(404, f"Batch endpoint {name} not found.")
        ep = find_endpoint(self.sim, name, location, "onlineendpoints")
        if ep is None:
            return _msg(404, f"Endpoint {name} not found.")
        if req.method == "GET" and req.path in ("/", "/swagger.json"):
            return json_response(200, {"swagger": "2.0", "info": {"title": name}}) if req.path != "/" else Response(200, b"Healthy")
        if req.method != "POST" or req.path.lower() != "/score":
            return _msg(404, f"{req.method} {req.path} is not a scoring route.")
        auth = (req.header("authorization") or "").removeprefix("Bearer ").strip()
        keys = ep.get("_keys") or {}
        mode = ep["properties"].get("authMode", "Key")
        if mode == "Key" and auth not in (keys.get("primaryKey"), keys.get("secondaryKey")):
            return _msg(401, "Invalid authentication: key mismatch.")
        if mode != "Key" and not auth:
            return _msg(401, "Missing token.")
        dep = self.route(ep, req.header("azureml-model-deployment"))
        if isinstance(dep, Response):
            return dep
        runtime = self.ensure_runtime()
        try:
            digest = served_digest(self.sim, dep)
        except LookupError as e:
            return _msg(502, f"The scoring container could not start: {e}")
        dep = copy.deepcopy(dep)
        body, ctype = req.body, req.header("content-type") or "application/json"
        # starting a scorer takes seconds: outside the simulator's lock (other requests go on)
        return Deferred(lambda: self._score(runtime, dep, digest, body, ctype))

    def _score(self, runtime: Runtime, dep: dict[str, Any], digest: str, body: bytes, ctype: str) -> Response:
        sim = self.sim
        try:
            status, out_body, headers = runtime.scorer(dep, digest).score(body, {"Content-Type": ctype})
        except Exception as e:  # the user's init() failing is the deployment failing: say so like Azure does
            with sim._lock:
                sim.state["logs"].setdefault(arm.key_of(dep["id"]), []).append(str(e))
            detail = " ".join([line.strip() for line in str(e).splitlines() if line.strip()][:3])
            return _msg(502, f"The scoring container could not start: {detail} (see the deployment's logs)")
        with sim._lock:
            request_id = sim.new_id()
        out = {"azureml-model-deployment": dep["name"], "x-ms-request-id": request_id,
               "Content-Type": headers.get("content-type", "application/json")}
        return Response(status, out_body, out)

    def route(self, ep: dict[str, Any], header: str | None) -> dict[str, Any] | Response:
        deps = {d["name"]: d for d in arm.children(self.sim, ep["id"] + "/deployments")}
        if header:
            dep = deps.get(header)
            if dep is None:
                return _msg(404, f"Deployment {header} not found in endpoint {ep['name']}.")
        else:
            traffic = {k: int(v) for k, v in (ep["properties"].get("traffic") or {}).items() if int(v) > 0}
            if not traffic:
                return _msg(424, "No valid deployments to route to. Please check that the endpoint has at least one "
                            "deployment with positive weight values or use a deployment specific header to route.")
            pick = self.sim.rng.uniform(0, sum(traffic.values()))
            ordered = sorted(traffic.items())
            name = ordered[-1][0]
            for candidate, pct in ordered:
                pick -= pct
                if pick <= 0:
                    name = candidate
                    break
            dep = deps.get(name)
            if dep is None:
                return _msg(424, f"Deployment {name} not found.")
        if dep["properties"].get("provisioningState") != "Succeeded":
            return _msg(424, f"Deployment {dep['name']} is {dep['properties'].get('provisioningState')}, not ready.")
        return dep

    def invoke(self, req: Request, ep: dict[str, Any]) -> Response:
        sim = self.sim
        body = req.json() or {}
        header = req.header("azureml-model-deployment")
        dep_name = header or (ep["properties"].get("defaults") or {}).get("deploymentName")
        dep = sim.get(f"{ep['id']}/deployments/{dep_name}") if dep_name else None
        if dep is None and header:
            # note: azure-ai-ml 1.35 keeps the header of an earlier invoke(deployment_name=...) in a
            # class-level dict, so a later invoke without it still names that deployment
            return _msg(404, f"Deployment '{header}' (azureml-model-deployment header) not found in batch endpoint "
                        f"{ep['name']}.")
        if dep is None:
            return _msg(400, "No deployment to run the job: set a default deployment or name one.")
        n = sum(1 for r in sim.state["resources"].values() if r.get("type", "").lower().endswith("/jobs"))
        ws_id = workspace_of(ep["id"])
        props = body.get("properties") or {}
        # invoke(job_name=...) names the job; Azure refuses a second job of the same name
        name = props.get("name") or f"batchjob-{ep['name']}-{n + 1:04d}"
        if props.get("name") and sim.get(f"{ws_id}/jobs/{name}") is not None:
            return _msg(409, f"A job named {name} already exists in the workspace.")
        out_uri = ((props.get("outputData") or {}).get("score") or {}).get("uri")
        raw_inputs = props.get("inputData") or props.get("InputData") or props.get("inputs") or {}
        inputs = {k: {**v, "jobInputType": INPUT_TYPES.get(str(v.get("jobInputType", "")).lower().replace("_", ""),
                                                           v.get("jobInputType"))}
                  for k, v in raw_inputs.items() if isinstance(v, dict)}
        job = sim.put_resource(f"{ws_id}/jobs/{name}", {"properties": {
            "jobType": "Pipeline", "status": "Running", "displayName": name, "experimentName": ep["name"],
            "inputs": inputs,
            "outputs": {}, "properties": {"azureml.batchrun": "true", "deployment": dep["id"],
                                         **({"outputUri": out_uri} if out_uri else {})},
            "tags": {}, "services": {}, "jobs": {}, "settings": {}, "isArchived": False}})
        arm.start_operation(sim, job["id"], "noop", kind="default", operation="BatchJob", location=ep["location"],
                            namespace="Microsoft.MachineLearningServices", hook="ml.job")
        return json_response(200, {"id": job["id"], "name": name, "properties": {**job["properties"],
                                                                                  "status": "Running"}})


def run_batch_job(sim: Any, job: dict[str, Any]) -> None:
    """Run a batch job's deployment over its input files; outputs go next to the inputs' datastore."""
    from orchestrator.azure.simulator.providers import storage

    props = job["properties"]
    dep = sim.get(props["properties"]["deployment"])
    try:
        if dep is None:
            raise LookupError("deployment gone")
        inputs = props.get("inputs") or {}
        first: dict[str, Any] = next(iter(inputs.values()), {}) if isinstance(inputs, dict) else {}
        uri = first.get("uri") or first.get("path") or ""
        scoring = next(p for p in sim.providers if isinstance(p, Scoring))
        python, code_dir, entry, model_dir, env = scoring.ensure_runtime().prepare(dep)
        from targets.local.scorer import Scorer

        with tempfile.TemporaryDirectory() as tmp:
            inp = materialize(sim, workspace_of(job["id"]), uri, Path(tmp) / "in")
            files = sorted(p for p in inp.rglob("*") if p.is_file())
            rows = Scorer(python, code_dir, entry, model_dir, env=env).run_batch(files)
        ds_name, out_dir = "workspaceblobstore", f"azureml/{job['name']}/score"
        requested = DATASTORE_URI.search(props["properties"].get("outputUri") or "")
        if requested:  # the invoke's outputData folder, as Azure honours it
            ds_name, out_dir = requested.group(1), requested.group(2).strip("/")
        ds = sim.get(workspace_of(job["id"]) + f"/datastores/{ds_name}")["properties"]
        out = f"{out_dir}/{(dep['properties'].get('outputFileName') or 'predictions.csv')}"
        storage.put_blob(sim, ds["accountName"], ds["containerName"], out, ("\n".join(rows) + "\n").encode())
        props["status"] = "Completed"
        props["outputs"] = {"score": {"jobOutputType": "uri_file", "uri": f"azureml://datastores/{ds_name}/paths/{out}"}}
    except Exception as e:
        props["status"] = "Failed"
        props["error"] = {"code": "UserError", "message": str(e)[:2000]}
        sim.state["logs"].setdefault(arm.key_of(job["id"]), []).append(json.dumps(props["error"]))


def _msg(status: int, message: str) -> Response:
    return json_response(status, {"message": message})
