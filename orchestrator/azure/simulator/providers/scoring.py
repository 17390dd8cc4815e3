"""Azure ML scoring hosts (``https://<endpoint>.<region>.inference.ml.azure.com``): online
endpoints really score, batch endpoints really run jobs.

A POST to ``/score`` on an endpoint whose deployment reached Succeeded runs the uploaded
``score.py`` with the uploaded model through the local target's runtime
(``targets.local.scorer.Scorer`` in an environment built by ``targets.local.envs``): the
deployment's code, model and environment are read back from the simulated blob store.  The
``azureml-model-deployment`` header addresses one deployment; otherwise traffic decides (seeded).
Batch ``invoke`` (POST ``/jobs``) creates a job that runs the batch contract over the input files
once its simulated duration has passed.
"""

from __future__ import annotations

import json
import re
import tempfile
import weakref
from pathlib import Path
from typing import Any

from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Request, Response, json_response

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


def materialize(sim: Any, ws_id: str, uri: str, dest: Path) -> Path:
    """Download the blobs under an ``azureml://datastores/<ds>/paths/<p>`` (or blob https) URI."""
    from orchestrator.azure.simulator.providers import storage

    m = DATASTORE_URI.search(uri)
    if m:
        ds = sim.get(f"{ws_id}/datastores/{m.group(1)}")
        if ds is None:
            raise LookupError(f"datastore {m.group(1)} not found")
        account, container, prefix = ds["properties"]["accountName"], ds["properties"]["containerName"], m.group(2)
    else:
        hm = re.match(r"^https://([a-z0-9]+)\.blob\.core\.windows\.net/([^/]+)/?(.*)$", uri.split("?")[0])
        if not hm:
            raise LookupError(f"cannot read asset URI {uri}")
        account, container, prefix = hm.group(1), hm.group(2), hm.group(3)
    prefix = prefix.strip("/")
    names = storage.list_blob_names(sim, account, container, prefix)
    dest.mkdir(parents=True, exist_ok=True)
    for n in names:
        rel = n[len(prefix):].lstrip("/") or Path(n).name
        if rel == ".deployctl-complete" or ".." in Path(rel).parts:
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(storage.get_blob(sim, account, container, n) or b"")
    if not names:
        raise LookupError(f"no files at {uri}")
    return dest


class Runtime:
    """Scorers by deployment (started on first request, reused, stopped with the simulator)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.scorers: dict[str, tuple[str, Any]] = {}
        self.tmp = tempfile.TemporaryDirectory(prefix="deployctl-sim-")
        # Scoring servers are processes: stop them when the simulator is dropped without close()
        # (or at interpreter exit), so forgotten simulators do not leave servers running.
        self._finalizer = weakref.finalize(self, _stop_all, self.scorers, self.tmp)

    def prepare(self, dep: dict[str, Any]) -> tuple[Path, Path, Path, str]:
        """(python, code dir, model dir, entry) of a deployment, from the simulated cloud."""
        from targets.local.envs import build_environment

        sim, ws_id = self.sim, workspace_of(dep["id"])
        props = dep["properties"]
        work = Path(self.tmp.name) / dep["etag"].strip('"')
        code_cfg = props.get("codeConfiguration") or {}
        code = sim.get(code_cfg.get("codeId") or "")
        model = sim.get(model_ref(props.get("model"), sim))
        env = sim.get(props.get("environmentId") or "")
        if code is None or model is None or env is None:
            raise LookupError("the deployment's code, model or environment is not in the simulated workspace")
        code_dir = materialize(sim, ws_id, code["properties"]["codeUri"], work / "code")
        # As on Azure: AZUREML_MODEL_DIR holds the registered folder by its name (a file: directly)
        model_uri = model["properties"]["modelUri"]
        model_dir = work / "model"
        folder = model_uri.endswith("/") or not Path(model_uri.split("?")[0]).suffix
        materialize(sim, ws_id, model_uri, model_dir / Path(model_uri.rstrip("/")).name if folder else model_dir)
        conda = env["properties"].get("condaFile")
        python = build_environment(conda=conda) if conda else build_environment(requirements="")
        return Path(python), code_dir, model_dir, code_cfg.get("scoringScript") or "score.py"

    def scorer(self, dep: dict[str, Any]) -> Any:
        from targets.local.scorer import Scorer

        key = arm.key_of(dep["id"])
        held = self.scorers.get(key)
        if held and held[0] == dep["etag"]:
            return held[1]
        if held:
            held[1].stop()
        python, code_dir, model_dir, entry = self.prepare(dep)
        env = {k: str(v) for k, v in (dep["properties"].get("environmentVariables") or {}).items()}
        s = Scorer(python, code_dir, entry, model_dir, env=env).start()
        self.scorers[key] = (dep["etag"], s)
        return s

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
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None

    def handle(self, req: Request) -> Response | None:
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
        if self.runtime is None:
            self.runtime = Runtime(self.sim)
        try:
            status, body, headers = self.runtime.scorer(dep).score(req.body, {"Content-Type": req.header("content-type") or "application/json"})
        except Exception as e:  # the user's init() failing is the deployment failing: say so like Azure does
            self.sim.state["logs"].setdefault(arm.key_of(dep["id"]), []).append(str(e))
            detail = " ".join([line.strip() for line in str(e).splitlines() if line.strip()][:3])
            return _msg(502, f"The scoring container could not start: {detail} (see the deployment's logs)")
        out = {"azureml-model-deployment": dep["name"], "x-ms-request-id": self.sim.new_id(),
               "Content-Type": headers.get("content-type", "application/json")}
        return Response(status, body, out)

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
        if scoring.runtime is None:
            scoring.runtime = Runtime(sim)
        python, code_dir, model_dir, entry = scoring.runtime.prepare(dep)
        from targets.local.scorer import Scorer

        with tempfile.TemporaryDirectory() as tmp:
            inp = materialize(sim, workspace_of(job["id"]), uri, Path(tmp) / "in")
            files = sorted(p for p in inp.rglob("*") if p.is_file())
            rows = Scorer(python, code_dir, entry, model_dir).run_batch(files)
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
