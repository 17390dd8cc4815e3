"""App Service (Linux web apps) beyond what :mod:`.web` does for every site: regions offering a
tier (``geoRegions``), the site configuration (``config/web``), no slots on Free and Basic plans,
creates of plans, sites and slots answered 202 + Location as Microsoft.Web does, and apps that
really run on ``https://<app>[-<slot>].azurewebsites.net``.

What runs is the site configuration's: ``DOCKER|<image>`` — the image pulled from the simulated
registry with the app's user-assigned identity (``acrUserManagedIdentityID``, its client id), which
must hold AcrPull on the registry (a role assignment: :mod:`.authorization`), and run with the app settings as its environment, as
:mod:`.aci` runs a container — or ``PYTHON|<version>`` with a startup command, running the last
zip deployed through Kudu (run from package).  Only deployctl's runtime command starts
(``python -m deployctl_runtime.container``); any other command exits.  The platform pings
``WEBSITES_PORT`` (containers: 80 by default) while the app listens on ``PORT``: when they differ
the start fails as App Service reports it.  A failed start answers 503 with the reason (Azure's
page is generic and the reason is in the container log).  Scorers are the Scoring runtime's
(warm across CLI runs, keyed by what the site serves).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Deferred, Request, Response, arm_error, json_response
from orchestrator.azure.simulator.providers.authorization import has_role

GEO = re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.Web/geoRegions$", re.IGNORECASE)
USAGES = re.compile(r"^/subscriptions/([^/]+)/providers/Microsoft\.Web/locations/([^/]+)/usages$", re.IGNORECASE)
SITE_CONFIG = re.compile(r"(/providers/Microsoft\.Web/sites/[^/]+(?:/slots/[^/]+)?)/config/web$", re.IGNORECASE)
FARM = re.compile(r"/providers/Microsoft\.Web/serverfarms/[^/]+$", re.IGNORECASE)
SLOT_PUT = re.compile(r"/providers/Microsoft\.Web/sites/([^/]+)/slots/([^/]+)$", re.IGNORECASE)
REGIONS = ("westeurope", "northeurope", "eastus", "eastus2", "westus2", "uksouth", "swedencentral")
NO_SLOTS = ("free", "shared", "basic")
WWWROOT = "/home/site/wwwroot"
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
KEY_ENV = "DEPLOYCTL_SCORING_KEY"


# vCPUs per instance of the plan SKUs (what the regional cores quota counts); consumption plans hold none
SKU_CORES = {"B1": 1, "B2": 2, "B3": 4, "S1": 1, "S2": 2, "S3": 4, "P0v3": 1, "P1v3": 2, "P2v3": 4, "P3v3": 8,
             "P1v2": 1, "P2v2": 2, "P3v2": 4, "EP1": 1, "EP2": 2, "EP3": 4}
DEFAULT_CORE_LIMIT = 250  # the 2025-05-01 spec's GetUsagesInLocation example limit


def settings(sim: Any) -> dict[str, Any]:
    """Knobs tests turn: ``unavailable`` {region: [tier, ...]} (tiers a region does not offer),
    ``unhealthy`` [host label, ...] (hosts whose instances answer 503 whatever they run: an outage
    of production alone, say a dependency only it reaches), ``core_limit`` (the regional App
    Service cores quota of every subscription, default 250)."""
    return sim.state.setdefault("appservice", {"unavailable": {}, "unhealthy": []})


def cores_in_use(sim: Any, subscription: str, location: str) -> int:
    """vCPUs of the subscription's plans in ``location`` (instances x the SKU's cores)."""
    total = 0
    for r in sim.state["resources"].values():
        if str(r.get("type", "")).lower() == "microsoft.web/serverfarms" \
                and f"/subscriptions/{subscription.lower()}/" in str(r.get("id", "")).lower() \
                and str(r.get("location", "")).replace(" ", "").lower() == location.replace(" ", "").lower():
            sku = r.get("sku") or {}
            total += SKU_CORES.get(str(sku.get("name")), 0) * int(sku.get("capacity") or 1)
    return total


def _plan_tier(sim: Any, site: dict[str, Any] | None) -> str:
    plan = sim.get(str(((site or {}).get("properties") or {}).get("serverFarmId") or ""))
    return str(((plan or {}).get("sku") or {}).get("tier") or "")


def handle_arm(sim: Any, req: Request) -> Response | None:
    """The Microsoft.Web management calls App Service needs beyond sites and settings; None: not ours."""
    if GEO.match(req.path) and req.method == "GET":
        tier = req.query.get("sku", "")
        off = settings(sim)["unavailable"]
        return arm.list_response([{"id": f"{req.path}/{r}", "name": r, "type": "Microsoft.Web/geoRegions",
                                   "properties": {"displayName": r}} for r in REGIONS if tier not in off.get(r, [])])
    if (m := USAGES.match(req.path)) and req.method == "GET":
        # GetUsagesInLocation_list (2025-05-01): one row, the subscription's cores in the region
        sub, loc = m.group(1), m.group(2)
        return json_response(200, {"value": [{
            "name": {"value": f"Cores usage in {loc}", "localizedValue": f"Cores usage in {loc}"},
            "currentValue": cores_in_use(sim, sub, loc), "limit": int(settings(sim).get("core_limit", DEFAULT_CORE_LIMIT)),
            "unit": "Core Count"}], "nextLink": None})
    if (m := FARM.search(req.path)) and req.method == "PUT" and sim.get(req.path) is None:
        body = req.json()
        if not isinstance(body, dict):
            return arm_error(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.")
        new = sim.put_resource(req.path, {**body, "properties": dict(body.get("properties") or {})},
                               location=body.get("location"))
        return accepted(sim, req, req.path, new, "AppServicePlans_CreateOrUpdate")
    if m := SITE_CONFIG.search(req.path):
        site = sim.get(req.path[: m.end(1)])
        if site is None:
            return arm.not_found(req.path)
        conf = site.setdefault("properties", {}).setdefault("siteConfig", {})
        if req.method in ("PUT", "PATCH"):
            new = dict((req.json() or {}).get("properties") or {})
            if req.method == "PUT":
                conf.clear()
            conf.update(new)
        elif req.method != "GET":
            return None
        return json_response(200, {"id": req.path, "name": "web", "type": "Microsoft.Web/sites/config",
                                   "location": site.get("location"), "properties": conf})
    if (m := SLOT_PUT.search(req.path)) and req.method == "PUT":
        parent = sim.get(req.path[: m.start(2) - len("/slots/")])
        tier = _plan_tier(sim, parent)
        if tier.lower() in NO_SLOTS:
            return arm_error(409, "Conflict", f"Cannot create more than 0 deployment slot(s) for app "
                             f"'{m.group(1)}': the {tier} tier does not support deployment slots. Scale the plan "
                             "to Standard or Premium.")
    return None


def accepted(sim: Any, req: Request, path: str, res: dict[str, Any], operation: str) -> Response:
    """A create Microsoft.Web accepts: 202 with a Location to poll; the resource is there at once
    (provisioning), and the operation's end reports it."""
    res.setdefault("properties", {})["provisioningState"] = "InProgress"
    op = arm.start_operation(sim, path, "create", kind="default", operation=operation,
                             location=str(res.get("location") or sim.default_location).replace(" ", "").lower(),
                             namespace="Microsoft.Web")
    return arm.lro_response(sim, op, 202, None, style="location", api_version=req.query.get("api-version", ""))


def swap_config(site: dict[str, Any], slot: dict[str, Any]) -> None:
    """A swap exchanges what runs: the site configuration moves with the content."""
    a, b = site.setdefault("properties", {}), slot.setdefault("properties", {})
    a["siteConfig"], b["siteConfig"] = b.get("siteConfig") or {}, a.get("siteConfig") or {}


def _pull_problem(sim: Any, site: dict[str, Any], image: str) -> str | None:
    from orchestrator.azure.simulator.providers.aci import image_problem

    why = image_problem(sim, image)
    if why or not image.split("/", 1)[0].lower().endswith(".azurecr.io"):  # a public registry: no identity needed
        return why
    conf = (site.get("properties") or {}).get("siteConfig") or {}
    client_id = str(conf.get("acrUserManagedIdentityID") or "")
    if not conf.get("acrUseManagedIdentityCreds") or not client_id:
        return "no managed identity to pull with (acrUseManagedIdentityCreds), and ACR refuses anonymous pulls"
    # acrUserManagedIdentityID is the identity's client id: one of the identities assigned to the app
    assigned = [k for k in ((site.get("identity") or {}).get("userAssignedIdentities") or {})
                if str(((sim.get(k) or {}).get("properties") or {}).get("clientId") or "").lower() == client_id.lower()]
    if not assigned:
        return f"no identity with client id {client_id} is assigned to the app"
    host = image.split("/", 1)[0].lower()
    registry = next((r for r in sim.state["resources"].values()
                     if str((r.get("properties") or {}).get("loginServer") or "").lower() == host), None)
    principal = str(((sim.get(assigned[0]) or {}).get("properties") or {}).get("principalId") or "")
    if registry is None or not has_role(sim, principal, str(registry["id"])):
        return f"the identity {assigned[0]} has no AcrPull role on {host} (unauthorized)"
    return None


def _what_runs(sim: Any, site: dict[str, Any], label: str) -> dict[str, Any]:
    """What the site serves: {"error"} or {"digest", "prepare", "key"}."""
    from orchestrator.azure.simulator.providers.web import current_package

    conf = (site.get("properties") or {}).get("siteConfig") or {}
    env = dict(site.get("_appsettings") or {})
    key = env.pop(KEY_ENV, None)
    fx = str(conf.get("linuxFxVersion") or "")
    if fx.upper().startswith("DOCKER|"):
        image = fx.split("|", 1)[1]
        pulled = settings(sim).setdefault("pulled", [])  # images already on the workers: running ones stay
        why = None if image in pulled else _pull_problem(sim, site, image)
        if why:
            return {"error": f"Container {label} failed to start: image pull failed ({why})"}
        if image not in pulled:
            pulled.append(image)
        from orchestrator.azure.simulator.providers.aci import image_config, prepare_image

        img_env = dict(e.split("=", 1) for e in ((image_config(sim, image) or {}).get("config") or {}).get("Env") or []
                       if "=" in e)
        listen, ping = env.get("PORT") or img_env.get("PORT", "5001"), env.get("WEBSITES_PORT", "80")
        digest = hashlib.sha256(json.dumps({"image": image, "env": env}, sort_keys=True).encode()).hexdigest()[:32]

        def prepare(workdir: Path) -> Any:
            return prepare_image(sim, image, env, workdir)
    else:
        dep = current_package(sim, label)
        if dep is None:
            return {"error": f"Container {label} has no content: deploy a package"}
        cmd = str(conf.get("appCommandLine") or "")
        if "deployctl_runtime.container" not in cmd:
            return {"error": f"Container {label} failed to start: the startup command exited with code 127 "
                             f"({cmd or '(none)'!r}: the app never listened)"}
        listen, ping = env.get("PORT", "8000"), env.get("WEBSITES_PORT", env.get("PORT", "8000"))
        python = fx.split("|", 1)[1] if "|" in fx else "3.11"
        digest = hashlib.sha256(json.dumps({"zip": dep["id"], "env": env}, sort_keys=True).encode()).hexdigest()[:32]
        zip_b64 = dep["zip"]

        def prepare(workdir: Path) -> Any:
            from targets.local.envs import build_environment

            root = workdir / "wwwroot"
            if not root.exists():
                zipfile.ZipFile(io.BytesIO(base64.b64decode(zip_b64))).extractall(root)
            run_env = {k: v.replace(WWWROOT, str(root)) for k, v in env.items() if k != "PORT"}
            return (Path(build_environment(requirements="", python=python)),
                    Path(run_env.get("DEPLOYCTL_CODE_DIR", str(root / "code"))), run_env.get("DEPLOYCTL_ENTRY", "score.py"),
                    Path(run_env.pop("AZUREML_MODEL_DIR", str(root / "model"))), run_env)
    if listen != ping:
        return {"error": f"Container {label} didn't respond to HTTP pings on port: {ping}, failing site start "
                         f"(it listens on {listen})"}
    return {"digest": digest, "prepare": prepare, "key": key}


def docker_logs(sim: Any, req: Request, site: dict[str, Any], label: str) -> Response:
    """Kudu's ``/api/logs/docker`` (the current container log's descriptor, ``href`` to read it) and
    ``/api/logs/docker/current`` (the platform's lines for the site, then the app's own log)."""
    if req.path.lower().rstrip("/") == "/api/logs/docker":
        return json_response(200, [{"machineName": "sim0", "path": f"/home/LogFiles/{label}_docker.log",
                                    "href": f"https://{req.host}/api/logs/docker/current"}])
    from orchestrator.azure.simulator.providers.aci import _runtime

    with sim._lock:
        lines = list(sim.state["logs"].get(site["id"].lower(), []))
        run = _what_runs(sim, site, label)
    app = ""
    if run.get("digest"):
        try:
            app = _runtime(sim).log_of(arm.key_of(site["id"]), run["digest"])
        except (LookupError, OSError):
            app = ""
    return Response(200, ("".join(f"{line}\n" for line in lines) + app).encode(), dict(TEXT))


def served_digests(sim: Any) -> set[str]:
    """What every web app of the cloud serves (the scorers to keep warm)."""
    out = set()
    for r in list(sim.state["resources"].values()):
        if r.get("type", "").lower() in ("microsoft.web/sites", "microsoft.web/sites/slots") \
                and "functionapp" not in str(r.get("kind", "")).lower():
            label = str((r.get("properties") or {}).get("defaultHostName", "")).split(".")[0]
            try:
                d = _what_runs(sim, r, label).get("digest")
            except (LookupError, KeyError, ValueError):
                d = None
            if d:
                out.add(d)
    return out


def serve(sim: Any, req: Request, site: dict[str, Any], label: str) -> Response | Deferred:
    """A request to an App Service app (or slot) host."""
    from orchestrator.azure.simulator.providers.aci import _runtime, runtime_request

    with sim._lock:
        if label in settings(sim).get("unhealthy", []):
            return Response(503, f":( Application Error. The instances of {label} are unhealthy.".encode(), dict(TEXT))
        run = _what_runs(sim, site, label)
        if "error" in run:
            sim.state["logs"].setdefault(site["id"].lower(), []).append(run["error"])
    if "error" in run:
        return Response(503, f":( Application Error. {run['error']}".encode(), dict(TEXT))
    health = ((site.get("properties") or {}).get("siteConfig") or {}).get("healthCheckPath") or "/"
    key, resource = run["key"], arm.key_of(site["id"])

    def scorer() -> Any:
        return _runtime(sim).serve(resource, run["digest"], run["prepare"])

    def failed(e: Exception) -> Response:
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:600]
        return Response(503, f":( Application Error. Container {label} exited while starting: {detail}".encode(),
                        dict(TEXT))

    return runtime_request(req, key, scorer, failed, health_paths=("/", health))
