"""A real OCI registry for the image tests: Debian's ``docker-registry`` on 127.0.0.1 (installed
by ``.ci/run``); tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.images import oci
from orchestrator.images.layers import write_layer
from orchestrator.images.registry import RegistryAuth, RegistryClient, Reference

REGISTRY_BIN = shutil.which("docker-registry") or shutil.which("registry")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def run_registry(root: Path, htpasswd: Path | None = None) -> Iterator[str]:
    if not REGISTRY_BIN:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry; .ci/run does)")
    port = _free_port()
    auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" if htpasswd else ""
    cfg = root / "config.yml"
    cfg.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                   f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}")
    log = open(root / "registry.log", "wb")
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
        log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[str]:
    with run_registry(tmp_path_factory.mktemp("registry")) as host:
        yield host


def push_base(host: str, repository: str, rootfs: Path, cache: Path, *, env: list[str] | None = None,
              auth: RegistryAuth | None = None, transport: object = None) -> str:
    """Push a one-layer base image made from the folder ``rootfs``; returns ``host/repo@digest``."""
    client = RegistryClient(Reference.parse(f"{host}/{repository}"), auth=auth, transport=transport)
    layer = write_layer("base", [("", rootfs)], cache)
    config = oci.canonical({"architecture": "amd64", "os": "linux",
                            "config": {"Env": env or ["PATH=/usr/local/bin:/usr/bin:/bin"]},
                            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}, "history": [{"created_by": "test"}]})
    manifest = oci.canonical(oci.image_manifest(config, [], [layer.descriptor()]))
    from orchestrator.images.layers import blob_path

    client.upload_blob(repository, layer.digest, blob_path(cache, layer.digest))
    client.upload_blob(repository, oci.digest_of(config), config)
    return f"{host}/{repository}@{client.put_manifest(repository, 'base', manifest, oci.OCI_MANIFEST)}"
