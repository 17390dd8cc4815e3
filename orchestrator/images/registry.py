"""A client for the OCI distribution API (what Docker registries, ACR and azure-containerregistry
speak), enough to assemble images without a daemon: manifests, blob-exists checks, monolithic
blob uploads, and the registry token exchange.

Requests go through an azure-core pipeline (the transport of the run's
:class:`~orchestrator.azure.session.AzureSession`), so the same code talks to a real registry or
to the Azure simulator's ACR.  Plain HTTP is used only for loopback registries (127.0.0.1,
localhost, [::1]), as Docker allows; every other registry is HTTPS.

Authentication follows the registry's ``WWW-Authenticate`` challenge: ``Basic`` (user and
password), or ``Bearer realm=...,service=...,scope=...`` — a token from the realm, anonymously, with
the user and password, or for ACR by exchanging an Entra ID token for a refresh token
(``/oauth2/exchange``).  Tokens are cached per scope and never logged.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

from orchestrator.errors import TargetError, UserError
from orchestrator.images.oci import ACCEPT, INDEX_TYPES, digest_of

LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")
DOCKER_HUB = "registry-1.docker.io"
ARM_SCOPE = "https://management.azure.com/.default"
# the OCI distribution spec's repository name: path components separated by "/"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = rf"{_COMPONENT}(?:/{_COMPONENT})*"


@dataclass(frozen=True)
class Reference:
    """``host[:port]/repository[:tag][@digest]``; Docker Hub short names are expanded."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        ref = text.strip()
        digest = None
        if "@" in ref:
            ref, digest = ref.split("@", 1)
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                raise UserError(f"image reference {text!r}: {digest!r} is not a sha256 digest")
        first, _, rest = ref.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            host, path = first, rest
        else:  # Docker Hub: "python:3.11-slim" is docker.io/library/python:3.11-slim
            host, path = DOCKER_HUB, ref if "/" in ref else f"library/{ref}"
        if host == "docker.io":
            host = DOCKER_HUB
        tag = None
        if ":" in path.rsplit("/", 1)[-1]:
            path, tag = path.rsplit(":", 1)
        if not path or not re.fullmatch(REPOSITORY, path):
            raise UserError(f"image reference {text!r}: {path!r} is not a valid repository name "
                            "(lower-case letters, digits, '.', '_', '-', '/')")
        return cls(host, path, tag, digest)

    @property
    def plain_http(self) -> bool:
        """Loopback registries only (Docker's rule): the host without its port is 127.0.0.1,
        localhost or [::1]."""
        name = self.host[: self.host.index("]") + 1] if self.host.startswith("[") else self.host.rsplit(":", 1)[0]
        return name in LOOPBACK

    @property
    def base_url(self) -> str:
        return f"{'http' if self.plain_http else 'https'}://{self.host}"

    def with_digest(self, digest: str) -> str:
        return f"{self.host}/{self.repository}@{digest}"

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}" + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


@dataclass
class RegistryAuth:
    """How to authenticate: ``username``/``password`` (ACR admin or token, ``listCredentials``), or
    an Entra ID ``credential`` exchanged for an ACR refresh token; neither is anonymous."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    credential: Any = None


class RegistryClient:
    """One registry, one repository at a time.  ``transport``: an azure-core HttpTransport (None:
    the real network)."""

    def __init__(self, host_ref: Reference, *, auth: RegistryAuth | None = None, transport: Any = None,
                 retry_total: int = 3, timeout: float = 60) -> None:
        from azure.core.pipeline import Pipeline
        from azure.core.pipeline.policies import RedirectPolicy, RetryPolicy
        from azure.core.pipeline.transport import RequestsTransport

        self.ref = host_ref
        self.auth = auth or RegistryAuth()
        self.timeout = timeout
        self._tokens: dict[str, str] = {}
        self._pipeline = Pipeline(transport=transport or RequestsTransport(),
                                  policies=[RedirectPolicy(), RetryPolicy(retry_total=retry_total, retry_backoff_factor=0.2)])

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, body: Any = None,
              stream: bool = False) -> Any:
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError
        from azure.core.rest import HttpRequest

        request = HttpRequest(method, url, headers=dict(headers or {}), content=body)
        try:
            return self._pipeline.run(request, stream=stream, connection_timeout=10, read_timeout=self.timeout).http_response
        except (ServiceRequestError, ServiceResponseError) as e:
            raise TargetError(f"registry {self.ref.host} is unreachable ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                              hint="check the registry's address and that it is running") from None

    def request(self, method: str, path: str, *, scope: str, headers: Mapping[str, str] | None = None,
                body: Any = None, stream: bool = False, ok: tuple[int, ...] = (200,)) -> Any:
        """Send with the cached token for ``scope``; on a 401 answer the challenge once and resend."""
        url = path if path.startswith("http") else self.ref.base_url + path
        hdrs = dict(headers or {})
        for attempt in (0, 1):
            if scope in self._tokens:
                hdrs["Authorization"] = self._tokens[scope]
            if hasattr(body, "seek"):
                body.seek(0)
            resp = self._send(method, url, headers=hdrs, body=body, stream=stream)
            if resp.status_code == 401 and attempt == 0:
                self._tokens[scope] = self._answer(resp.headers.get("WWW-Authenticate", ""), scope)
                continue
            break
        if resp.status_code not in ok:
            raise self._error(resp, method, path)
        return resp

    def _error(self, resp: Any, method: str, path: str) -> TargetError:
        if resp.status_code == 401:
            return TargetError(f"registry {self.ref.host} refused the credentials (401 on {method} {path.split('?')[0]})",
                               hint="check the registry user and password, or the identity's AcrPush role")
        if resp.status_code == 403:
            return TargetError(f"registry {self.ref.host} denied {method} {path.split('?')[0]} (403)",
                               hint="the identity needs AcrPush on the registry")
        try:
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in json.loads(resp.text()).get("errors", []))
        except Exception:
            detail = resp.text()[:200] if not getattr(resp, "is_stream_consumed", False) else ""
        return TargetError(f"registry {self.ref.host}: {method} {path.split('?')[0]} answered {resp.status_code}"
                           + (f" ({detail})" if detail else ""))

    def _answer(self, challenge: str, scope: str) -> str:
        scheme, _, params_text = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', params_text))
        if scheme.lower() == "basic":
            if not self.auth.username:
                raise TargetError(f"registry {self.ref.host} needs a user and password (401)",
                                  hint="pass the registry's credentials")
            raw = f"{self.auth.username}:{self.auth.password or ''}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if scheme.lower() != "bearer" or "realm" not in params:
            raise TargetError(f"registry {self.ref.host} answered 401 with an unsupported challenge {scheme!r}")
        service = params.get("service", self.ref.host.split(":")[0])
        form = {"service": service, "scope": params.get("scope", scope)}
        headers = {}
        if self.auth.credential is not None:  # ACR: Entra ID token -> refresh token -> access token
            refresh = self._exchange(service)
            body = urlencode({**form, "grant_type": "refresh_token", "refresh_token": refresh})
            resp = self._send("POST", params["realm"], headers={"Content-Type": "application/x-www-form-urlencoded"}, body=body)
        else:
            if self.auth.username:
                raw = f"{self.auth.username}:{self.auth.password or ''}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            resp = self._send("GET", params["realm"] + ("&" if "?" in params["realm"] else "?") + urlencode(form), headers=headers)
        if resp.status_code != 200:
            raise TargetError(f"registry {self.ref.host} refused the credentials ({resp.status_code} from its token service)",
                              hint="check the registry user and password, or the identity's AcrPull/AcrPush role")
        doc = resp.json()
        token = doc.get("access_token") or doc.get("token")
        if not token:
            raise TargetError(f"registry {self.ref.host}: its token service answered without a token")
        return f"Bearer {token}"

    def _exchange(self, service: str) -> str:
        aad = self.auth.credential.get_token(ARM_SCOPE).token
        body = urlencode({"grant_type": "access_token", "service": service, "access_token": aad})
        resp = self._send("POST", f"{self.ref.base_url}/oauth2/exchange",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, body=body)
        if resp.status_code != 200:
            raise TargetError(f"registry {self.ref.host} refused the Entra ID token ({resp.status_code} from /oauth2/exchange)",
                              hint="the identity needs AcrPush on the registry")
        return str(resp.json()["refresh_token"])

    # -- the distribution API ---------------------------------------------------------------
    def _scope(self, repository: str, push: bool) -> str:
        return f"repository:{repository}:{'pull,push' if push else 'pull'}"

    def get_manifest(self, repository: str, reference: str, *, push: bool = False) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index, by tag or digest."""
        resp = self.request("GET", f"/v2/{repository}/manifests/{reference}", scope=self._scope(repository, push),
                            headers={"Accept": ACCEPT}, ok=(200, 404))
        if resp.status_code == 404:
            raise TargetError(f"image {self.ref.host}/{repository}:{reference} not found in the registry")
        data = resp.content
        media_type = resp.headers.get("Content-Type", "").split(";")[0] or json.loads(data).get("mediaType", "")
        digest = digest_of(data)
        if reference.startswith("sha256:") and digest != reference:
            raise TargetError(f"registry {self.ref.host} answered a manifest whose digest is not {reference}")
        return data, media_type, digest

    def manifest_exists(self, repository: str, reference: str, *, push: bool = True) -> str | None:
        """The digest of the manifest at ``reference`` (a tag), or None."""
        resp = self.request("HEAD", f"/v2/{repository}/manifests/{reference}", scope=self._scope(repository, push),
                            headers={"Accept": ACCEPT}, ok=(200, 404))
        return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"/v2/{repository}/manifests/{reference}", scope=self._scope(repository, True),
                            headers={"Content-Type": media_type}, body=data, ok=(201, 200))
        digest = resp.headers.get("Docker-Content-Digest") or digest_of(data)
        if digest != digest_of(data):
            raise TargetError(f"registry {self.ref.host} stored the manifest under {digest}, not {digest_of(data)}")
        return digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.request("DELETE", f"/v2/{repository}/manifests/{digest}", scope=self._scope(repository, True),
                     ok=(202, 200, 404, 405))

    def blob_exists(self, repository: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=self._scope(repository, True), ok=(200, 404))
        return bool(resp.status_code == 200)

    def get_blob(self, repository: str, digest: str, dest: Path) -> Path:
        """Download a blob to ``dest`` (atomically), checking its digest."""
        import hashlib
        import os

        resp = self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=self._scope(repository, False), stream=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        h = hashlib.sha256()
        try:
            with open(tmp, "wb") as f:
                for chunk in resp.iter_bytes():
                    h.update(chunk)
                    f.write(chunk)
            if "sha256:" + h.hexdigest() != digest:
                raise TargetError(f"blob {digest} from {self.ref.host} does not match its digest")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def get_small_blob(self, repository: str, digest: str) -> bytes:
        """A small blob (an image config) in memory, checked against its digest."""
        resp = self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=self._scope(repository, False))
        data = bytes(resp.content)
        if digest_of(data) != digest:
            raise TargetError(f"blob {digest} from {self.ref.host} does not match its digest")
        return data

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount within this registry (no bytes move); False when the registry
        started an ordinary upload instead (that session is simply abandoned)."""
        scope = f"{self._scope(repository, True)} repository:{from_repository}:pull"
        resp = self.request("POST", f"/v2/{repository}/blobs/uploads/?" + urlencode({"mount": digest, "from": from_repository}),
                            scope=scope, headers={"Content-Length": "0"}, ok=(201, 202))
        return bool(resp.status_code == 201)

    def upload_blob(self, repository: str, digest: str, path_or_bytes: Path | bytes) -> None:
        """A monolithic upload: POST for a session, then PUT the bytes with their digest."""
        scope = self._scope(repository, True)
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, ok=(202,),
                             headers={"Content-Length": "0"})
        location = start.headers.get("Location")
        if not location:
            raise TargetError(f"registry {self.ref.host} started an upload without a Location")
        url = urljoin(self.ref.base_url + "/", location)
        url += ("&" if "?" in url else "?") + urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(path_or_bytes, bytes):
            self.request("PUT", url, scope=scope, headers=headers, body=path_or_bytes, ok=(201,))
            return
        headers["Content-Length"] = str(path_or_bytes.stat().st_size)
        with open(path_or_bytes, "rb") as f:
            self.request("PUT", url, scope=scope, headers=headers, body=f, ok=(201,))

    def platform_manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str]:
        """The linux/amd64 image manifest (resolving an index) and its digest."""
        from orchestrator.images.oci import select_platform

        data, media_type, digest = self.get_manifest(repository, reference)
        doc = json.loads(data)
        if media_type in INDEX_TYPES or doc.get("mediaType") in INDEX_TYPES:
            try:
                desc = select_platform(doc)
            except ValueError as e:
                raise UserError(f"base image {self.ref.host}/{repository}:{reference}: {e}") from None
            data, media_type, digest = self.get_manifest(repository, str(desc["digest"]))
            doc = json.loads(data)
        return doc, digest

