"""OCI image manifests and configs as pure functions of their parts.

Blobs are serialised canonically (sorted keys, no spaces) so the same image is the same bytes,
hence the same digest, wherever it is assembled.  Base images may come with Docker v2 media
types; their layer bytes are the same as OCI's, so descriptors are rewritten to the OCI types and
the whole image is one OCI manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))

_TO_OCI_LAYER = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
FIXED_CREATED = "1970-01-01T00:00:01Z"  # matches the layers' fixed mtime: rebuilt images are identical


def canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def select_platform(index: Mapping[str, Any], os_: str = "linux", arch: str = "amd64") -> Mapping[str, Any]:
    """The descriptor of ``os_/arch`` in an image index (a multi-platform image).  Pure."""
    for m in index.get("manifests", []):
        p = m.get("platform", {})
        if p.get("os") == os_ and p.get("architecture") == arch:
            return m
    have = sorted(f"{m.get('platform', {}).get('os')}/{m.get('platform', {}).get('architecture')}"
                  for m in index.get("manifests", []))
    raise ValueError(f"the base image has no {os_}/{arch} variant (it has: {', '.join(have) or 'none'})")


def oci_layer_descriptor(desc: Mapping[str, Any]) -> dict[str, Any]:
    """A base layer's descriptor with the OCI media type for the same bytes."""
    out = {k: desc[k] for k in ("mediaType", "digest", "size") if k in desc}
    out["mediaType"] = _TO_OCI_LAYER.get(str(desc.get("mediaType")), str(desc.get("mediaType")))
    if "urls" in desc:
        out["urls"] = list(desc["urls"])
    return out


def image_config(base: Mapping[str, Any], diff_ids: Sequence[str], history: Sequence[str], *,
                 env: Mapping[str, str], cmd: Sequence[str], workdir: str, port: int,
                 labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The new image's config: the base's, with our layers' ``diff_ids`` appended (one history
    entry per layer, named by ``history``), ``env`` merged over the base's environment, and the
    command, working directory, port and labels set.  Pure."""
    if len(diff_ids) != len(history):
        raise ValueError("one history entry per layer")
    cfg = dict(base.get("config") or {})
    merged: dict[str, str] = {}
    for item in cfg.get("Env") or []:
        k, _, v = str(item).partition("=")
        merged[k] = v
    merged.update(env)
    cfg["Env"] = [f"{k}={v}" for k, v in merged.items()]
    cfg["Entrypoint"] = list(cmd)
    cfg.pop("Cmd", None)
    cfg["WorkingDir"] = workdir
    cfg["ExposedPorts"] = {f"{port}/tcp": {}}
    cfg["Labels"] = {**(cfg.get("Labels") or {}), **(labels or {})}
    rootfs = base.get("rootfs") or {"type": "layers", "diff_ids": []}
    return {
        "architecture": base.get("architecture", "amd64"),
        "os": base.get("os", "linux"),
        "created": FIXED_CREATED,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [*rootfs.get("diff_ids", []), *diff_ids]},
        # no per-entry "created" (optional in the spec): the config is pushed again on every code
        # change, and ten fixed timestamps were a sixth of its bytes
        "history": [*(base.get("history") or []), *({"created_by": f"deployctl: {h}"} for h in history)],
    }


def image_manifest(config: bytes, base_layers: Sequence[Mapping[str, Any]], layers: Sequence[Mapping[str, Any]],
                   annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The OCI manifest of ``config`` (its canonical bytes) over the base's layer descriptors
    followed by ours.  Pure."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [*(oci_layer_descriptor(d) for d in base_layers), *(dict(d) for d in layers)],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return doc
