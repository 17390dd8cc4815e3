"""Microsoft.Web (server farms, sites, app settings) and the SCM (Kudu) host's zip deploy.

Sites and plans use spec-driven CRUD (azure-mgmt-web's initial PUT accepts only 200/202, so
writes answer 200 synchronously).  App settings: PUT ``config/appsettings`` and POST
``config/appsettings/list``.  Kudu: POST ``/api/zipdeploy`` (or ``/api/publish``) on
``<site>.scm.azurewebsites.net`` stores the archive's file list; a second deploy while one is in
progress gets 409 as Kudu answers; ``/api/deployments/latest`` reports the last one.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from orchestrator.azure.simulator.messages import Request, Response, json_response

SITE = re.compile(r"/providers/Microsoft\.Web/sites/([^/]+)", re.IGNORECASE)
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
SCM_HOST = re.compile(r"^([a-z0-9-]+)\.scm\.azurewebsites\.net$")


class WebApps:
    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def handle(self, req: Request, operation: str | None) -> Response | None:
        m = SITE.search(req.path)
        if not m:
            return None
        site_path = req.path[: m.end()]
        tail = req.path[m.end():].lower()
        site = self.sim.get(site_path)
        if tail == "" and req.method == "PUT":
            body = req.json() or {}
            props = dict(body.get("properties") or {})
            name = m.group(1)
            props.update({"defaultHostName": f"{name}.azurewebsites.net", "state": "Running",
                          "enabledHostNames": [f"{name}.azurewebsites.net", f"{name}.scm.azurewebsites.net"]})
            new = self.sim.put_resource(site_path, {**body, "properties": props}, location=body.get("location"))
            return json_response(200, new)
        if tail in ("/config/appsettings", "/config/appsettings/list"):
            if site is None:
                return None
            if req.method == "PUT":
                site["_appsettings"] = dict((req.json() or {}).get("properties") or {})
            elif req.method != "POST":
                return None
            return json_response(200, {"id": f"{site_path}/config/appsettings", "name": "appsettings",
                                       "type": "Microsoft.Web/sites/config", "location": site.get("location"),
                                       "properties": site.get("_appsettings", {})})
        if tail == "" and req.method == "GET" and site is not None:
            return json_response(200, {k: v for k, v in site.items() if not k.startswith("_")})
        return None


class Kudu:
    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def owns(self, req: Request) -> bool:
        return bool(SCM_HOST.match(req.host))

    def operation(self, req: Request) -> str:
        return "Kudu_ZipDeploy" if req.method == "POST" else "Kudu_Get"

    def handle(self, req: Request) -> Response | None:
        name = SCM_HOST.match(req.host).group(1)  # type: ignore[union-attr]
        site = next((r for r in self.sim.state["resources"].values()
                     if r.get("type", "").lower() == "microsoft.web/sites" and r["name"].lower() == name), None)
        if site is None:
            return json_response(404, {"Message": f"Site {name} not found."})
        state = self.sim.state["kudu"].setdefault(name, {"deployments": []})
        if req.method == "POST" and req.path.lower() in ("/api/zipdeploy", "/api/publish"):
            last = state["deployments"][-1] if state["deployments"] else None
            if last and last["end"] > self.sim.clock.now():
                return Response(409, b"There is a deployment currently in progress. Please try again when it completes.",
                                TEXT)
            try:
                files = sorted(zipfile.ZipFile(io.BytesIO(req.body)).namelist())
            except zipfile.BadZipFile:
                return Response(400, b"The uploaded file is not a zip archive.", TEXT)
            dep = {"id": self.sim.new_id(), "status": 4, "complete": True, "files": files,
                   "start": self.sim.clock.now(), "end": self.sim.clock.now() + self.sim.latency.lro_seconds("default")}
            state["deployments"].append(dep)
            is_async = req.query.get("isasync", "").lower() == "true"
            headers = {"Location": f"https://{req.host}/api/deployments/latest"} if is_async else {}
            return Response(202 if is_async else 200, b"", headers)
        if req.method == "GET" and req.path.lower() in ("/api/deployments/latest", "/api/deployments"):
            if not state["deployments"]:
                return json_response(404, {"Message": "No deployment found."})
            last = state["deployments"][-1]
            done = last["end"] <= self.sim.clock.now()
            out = {"id": last["id"], "status": 4 if done else 1, "complete": done, "status_text": "" if done else "Building",
                   "files": last["files"]}
            return json_response(200, out if req.path.lower().endswith("latest") else [out])
        return None
