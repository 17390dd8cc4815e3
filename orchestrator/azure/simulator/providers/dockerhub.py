"""Docker Hub's official Python images, as far as deployctl reads them: ``registry-1.docker.io``
serving ``library/python:<3.X>[-slim|-bookworm|...]`` so that ``--simulate`` can build images on
the default base (``python:<version>-slim``) with no network.

Each image is synthetic and tiny, made on the fly and identical on every run: one layer holding
``usr/local/bin/python3.X`` (a placeholder: the simulator runs images with a local interpreter of
that version) and the config official images carry (``PATH``, ``PYTHON_VERSION``, ``Cmd``).
Anything else on Docker Hub answers 404 ``MANIFEST_UNKNOWN``, as a missing image would.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from functools import lru_cache

from orchestrator.azure.simulator.messages import Request, Response

HOSTS = ("registry-1.docker.io", "index.docker.io")
MANIFEST = re.compile(r"^/v2/library/python/manifests/([^/]+)$")
BLOB = re.compile(r"^/v2/library/python/blobs/(sha256:[0-9a-f]{64})$")
TAG = re.compile(r"^(3\.\d{1,2})(?:\.\d+)?(?:-(?:slim|bookworm|slim-bookworm|bullseye|slim-bullseye))?$")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=16)
def python_image(version: str) -> tuple[bytes, dict[str, bytes]]:
    """(manifest bytes, blobs by digest) of the synthetic ``python:<version>`` image."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in ("usr", "usr/local", "usr/local/bin"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo(f"usr/local/bin/python{version}")
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(b""))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                           f"PYTHON_VERSION={version}.0"], "Cmd": [f"python{version}"]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(raw.getvalue())]},
        "history": [{"created_by": f"deployctl simulator: python {version} (synthetic)"}]}, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(layer),
                    "size": len(layer)}]}, sort_keys=True).encode()
    return manifest, {_digest(config): config, _digest(layer): layer}


def _version_of(reference: str) -> str | None:
    """The Python version a tag (``3.11-slim``) or a served manifest's digest names."""
    if m := TAG.match(reference):
        return m.group(1)
    return next((v for v in VERSIONS if _digest(python_image(v)[0]) == reference), None)


class DockerHub:
    def __init__(self, sim: object) -> None:
        self.sim = sim

    def owns(self, req: Request) -> bool:
        return req.host in HOSTS

    def operation(self, req: Request) -> str:
        return "DockerHub_Manifest" if "/manifests/" in req.path else "DockerHub_Blob"

    def handle(self, req: Request) -> Response | None:
        if req.path in ("/v2", "/v2/"):
            return Response(200, b"{}", {"Content-Type": "application/json"})
        if m := MANIFEST.match(req.path):
            version = _version_of(m.group(1))
            if version is None:
                return Response(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}',
                                {"Content-Type": "application/json"})
            data, _ = python_image(version)
            return Response(200, b"" if req.method == "HEAD" else data,
                            {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": _digest(data),
                             "Content-Length": str(len(data))})
        if m := BLOB.match(req.path):
            for version in VERSIONS:
                blob = python_image(version)[1].get(m.group(1))
                if blob is not None:
                    return Response(200, b"" if req.method == "HEAD" else blob,
                                    {"Docker-Content-Digest": m.group(1), "Content-Length": str(len(blob))})
            return Response(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', {"Content-Type": "application/json"})
        return Response(404, b'{"errors":[{"code":"UNSUPPORTED"}]}', {"Content-Type": "application/json"})
