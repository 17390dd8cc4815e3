"""Azure Container Registry: ``listCredentials``, ``importImage`` (a long-running operation) and
ACR Tasks quick builds (``listBuildSourceUploadUrl``, ``scheduleRun``, runs, ``listLogSasUrl``,
``cancel``) on the management plane, and each registry's OCI distribution endpoints on
``<name>.azurecr.io`` with ACR's token exchange.

Data plane, as ACR answers it: ``GET /v2/`` and any unauthenticated call get 401 with
``WWW-Authenticate: Bearer realm="https://<host>/oauth2/token",service="<host>",scope=...``;
``POST /oauth2/exchange`` trades an Entra ID token for a refresh token, ``/oauth2/token`` a
refresh token (or admin user and password, Basic) for an access token.  Manifests by tag or
digest (GET, HEAD, PUT, DELETE), blobs (HEAD, GET), monolithic uploads (POST, then PUT with
``?digest=``) and cross-repository mounts.  Blob bytes live in content-addressed files beside
the cloud's state file (the state records their sizes), so a real environment layer costs the
JSON nothing.  Repository-scoped tokens (``tokens`` with the built-in ``_repositories_pull``
scope map, ``generateCredentials``) log in like admin credentials do.  ``importImage`` copies a manifest and its blobs from another simulated
registry (any subscription), by tag or digest, without the client moving a byte.

ACR Tasks: the upload URL points at a simulated blob; ``scheduleRun`` reads an uploaded tar.gz
context (a source location that is a URL, or none, is taken on trust) and builds the Dockerfile
as :mod:`~orchestrator.azure.simulator.providers.acr_build` describes (FROM, COPY layers, config;
RUN is not executed).  A failed step fails the run with the reason at the end of its log;
otherwise the run succeeds after its simulated duration, its log lists the steps, and only then
is the image tagged in the registry (a failed build tags nothing).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import tarfile
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from orchestrator.azure.simulator import arm
from orchestrator.azure.simulator.messages import Request, Response, arm_error, json_response
from orchestrator.azure.simulator.providers.acr_build import OCI_MANIFEST, BuildError, build, instructions
from orchestrator.azure.simulator.providers.containers import REGISTRY, ContainerRegistry
from orchestrator.azure.simulator.providers.storage import get_blob, put_blob

HOST = re.compile(r"^([a-z0-9]+)\.azurecr\.io$")
MANIFEST = re.compile(r"^/v2/(.+)/manifests/([^/]+)$")
BLOB = re.compile(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$")
UPLOADS = re.compile(r"^/v2/(.+)/blobs/uploads$")
UPLOAD = re.compile(r"^/v2/(.+)/blobs/uploads/([0-9a-f]+)$")
TAGS = re.compile(r"^/v2/(.+)/tags/list$")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


BUILTIN_SCOPE_MAPS = {
    "_repositories_pull": ["repositories/*/content/read"],
    "_repositories_push": ["repositories/*/content/read", "repositories/*/content/write"],
    "_repositories_admin": ["repositories/*/content/read", "repositories/*/content/write",
                            "repositories/*/content/delete", "repositories/*/metadata/read",
                            "repositories/*/metadata/write"],
}


def _blob_dir(sim: Any) -> Path:
    """Where blob bytes live: content-addressed files beside a persisted cloud's state file (an
    environment layer is tens of MB: never in the JSON state), or a folder of this simulator."""
    d = getattr(sim, "_acr_blob_dir", None)
    if d is None:
        store = getattr(sim, "store", None)
        if store is not None:
            d = Path(store.path).with_name(Path(store.path).stem + "-blobs")
        else:
            sim._acr_blob_tmp = tempfile.TemporaryDirectory(prefix="deployctl-sim-blobs-")
            d = Path(sim._acr_blob_tmp.name)
        sim._acr_blob_dir = d
    return Path(d)


def write_blob(sim: Any, store: dict[str, Any], digest: str, data: bytes) -> None:
    """Keep ``data`` under ``digest`` in a registry's ``store`` (the state records only its size)."""
    path = _blob_dir(sim) / digest.replace(":", "-")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # content-addressed: concurrent writers write the same bytes
    store["blobs"][digest] = len(data)


def read_blob(sim: Any, login_server: str, digest: str) -> bytes | None:
    """A blob's bytes from a simulated registry, or None."""
    blob = (sim.state.get("acr", {}).get(login_server.lower()) or {}).get("blobs", {}).get(digest)
    if blob is None:
        return None
    if isinstance(blob, str):  # a state written before blobs moved to files
        return base64.b64decode(blob)
    try:
        return (_blob_dir(sim) / digest.replace(":", "-")).read_bytes()
    except OSError:
        return None


def credentials_work(sim: Any, login_server: str, username: str, password: str) -> bool:
    """Would ``username``/``password`` log in to the registry?  Admin credentials (when the admin
    user is enabled) or an enabled token's generated password."""
    reg = next((r for r in sim.state["resources"].values()
                if str(r.get("properties", {}).get("loginServer", "")).lower() == login_server.lower()), None)
    if reg is None or not password:
        return False
    store = _store(sim, login_server.lower())
    if username.lower() == reg["name"].lower():
        return bool(reg["properties"].get("adminUserEnabled")) and password in store.get("admin_passwords", [])
    token = sim.get(f"{reg['id']}/tokens/{username}")
    if token is None or (token.get("properties") or {}).get("status", "enabled").lower() != "enabled":
        return False
    return password in (store.get("token_passwords", {}).get(username.lower()) or {}).values()


def _store(sim: Any, login_server: str) -> dict[str, Any]:
    return sim.state.setdefault("acr", {}).setdefault(login_server, {"repos": {}, "blobs": {}, "tokens": {}})


TASK_OPS = {"listcredentials": "Registries_ListCredentials", "importimage": "Registries_ImportImage",
            "listbuildsourceuploadurl": "Registries_GetBuildSourceUploadUrl", "schedulerun": "Registries_ScheduleRun",
            "listlogsasurl": "Runs_GetLogSasUrl", "cancel": "Runs_Cancel"}
RUN = re.compile(r"/runs/([^/]+)/(listlogsasurl|cancel)$", re.IGNORECASE)


def _source_account(login: str) -> str:
    return "acrsrc" + hashlib.sha256(login.encode()).hexdigest()[:12]


class AcrManagement(ContainerRegistry):
    """The Microsoft.ContainerRegistry namespace: registries (inherited) plus ``listCredentials``,
    ``importImage`` and ACR Tasks quick runs."""

    def __init__(self, sim: Any) -> None:
        super().__init__(sim)
        sim.hooks["acr.task"] = _task_done

    def operation(self, req: Request) -> str | None:
        return TASK_OPS.get(req.path.lower().rsplit("/", 1)[-1]) or super().operation(req)

    def handle(self, req: Request, operation: str | None) -> Response | None:
        m = REGISTRY.search(req.path)
        tail = req.path[m.end():].lower() if m else ""
        if m and tail.startswith("/scopemaps/") and req.method == "GET" and tail.count("/") == 2:
            return self._scope_map(req.path[: m.end()], req.path.rsplit("/", 1)[-1])
        if m and req.method == "POST" and tail == "/generatecredentials":
            return self._generate_credentials(req.path[: m.end()], req.json() or {})
        if not m or req.method != "POST" or not (tail in ("/listcredentials", "/importimage", "/listbuildsourceuploadurl",
                                                          "/schedulerun") or RUN.search(tail)):
            return super().handle(req, operation)
        reg_path = req.path[: m.end()]
        reg = self.sim.get(reg_path)
        if reg is None:
            return arm.not_found(reg_path)
        login = reg["properties"]["loginServer"]
        if tail == "/listcredentials":
            if not reg["properties"].get("adminUserEnabled"):
                return arm_error(400, "AdminUserDisabled", f"Admin user is disabled for registry {m.group(1)}.")
            pw = _store(self.sim, login).setdefault("admin_passwords", [secrets.token_urlsafe(24), secrets.token_urlsafe(24)])
            return json_response(200, {"username": m.group(1), "passwords": [
                {"name": "password", "value": pw[0]}, {"name": "password2", "value": pw[1]}]})
        if tail == "/listbuildsourceuploadurl":
            name = f"source/{self.sim.new_id()}.tar.gz"
            account = _source_account(login)
            self.sim.state["blobs"].setdefault(account, {}).setdefault("source", {})
            return json_response(200, {"uploadUrl": f"https://{account}.blob.core.windows.net/{name}?sv=2023-01-03&sig=sim",
                                       "relativePath": name})
        if tail == "/schedulerun":
            return self._schedule(req, reg_path, reg, login)
        if rm := RUN.search(tail):
            run = self.sim.get(f"{reg_path}/runs/{rm.group(1)}")
            if run is None:
                return arm.not_found(f"{reg_path}/runs/{rm.group(1)}")
            if rm.group(2).lower() == "cancel":
                if run["properties"]["status"] not in ("Succeeded", "Failed", "Error", "Timeout"):
                    run["properties"]["status"] = "Canceled"
                return Response(200)
            link = f"https://{_source_account(login)}.blob.core.windows.net/logs/{rm.group(1)}.log?sv=2023-01-03&sig=sim"
            return json_response(200, {"logLink": link, "logArtifactLink": link})
        body = req.json() or {}
        error = self._import(login, body)
        op = arm.start_operation(self.sim, reg_path, "importImage", kind="default", operation="Registries_ImportImage",
                                 location=reg.get("location") or self.sim.default_location,
                                 namespace="Microsoft.ContainerRegistry", error=error)
        return arm.lro_response(self.sim, op, 202, None, style="location")

    def _scope_map(self, reg_path: str, name: str) -> Response:
        """ACR's built-in scope maps (``_repositories_pull``, ``_push``, ``_admin``) exist in every registry."""
        res = self.sim.get(f"{reg_path}/scopeMaps/{name}")
        if res is not None:
            return json_response(200, res)
        actions = BUILTIN_SCOPE_MAPS.get(name.lower())
        if actions is None or self.sim.get(reg_path) is None:
            return arm.not_found(f"{reg_path}/scopeMaps/{name}")
        return json_response(200, {"id": f"{reg_path}/scopeMaps/{name}", "name": name,
                                   "type": "Microsoft.ContainerRegistry/registries/scopeMaps",
                                   "properties": {"type": "SystemDefined", "actions": actions, "provisioningState": "Succeeded"}})

    def _generate_credentials(self, reg_path: str, body: dict[str, Any]) -> Response:
        """A new password for a token (``name``: password1 or password2), replacing that one."""
        reg = self.sim.get(reg_path)
        token = self.sim.get(str(body.get("tokenId") or ""))
        if reg is None or token is None:
            return arm_error(404, "TokenNotFound", f"Token {body.get('tokenId')} was not found.")
        which = str(body.get("name") or "password1")
        value = secrets.token_urlsafe(32)
        passwords = _store(self.sim, reg["properties"]["loginServer"]).setdefault("token_passwords", {})
        passwords.setdefault(token["name"].lower(), {})[which] = value
        return json_response(200, {"username": token["name"], "passwords": [{"name": which, "value": value}]})
    def _schedule(self, req: Request, reg_path: str, reg: dict[str, Any], login: str) -> Response:
        body = req.json() or {}
        account = _source_account(login)
        container, _, name = str(body.get("sourceLocation") or "").partition("/")
        data = get_blob(self.sim, account, container, name)
        steps: list[str] = []
        notes: list[str] = []
        problem: str | None = None
        manifest = b""
        dockerfile = str(body.get("dockerFilePath") or "Dockerfile")
        if not body.get("sourceLocation") or "://" in str(body["sourceLocation"]):
            pass  # a git or remote URL (or none): nothing uploaded here to check, taken on trust
        elif data is None:
            problem = f"the source location {body.get('sourceLocation')!r} holds no uploaded context"
        else:
            store = _store(self.sim, login)
            try:
                built = build(data, dockerfile, resolve_base=lambda ref: _resolve_base(self.sim, ref))
                steps, notes, manifest = built.steps, built.notes, built.manifest
                for digest, blob in built.blobs.items():  # untagged until the run succeeds
                    write_blob(self.sim, store, digest, blob)
            except BuildError as e:
                problem = str(e)
                try:
                    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
                        member = tar.extractfile(dockerfile.lstrip("./"))
                        steps = instructions(member.read().decode(errors="replace")) if member else []
                except (KeyError, OSError, EOFError, tarfile.TarError):
                    steps = []
        run_id = f"cb{self.sim.state['counter'] + 1:x}"
        run_path = f"{reg_path}/runs/{run_id}"
        self.sim.put_resource(run_path, {"properties": {
            "runId": run_id, "status": "Running", "runType": "QuickRun", "provisioningState": "Succeeded",
            "platform": body.get("platform") or {"os": "Linux"},
            "outputImages": [{"registry": login, "repository": i.partition(":")[0], "tag": i.partition(":")[2]}
                             for i in body.get("imageNames") or []]}})
        self.sim.state.setdefault("acr_runs", {})[run_id] = {
            "account": account, "steps": steps, "notes": notes, "problem": problem, "login": login,
            "images": (body.get("imageNames") or []) if body.get("isPushEnabled", True) else [],
            "manifest": base64.b64encode(manifest).decode()}
        op = arm.start_operation(self.sim, run_path, "create", kind="default", operation="Registries_ScheduleRun",
                                 location=reg.get("location") or self.sim.default_location,
                                 namespace="Microsoft.ContainerRegistry", hook="acr.task",
                                 error={"code": "BuildFailed", "message": problem} if problem else None)
        return arm.lro_response(self.sim, op, 200, self.sim.get(run_path))

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


def _task_done(sim: Any, op: dict[str, Any], res: dict[str, Any] | None) -> None:
    """A quick run finished: its status and its log (what ``az acr build`` streams)."""
    if res is None:
        return
    run_id = res["properties"]["runId"]
    info = sim.state.get("acr_runs", {}).get(run_id, {})
    ok = op["outcome"] == "Succeeded" and res["properties"]["status"] != "Canceled"
    if res["properties"]["status"] != "Canceled":
        res["properties"]["status"] = "Succeeded" if ok else "Failed"
    lines = ["Sending context to registry...", *(f"Step {i}/{len(info.get('steps', []))} : {s}"
                                                for i, s in enumerate(info.get("steps", []), 1))]
    lines += info.get("notes", [])
    if ok and info.get("manifest"):
        _tag_built(sim, info)
    if ok:
        lines += [f"Successfully tagged {info.get('login')}/{i}" for i in info.get("images", [])]
        lines.append(f"Run ID: {run_id} was successful")
    else:
        lines += [f"error: {info.get('problem') or (op.get('error') or {}).get('message', 'the run failed')}",
                  f"Run ID: {run_id} failed"]
    put_blob(sim, info.get("account", "acrsrc"), "logs", f"{run_id}.log", ("\n".join(lines) + "\n").encode(), "text/plain")


def _tag_built(sim: Any, info: dict[str, Any]) -> None:
    """The run succeeded: its image's manifest goes in under each ``repo:tag`` it was asked to push."""
    data = base64.b64decode(info["manifest"])
    store = _store(sim, info["login"])
    for name in info.get("images", []):
        repo_name, _, tag = str(name).partition(":")
        repo = store["repos"].setdefault(repo_name, {"manifests": {}, "tags": {}})
        repo["manifests"][_digest(data)] = {"data": info["manifest"], "mediaType": OCI_MANIFEST}
        repo["tags"][tag or "latest"] = _digest(data)


def _resolve_base(sim: Any, ref: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, bytes]]:
    """A FROM image's (manifest, config, blobs): Docker Hub's python images (the simulator's
    synthetic ones) or an image of a simulated registry."""
    from orchestrator.azure.simulator.providers import dockerhub
    from orchestrator.errors import UserError
    from orchestrator.images.registry import Reference

    try:
        r = Reference.parse(ref)
    except UserError as e:
        raise BuildError(f"FROM {ref}: {e.message}") from None
    reference = r.digest or r.tag or "latest"
    if r.host in ("registry-1.docker.io", "index.docker.io") and r.repository == "library/python":
        version = dockerhub._version_of(reference)
        if version is not None:
            data, blobs = dockerhub.python_image(version)
            doc = json.loads(data)
            return doc, json.loads(blobs[doc["config"]["digest"]]), dict(blobs)
    repo = (sim.state.get("acr", {}).get(r.host.lower()) or {}).get("repos", {}).get(r.repository) or {}
    digest = reference if reference.startswith("sha256:") else repo.get("tags", {}).get(reference)
    entry = repo.get("manifests", {}).get(digest or "")
    if entry is not None:
        doc = json.loads(base64.b64decode(entry["data"]))
        found = {d["digest"]: read_blob(sim, r.host, d["digest"]) for d in [doc["config"], *doc.get("layers", [])]}
        blobs = {k: v for k, v in found.items() if v is not None}
        if len(blobs) == len(found):
            return doc, json.loads(blobs[doc["config"]["digest"]]), blobs
    raise BuildError(f"failed to resolve source metadata for {ref}: not found (the simulator holds Docker Hub's "
                     "python images and the images of its own registries)")


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
            data = read_blob(self.sim, req.host, m.group(2))
            if data is None:
                return Response(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
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
            write_blob(self.sim, store, digest, req.body)
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
            if auth.startswith("Basic "):
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                ok = credentials_work(self.sim, reg["properties"]["loginServer"], user, pw)
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
