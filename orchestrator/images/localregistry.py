"""A throwaway OCI registry on 127.0.0.1: Debian's ``docker-registry`` (the CNCF distribution
registry), for the image tests and ``bench/image.py``.  Never used by deploys."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REGISTRY_BIN = shutil.which("docker-registry") or shutil.which("registry")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_registry(root: Path, htpasswd: Path | None = None) -> Iterator[str]:
    """Run a registry storing under ``root`` (optionally behind htpasswd Basic auth); yields its
    ``127.0.0.1:PORT``.  Raises FileNotFoundError when docker-registry is not installed."""
    if not REGISTRY_BIN:
        raise FileNotFoundError("docker-registry is not installed (apt-get install docker-registry)")
    port = _free_port()
    auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" if htpasswd else ""
    cfg = root / "config.yml"
    cfg.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                   f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}")
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                    break
                except urllib.error.HTTPError:
                    break  # 401: up, and asking for credentials
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}") from None
                    time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def push_rootfs_image(host: str, repository: str, rootfs: Path, cache: Path, *, env: list[str] | None = None,
                      auth: Any = None, transport: Any = None, tag: str = "base") -> str:
    """Push a one-layer image made from the folder ``rootfs`` (a stand-in base image); returns
    ``host/repo@digest``."""
    from orchestrator.images import oci
    from orchestrator.images.layers import blob_path, write_layer
    from orchestrator.images.registry import Reference, RegistryClient

    client = RegistryClient(Reference.parse(f"{host}/{repository}"), auth=auth, transport=transport)
    layer = write_layer("base", [("", rootfs)], cache)
    config = oci.canonical({"architecture": "amd64", "os": "linux",
                            "config": {"Env": env or ["PATH=/usr/local/bin:/usr/bin:/bin"]},
                            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}, "history": [{"created_by": "test"}]})
    manifest = oci.canonical(oci.image_manifest(config, [], [layer.descriptor()]))
    if not client.blob_exists(repository, layer.digest):
        client.upload_blob(repository, layer.digest, blob_path(cache, layer.digest))
    client.upload_blob(repository, oci.digest_of(config), config)
    return f"{host}/{repository}@{client.put_manifest(repository, tag, manifest, oci.OCI_MANIFEST)}"
