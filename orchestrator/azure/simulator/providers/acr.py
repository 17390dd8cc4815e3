"""Azure Container Registry: ``listCredentials`` and ``importImage`` (a long-running operation)
on the management plane, and each registry's OCI distribution endpoints on
``<name>.azurecr.io`` with ACR's token exchange.

Data plane, as ACR answers it: ``GET /v2/`` and any unauthenticated call get 401 with
``WWW-Authenticate: Bearer realm="https://<host>/oauth2/token",service="<host>",scope=...``;
``POST /oauth2/exchange`` trades an Entra ID token for a refresh token, ``/oauth2/token`` a
refresh token (or admin user and password, Basic) for an access token.  Manifests by tag or
digest (GET, HEAD, PUT, DELETE), blobs (HEAD, GET), monolithic uploads (POST, then PUT with
``?digest=``) and cross-repository mounts.  Blobs live in the simulator's state (base64): keep
them small in tests.  ``importImage`` copies a manifest and its blobs from another simulated
registry (any subscription), by tag or digest, without the client moving a byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from typing import Any
from urllib.parse import parse_qs

from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Request, Response, arm_error, json_response
from orchestrator.azure.simulator.providers.containers import REGISTRY, ContainerRegistry

HOST = re.compile(r"^([a-z0-9]+)\.azurecr\.io$")
MANIFEST = re.compile(r"^/v2/(.+)/manifests/([^/]+)$")
BLOB = re.compile(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$")
UPLOADS = re.compile(r"^/v2/(.+)/blobs/uploads$")
UPLOAD = re.compile(r"^/v2/(.+)/blobs/uploads/([0-9a-f]+)$")
TAGS = re.compile(r"^/v2/(.+)/tags/list$")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _store(sim: Any, login_server: str) -> dict[str, Any]:
    return sim.state.setdefault("acr", {}).setdefault(login_server, {"repos": {}, "blobs": {}, "tokens": {}})


class AcrManagement(ContainerRegistry):
    """The Microsoft.ContainerRegistry namespace: registries and builds (inherited) plus
    ``listCredentials`` and ``importImage``."""

    def operation(self, req: Request) -> str | None:
        tail = req.path.lower().rsplit("/", 1)[-1]
        return {"listcredentials": "Registries_ListCredentials", "importimage": "Registries_ImportImage"}.get(
            tail, super().operation(req))

    def handle(self, req: Request, operation: str | None) -> Response | None:
        m = REGISTRY.search(req.path)
        if not m or req.method != "POST" or req.path[m.end():].lower() not in ("/listcredentials", "/importimage"):
            return super().handle(req, operation)
        reg_path = req.path[: m.end()]
        reg = self.sim.get(reg_path)
        if reg is None:
            return arm.not_found(reg_path)
        login = reg["properties"]["loginServer"]
        if req.path.lower().endswith("/listcredentials"):
            if not reg["properties"].get("adminUserEnabled"):
                return arm_error(400, "AdminUserDisabled", f"Admin user is disabled for registry {m.group(1)}.")
            pw = _store(self.sim, login).setdefault("admin_passwords", [secrets.token_urlsafe(24), secrets.token_urlsafe(24)])
            return json_response(200, {"username": m.group(1), "passwords": [
                {"name": "password", "value": pw[0]}, {"name": "password2", "value": pw[1]}]})
        body = req.json() or {}
        error = self._import(login, body)
        op = arm.start_operation(self.sim, reg_path, "importImage", kind="default", operation="Registries_ImportImage",
                                 location=reg.get("location") or self.sim.default_location,
                                 namespace="Microsoft.ContainerRegistry", error=error)
        return arm.lro_response(self.sim, op, 202, None, style="location")

    def _import(self, login: str, body: dict[str, Any]) -> dict[str, str] | None:
        """Copy the source image now (the operation reports it when due); an error dict on failure."""
        source = body.get("source") or {}
        src_login = source.get("registryUri")
        if source.get("resourceId"):
            src = self.sim.get(source["resourceId"])
            if src is None:
                return {"code": "InvalidParameters", "message": f"Source registry {source['resourceId']} not found."}
            src_login = src["properties"]["loginServer"]
        image = str(source.get("sourceImage") or "")
        repo, _, ref = image.partition("@") if "@" in image else image.partition(":")
        src_store = self.sim.state.get("acr", {}).get(src_login or "")
        digest = ref if ref.startswith("sha256:") else ((src_store or {}).get("repos", {}).get(repo, {}).get("tags", {}).get(ref or "latest"))
        manifest = (src_store or {}).get("repos", {}).get(repo, {}).get("manifests", {}).get(digest or "")
        if manifest is None:
            return {"code": "InvalidParameters", "message": f"Source image {src_login}/{image} not found."}
        dst = _store(self.sim, login)
        doc = json.loads(base64.b64decode(manifest["data"]))
        for d in [doc.get("config", {}), *doc.get("layers", [])]:
            if d.get("digest") in src_store["blobs"]:
                dst["blobs"][d["digest"]] = src_store["blobs"][d["digest"]]
        for target in body.get("targetTags") or [image]:
            t_repo, _, t_tag = target.partition(":")
            r = dst["repos"].setdefault(t_repo, {"manifests": {}, "tags": {}})
            r["manifests"][digest] = manifest
            if t_tag:
                r["tags"][t_tag] = digest
        for t_repo in body.get("untaggedTargetRepositories") or []:
            dst["repos"].setdefault(t_repo, {"manifests": {}, "tags": {}})["manifests"][digest] = manifest
        return None


class AcrDataPlane:
    """``<registry>.azurecr.io``: the OCI distribution API with ACR's token exchange."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def owns(self, req: Request) -> bool:
        return bool(HOST.match(req.host))

    def operation(self, req: Request) -> str:
        for name, rx in (("Manifests", MANIFEST), ("Blobs", BLOB), ("Uploads", UPLOADS), ("Upload", UPLOAD), ("Tags", TAGS)):
            if rx.match(req.path):
                return f"ACR_{name}_{req.method.title()}"
        return f"ACR_{req.path.strip('/').replace('/', '_')}"

    def _registry(self, host: str) -> dict[str, Any] | None:
        for res in self.sim.state["resources"].values():
            if str(res.get("properties", {}).get("loginServer", "")).lower() == host:
                return dict(res)
        return None

    def handle(self, req: Request) -> Response | None:
        reg = self._registry(req.host)
        if reg is None:  # no such registry: DNS would not resolve it
            return Response(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"registry not found"}]}')
        store = _store(self.sim, req.host)
        if req.path == "/oauth2/exchange" and req.method == "POST":
            form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
            if form.get("grant_type") != "access_token" or not form.get("access_token"):
                return json_response(400, {"error": "invalid_request"})
            refresh = "r-" + secrets.token_hex(16)
            store["tokens"][refresh] = "refresh"
            return json_response(200, {"refresh_token": refresh})
        if req.path == "/oauth2/token":
            return self._token(req, reg, store)
        auth = req.header("authorization") or ""
        if not (auth.startswith("Bearer ") and store["tokens"].get(auth[7:]) == "access"):
            scope = self._scope(req)
            return Response(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                            {"WWW-Authenticate": f'Bearer realm="https://{req.host}/oauth2/token",service="{req.host}"'
                                                 + (f',scope="{scope}"' if scope else ""),
                             "Content-Type": "application/json"})
        if req.path == "/v2":
            return Response(200, b"{}")
        if m := MANIFEST.match(req.path):
            return self._manifest(req, store, m.group(1), m.group(2))
        if m := BLOB.match(req.path):
            blob = store["blobs"].get(m.group(2))
            if blob is None:
                return Response(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
            data = base64.b64decode(blob)
            return Response(200, b"" if req.method == "HEAD" else data,
                            {"Docker-Content-Digest": m.group(2), "Content-Length": str(len(data))})
        if (m := UPLOADS.match(req.path)) and req.method == "POST":
            if req.query.get("mount") in store["blobs"]:
                return Response(201, b"", {"Location": f"/v2/{m.group(1)}/blobs/{req.query['mount']}"})
            upload = secrets.token_hex(8)
            return Response(202, b"", {"Location": f"/v2/{m.group(1)}/blobs/uploads/{upload}?_state=x", "Range": "0-0"})
        if (m := UPLOAD.match(req.path)) and req.method == "PUT":
            digest = req.query.get("digest", "")
            if _digest(req.body) != digest:
                return Response(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
            store["blobs"][digest] = base64.b64encode(req.body).decode()
            return Response(201, b"", {"Docker-Content-Digest": digest, "Location": f"/v2/{m.group(1)}/blobs/{digest}"})
        if (m := TAGS.match(req.path)) and req.method == "GET":
            repo = store["repos"].get(m.group(1))
            return json_response(200 if repo else 404, {"name": m.group(1), "tags": sorted(repo["tags"]) if repo else []})
        return None

    def _scope(self, req: Request) -> str:
        m = re.match(r"^/v2/(.+?)/(?:manifests|blobs|tags)/", req.path)
        if not m:
            return ""
        return f"repository:{m.group(1)}:{'pull' if req.method in ('GET', 'HEAD') else 'pull,push'}"

    def _token(self, req: Request, reg: dict[str, Any], store: dict[str, Any]) -> Response:
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()} if req.method == "POST" else dict(req.query)
        ok = False
        if form.get("grant_type") == "refresh_token":
            ok = store["tokens"].get(form.get("refresh_token", "")) == "refresh"
        else:
            auth = req.header("authorization") or ""
            if auth.startswith("Basic ") and reg["properties"].get("adminUserEnabled"):
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                ok = user.lower() == reg["name"].lower() and pw in store.get("admin_passwords", [])
        if not ok:
            return json_response(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]})
        token = "a-" + secrets.token_hex(16)
        store["tokens"][token] = "access"
        return json_response(200, {"access_token": token})

    def _manifest(self, req: Request, store: dict[str, Any], repo_name: str, ref: str) -> Response:
        repo = store["repos"].setdefault(repo_name, {"manifests": {}, "tags": {}}) if req.method == "PUT" else store["repos"].get(repo_name)
        if req.method == "PUT":
            doc = json.loads(req.body)
            missing = [d["digest"] for d in [doc.get("config", {}), *doc.get("layers", [])] if d.get("digest") not in store["blobs"]]
            if missing:
                return Response(400, json.dumps({"errors": [{"code": "MANIFEST_BLOB_UNKNOWN", "message": missing[0]}]}).encode())
            digest = _digest(req.body)
            repo["manifests"][digest] = {"data": base64.b64encode(req.body).decode(),
                                         "mediaType": req.header("content-type") or doc.get("mediaType")}
            if not ref.startswith("sha256:"):
                repo["tags"][ref] = digest
            return Response(201, b"", {"Docker-Content-Digest": digest, "Location": f"/v2/{repo_name}/manifests/{digest}"})
        digest = ref if ref.startswith("sha256:") else (repo or {}).get("tags", {}).get(ref)
        entry = (repo or {}).get("manifests", {}).get(digest or "")
        if entry is None:
            return Response(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        if req.method == "DELETE":
            del repo["manifests"][digest]
            return Response(202)
        data = base64.b64decode(entry["data"])
        return Response(200, b"" if req.method == "HEAD" else data,
                        {"Docker-Content-Digest": digest, "Content-Type": entry["mediaType"], "Content-Length": str(len(data))})
