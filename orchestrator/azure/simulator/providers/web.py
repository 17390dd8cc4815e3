"""Microsoft.Web (server farms, sites, app settings, function keys), the SCM (Kudu) host's
zip and OneDeploy deploys, and function apps that really run.

Sites and plans use spec-driven CRUD (azure-mgmt-web's initial PUT accepts only 200/202, so
writes answer 200 synchronously).  App settings: PUT ``config/appsettings`` and POST
``config/appsettings/list``.  Keys: POST ``host/default/listkeys`` and
``functions/{name}/listkeys`` (made on first read, kept with the site).  A Flex Consumption site
(plan SKU FC1) must name its deployment container (``functionAppConfig.deployment.storage``).
Kudu: POST ``/api/zipdeploy`` or ``/api/publish`` (a zip, or OneDeploy's JSON ``{"packageUri"}``
naming a blob of the simulated storage) on ``<site>.scm.azurewebsites.net``; a second deploy while
one is in progress gets 409 as Kudu answers; ``/api/deployments/latest`` and
``/api/deployments/{id}`` report them (status 4 = success, 3 = failed).
:class:`FunctionSites` answers ``https://<site>.azurewebsites.net`` by running the deployed
package with :mod:`targets.web.host` in a process of its own (started on the first request after
each deployment, stopped with the simulator).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
import zipfile
from pathlib import Path
from typing import Any

from orchestrator.azure.simulator.messages import Deferred, Request, Response, json_response

SITE = re.compile(r"/providers/Microsoft\.Web/sites/([^/]+)(?:/slots/([^/]+))?", re.IGNORECASE)
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
SCM_HOST = re.compile(r"^([a-z0-9-]+)\.scm\.azurewebsites\.net$")
APP_HOST = re.compile(r"^([a-z0-9-]+)\.azurewebsites\.net$")
BLOB_URL = re.compile(r"^https://([a-z0-9]+)\.blob\.core\.windows\.net/([^/]+)/([^?]+)")


def find_site(sim: Any, label: str) -> dict[str, Any] | None:
    """The site or slot whose host name is ``<label>.azurewebsites.net`` (a slot's is ``<app>-<slot>``)."""
    return next((r for r in sim.state["resources"].values()
                 if r.get("type", "").lower() in ("microsoft.web/sites", "microsoft.web/sites/slots")
                 and str((r.get("properties") or {}).get("defaultHostName", "")).split(".")[0].lower() == label), None)


def site_keys(sim: Any, site: dict[str, Any]) -> dict[str, str]:
    """The host's master key and default function key (made once per site, as the host does)."""
    keys = site.setdefault("_keys", {})
    keys.setdefault("master", sim.secret(40))
    keys.setdefault("default", sim.secret(40))
    keys.setdefault("durabletask_extension", sim.secret(40))  # the Durable extension's system key
    return dict(keys)


def plan_sku(sim: Any, site: dict[str, Any]) -> str:
    plan = sim.get(str((site.get("properties") or {}).get("serverFarmId") or ""))
    return str(((plan or {}).get("sku") or {}).get("name") or "")


class WebApps:
    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def handle(self, req: Request, operation: str | None) -> Response | None:
        from orchestrator.azure.simulator.providers import appservice

        if (answer := appservice.handle_arm(self.sim, req)) is not None:
            return answer
        m = SITE.search(req.path)
        if not m:
            return None
        site_path = req.path[: m.end()]
        tail = req.path[m.end():].lower()
        site = self.sim.get(site_path)
        slot = m.group(2)
        if tail == "/slotsswap" and req.method == "POST" and site is not None and not slot:
            return self.swap(site, str((req.json() or {}).get("targetSlot") or ""))
        if tail == "" and req.method == "PUT":
            body = req.json() or {}
            props = dict(body.get("properties") or {})
            name = f"{m.group(1)}-{slot}".lower() if slot else m.group(1)
            plan = self.sim.get(str(props.get("serverFarmId") or ""))
            sku = str(((plan or {}).get("sku") or {}).get("name") or "")
            if sku.upper() == "FC1" and slot:
                return json_response(400, {"error": {"code": "BadRequest", "message":
                                     "Flex Consumption apps do not support deployment slots."}})
            if sku.upper() == "FC1":
                storage = ((props.get("functionAppConfig") or {}).get("deployment") or {}).get("storage") or {}
                if not storage.get("value"):
                    return json_response(400, {"error": {"code": "BadRequest", "message":
                                         "Flex Consumption apps require functionAppConfig.deployment.storage."}})
            elif props.get("functionAppConfig"):
                return json_response(400, {"error": {"code": "BadRequest", "message":
                                     "functionAppConfig is only valid for apps on a Flex Consumption plan."}})
            props.update({"defaultHostName": f"{name}.azurewebsites.net", "state": "Running",
                          "enabledHostNames": [f"{name}.azurewebsites.net", f"{name}.scm.azurewebsites.net"]})
            new = self.sim.put_resource(site_path, {**body, "properties": props}, location=body.get("location"))
            if site is None:  # a create: 202 and an operation to follow, as Microsoft.Web answers
                from orchestrator.azure.simulator.providers.appservice import accepted

                return accepted(self.sim, req, site_path, new, "WebApps_CreateOrUpdate" + ("Slot" if slot else ""))
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
        if tail == "/config/slotconfignames" and site is not None and not slot and req.method in ("GET", "PUT"):
            if req.method == "PUT":  # the app settings that stay with their slot in a swap
                site["_slotconfignames"] = dict((req.json() or {}).get("properties") or {})
            return json_response(200, {"id": f"{site_path}/config/slotConfigNames", "name": "slotConfigNames",
                                       "type": "Microsoft.Web/sites/config",
                                       "properties": site.get("_slotconfignames", {})})
        if site is not None and req.method == "POST" and (tail == "/host/default/listkeys"
                                                           or re.fullmatch(r"/functions/[^/]+/listkeys", tail)):
            keys = site_keys(self.sim, site)
            if tail == "/host/default/listkeys":
                return json_response(200, {"masterKey": keys["master"], "functionKeys": {"default": keys["default"]},
                                           "systemKeys": {"durabletask_extension": keys["durabletask_extension"]}})
            return json_response(200, {"id": f"{site_path}{req.path[m.end():]}", "name": "functionKeys",
                                       "properties": {"default": keys["default"]}})  # a StringDictionary
        if tail == "" and req.method == "GET" and site is not None:
            return json_response(200, {k: v for k, v in site.items() if not k.startswith("_")})
        return None

    def swap(self, site: dict[str, Any], slot_name: str) -> Response:
        """Swap a slot with production: what each runs (its deployments) and its app settings."""
        slot = self.sim.get(f"{site['id']}/slots/{slot_name}")
        if slot is None:
            return json_response(404, {"error": {"code": "ResourceNotFound", "message": f"Slot {slot_name} not found."}})
        labels = [str(r["properties"]["defaultHostName"]).split(".")[0] for r in (site, slot)]
        kudu = self.sim.state["kudu"]
        a, b = kudu.get(labels[0], {"deployments": []}), kudu.get(labels[1], {"deployments": []})
        kudu[labels[0]], kudu[labels[1]] = b, a
        sites = next(p for p in self.sim.providers if isinstance(p, FunctionSites))
        for label in labels:  # both restart on what they now run (an old host stops consuming queues)
            sites.stop(label)
        # slot-sticky settings (config/slotConfigNames) stay where they are; the others move with the content
        sticky = set((site.get("_slotconfignames") or {}).get("appSettingNames") or [])
        mine, theirs = site.get("_appsettings", {}), slot.get("_appsettings", {})
        site["_appsettings"] = {**{k: v for k, v in theirs.items() if k not in sticky},
                                **{k: v for k, v in mine.items() if k in sticky}}
        slot["_appsettings"] = {**{k: v for k, v in mine.items() if k not in sticky},
                                **{k: v for k, v in theirs.items() if k in sticky}}
        from orchestrator.azure.simulator.providers.appservice import swap_config

        swap_config(site, slot)
        return Response(200)


class Kudu:
    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def owns(self, req: Request) -> bool:
        return bool(SCM_HOST.match(req.host))

    def operation(self, req: Request) -> str:
        return "Kudu_ZipDeploy" if req.method == "POST" else "Kudu_Get"

    def handle(self, req: Request) -> Response | None:
        name = SCM_HOST.match(req.host).group(1)  # type: ignore[union-attr]
        site = find_site(self.sim, name)
        if site is None:
            return json_response(404, {"Message": f"Site {name} not found."})
        if req.method == "GET" and req.path.lower().startswith("/api/logs/docker") and is_function_app(site):
            return function_logs(self.sim, req, site, name)
        if req.method == "GET" and req.path.lower().startswith("/api/logs/docker"):
            from orchestrator.azure.simulator.providers.appservice import docker_logs

            return docker_logs(self.sim, req, site, name)
        state = self.sim.state["kudu"].setdefault(name, {"deployments": []})
        if req.method == "POST" and req.path.lower() in ("/api/zipdeploy", "/api/publish"):
            last = state["deployments"][-1] if state["deployments"] else None
            if last and last["end"] > self.sim.clock.now():
                return Response(409, b"There is a deployment currently in progress. Please try again when it completes.",
                                TEXT)
            data: bytes | None = req.body
            if req.path.lower() == "/api/publish" and req.body[:1] == b"{":  # OneDeploy from a URL
                data = self.package_from_uri((json.loads(req.body) or {}).get("packageUri", ""))
            if data is None:
                return Response(400, b"packageUri does not name a readable blob.", TEXT)
            try:
                files = sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())
            except zipfile.BadZipFile:
                return Response(400, b"The uploaded file is not a zip archive.", TEXT)
            dep = {"id": self.sim.new_id(), "status": 4, "complete": True, "files": files,
                   "zip": base64.b64encode(data).decode(),
                   "start": self.sim.clock.now(), "end": self.sim.clock.now() + self.sim.latency.lro_seconds("default")}
            state["deployments"].append(dep)
            is_async = req.query.get("isasync", "").lower() == "true"
            if req.path.lower() == "/api/publish":  # OneDeploy: always asynchronous, with the id
                return Response(202, dep["id"].encode(), {"Location": f"https://{req.host}/api/deployments/{dep['id']}"})
            headers = {"Location": f"https://{req.host}/api/deployments/latest"} if is_async else {}
            return Response(202 if is_async else 200, b"", headers)
        by_id = re.fullmatch(r"/api/deployments/([0-9a-f-]{36})", req.path.lower())
        if req.method == "GET" and (by_id or req.path.lower() in ("/api/deployments/latest", "/api/deployments")):
            if not state["deployments"]:
                return json_response(404, {"Message": "No deployment found."})
            last = state["deployments"][-1]
            if by_id:
                last = next((d for d in state["deployments"] if d["id"] == by_id.group(1)), None)
                if last is None:
                    return json_response(404, {"Message": f"Deployment {by_id.group(1)} not found."})
            done = last["end"] <= self.sim.clock.now()
            out = {"id": last["id"], "status": 4 if done else 1, "complete": done, "status_text": "" if done else "Building",
                   "files": last["files"]}
            return json_response(200, [out] if req.path.lower() == "/api/deployments" else out)
        return None

    def package_from_uri(self, uri: str) -> bytes | None:
        from orchestrator.azure.simulator.providers import storage

        m = BLOB_URL.match(uri)
        return storage.get_blob(self.sim, m.group(1), m.group(2), m.group(3)) if m else None


def is_function_app(site: dict[str, Any]) -> bool:
    return "functionapp" in str(site.get("kind", "")).lower()


def host_log_dir(sim: Any) -> Path:
    """Where function hosts write their logs: beside a persisted cloud's state file (a later
    ``deployctl logs --simulate`` reads what an earlier run's host wrote), else the providers' temp."""
    if sim.store is not None:
        return sim.store.path.with_name(sim.store.path.stem + "-functions")
    return Path(next(p for p in sim.providers if isinstance(p, FunctionSites)).tmp.name) / "logs"


def function_logs(sim: Any, req: Request, site: dict[str, Any], label: str) -> Response:
    """Kudu's ``/api/logs/docker`` for a function app: the platform's lines for the site, then
    what its hosts wrote (the host's invocation lines, the app's logging and prints)."""
    if req.path.lower().rstrip("/") == "/api/logs/docker":
        return json_response(200, [{"machineName": "sim0", "path": f"/home/LogFiles/{label}_docker.log",
                                    "href": f"https://{req.host}/api/logs/docker/current"}])
    with sim._lock:
        lines = list(sim.state["logs"].get(site["id"].lower(), []))
    log = host_log_dir(sim) / f"{label}.log"
    app = log.read_text(errors="replace") if log.exists() else ""
    return Response(200, ("".join(f"{line}\n" for line in lines) + app).encode(), dict(TEXT))


def current_package(sim: Any, site_name: str) -> dict[str, Any] | None:
    """The site's last successful, finished deployment (what the site runs)."""
    deps = sim.state["kudu"].get(site_name, {}).get("deployments", [])
    return next((d for d in reversed(deps) if d.get("zip") and d["end"] <= sim.clock.now()), None)


class FunctionSites:
    """``https://<site>.azurewebsites.net``: the deployed function app, run for real."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.hosts: dict[str, tuple[str, subprocess.Popen[bytes], int]] = {}
        self.tmp = tempfile.TemporaryDirectory(prefix="deployctl-sim-functions-")
        self.starting = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_hosts, self.hosts, self.tmp)

    def owns(self, req: Request) -> bool:
        return bool(APP_HOST.match(req.host)) and not SCM_HOST.match(req.host)

    def operation(self, req: Request) -> str:
        return "FunctionApp_Invoke"

    def close(self) -> None:
        self._finalizer()

    def stop(self, label: str) -> None:
        held = self.hosts.pop(label, None)
        if held:
            stop_process(held[1])

    def handle(self, req: Request) -> Response | Deferred | None:
        name = APP_HOST.match(req.host).group(1)  # type: ignore[union-attr]
        site = find_site(self.sim, name)
        if site is None:
            return Response(404, f"Web app {name} not found.".encode(), TEXT)
        if not is_function_app(site):  # an App Service app
            from orchestrator.azure.simulator.providers.appservice import serve

            return serve(self.sim, req, site, name)
        dep = current_package(self.sim, name)
        if dep is None:
            return Response(404, b"Function host is not running: no package has been deployed.", TEXT)
        keys = site_keys(self.sim, site)
        settings = {**site.get("_appsettings", {}), "WEBSITE_SITE_NAME": name}
        if "AccountKey=" in settings.get("AzureWebJobsStorage", ""):
            settings["AzureWebJobsStorage"] = self.local_storage(settings["AzureWebJobsStorage"])
        # started and called outside the simulator's lock: the app may call the simulated storage
        return Deferred(lambda: self.forward(req, name, site["id"], dep, keys, settings))

    def forward(self, req: Request, name: str, site_id: str, dep: dict[str, Any], keys: dict[str, str],
                settings: dict[str, str]) -> Response:
        try:
            port = self.host_for(name, site_id, dep, keys, settings)
        except RuntimeError as e:
            return Response(503, f"Function host is not running: {e}".encode(), TEXT)
        url = f"http://127.0.0.1:{port}{req.path}" + (f"?{req.url.split('?', 1)[1]}" if "?" in req.url else "")
        # the app sees its public host name (the Durable status URLs it answers are built from it)
        headers = {**{k: v for k, v in req.headers.items() if k.lower() not in ("host", "content-length")},
                   "Host": req.host, "X-Forwarded-Proto": "https"}
        r = urllib.request.Request(url, data=req.body if req.method != "GET" else None, method=req.method,
                                   headers=headers)
        try:
            with urllib.request.urlopen(r, timeout=120) as resp:
                return Response(resp.status, resp.read(), dict(resp.headers.items()))
        except urllib.error.HTTPError as e:
            return Response(e.code, e.read(), dict(e.headers.items()))

    def local_storage(self, conn: str) -> str:
        """The connection string rewritten to this simulator's 127.0.0.1 endpoint (served on demand),
        so the app's process reaches the simulated queues and blobs (the host rides in the path)."""
        parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
        if self.sim._server is None:
            self.sim.serve()
        base, account = self.sim._server.url, parts.get("AccountName", "")
        return (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={parts.get('AccountKey', '')};"
                f"BlobEndpoint={base}/{account}.blob.core.windows.net;QueueEndpoint={base}/{account}.queue.core.windows.net;")

    def host_for(self, label: str, site_id: str, dep: dict[str, Any], keys: dict[str, str],
                 settings: dict[str, str]) -> int:
        with self.starting:  # one host per site, however many requests arrive at once
            return self._host_for(label, site_id, dep, keys, settings)

    def _host_for(self, label: str, site_id: str, dep: dict[str, Any], keys: dict[str, str],
                  settings: dict[str, str]) -> int:
        held = self.hosts.get(label)
        version = dep["id"] + "/" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        if held and held[0] == version and held[1].poll() is None:
            return held[2]
        if held:
            stop_process(held[1])
        work = Path(self.tmp.name) / dep["id"]
        if not work.exists():
            zipfile.ZipFile(io.BytesIO(base64.b64decode(dep["zip"]))).extractall(work / "pkg")
        (work / "config.json").write_text(json.dumps({"settings": settings, "keys": [keys["default"], keys["master"]],
                                                      "system_keys": {"durabletask_extension":
                                                                      keys["durabletask_extension"]}}))
        ready = work / "ready.json"
        ready.unlink(missing_ok=True)
        log_file = host_log_dir(self.sim) / f"{label}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        start = log_file.stat().st_size if log_file.exists() else 0
        log = open(log_file, "ab")  # noqa: SIM115 - the process holds it
        repo = str(Path(__file__).resolve().parents[4])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p),
               "PYTHONUNBUFFERED": "1"}  # prints reach the log as they happen
        proc = subprocess.Popen([sys.executable, "-m", "targets.web.host", "--package", str(work / "pkg"), "--config",
                                 str(work / "config.json"), "--ready-file", str(ready)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
        log.close()
        deadline = time.monotonic() + 120
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                with open(log_file, "rb") as f:
                    f.seek(start)
                    tail = f.read().decode(errors="replace").strip().splitlines()[-8:]
                raise RuntimeError("the worker did not start: " + " | ".join(tail))
            time.sleep(0.05)
        port = int(json.loads(ready.read_text())["port"])
        self.hosts[label] = (version, proc, port)
        with self.sim._lock:
            self.sim.state["logs"].setdefault(site_id.lower(), []).append(f"host started for deployment {dep['id']}")
        return port


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _stop_hosts(hosts: dict[str, tuple[str, subprocess.Popen[bytes], int]], tmp: tempfile.TemporaryDirectory[str]) -> None:
    for _, proc, _ in hosts.values():
        stop_process(proc)
    hosts.clear()
    tmp.cleanup()
