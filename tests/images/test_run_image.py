"""The image really runs: a small Debian base (mmdebstrap, python3 from Debian's packages) pushed
to a real registry, the quickstart image built on it, unpacked with umoci, and the scoring
runtime started from that root filesystem (chroot, as root) to score the sample request.

Needs: root, docker-registry, skopeo, umoci, mmdebstrap (``.ci/run`` installs them) and, on the
first run only, Debian's mirror (the base is cached in ``<cache>/test-bases``, keyed by what
builds it)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.images import oci
from orchestrator.images.build import ImageInputs, build_image
from orchestrator.images.layers import GZIP_LAYER
from orchestrator.images.registry import Reference, RegistryClient
from orchestrator.manifest import load_manifest
from targets.local.envs import cache_root

pytestmark = pytest.mark.slow
QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
# python3 and the C++ runtime numpy's wheels expect from the system (as python:3.11-slim has it)
MMDEBSTRAP = ["mmdebstrap", "--variant=essential", "--include=python3,libstdc++6", "--format=tar", "bookworm"]


def _need() -> None:
    missing = [t for t in ("docker-registry", "skopeo", "umoci", "mmdebstrap", "chroot") if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install docker-registry skopeo umoci mmdebstrap; .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("needs root (mmdebstrap, umoci unpack and chroot)")


def debian_base_layer() -> tuple[Path, str]:
    """(gzip tar, diff_id) of a Debian bookworm root filesystem with python3, built once and cached."""
    key = hashlib.sha256(" ".join(MMDEBSTRAP).encode()).hexdigest()[:16]
    folder = cache_root() / "test-bases" / key
    layer, diff_file = folder / "layer.tar.gz", folder / "diff_id"
    if layer.exists() and diff_file.exists():
        return layer, diff_file.read_text()
    folder.mkdir(parents=True, exist_ok=True)
    tar = folder / "rootfs.tar"  # only ever complete: mmdebstrap writes beside it, then it is renamed
    if not tar.exists():
        part = folder / "rootfs.tar.part"
        proc = subprocess.run([*MMDEBSTRAP, str(part)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"mmdebstrap could not build the Debian base (no mirror?): {proc.stderr.strip()[-300:]}")
        os.replace(part, tar)
    h = hashlib.sha256()
    tmp = folder / "layer.tmp"
    with open(tar, "rb") as src, gzip.GzipFile(tmp, "wb", compresslevel=1, mtime=0) as out:
        while chunk := src.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
    tar.unlink()
    diff_file.write_text("sha256:" + h.hexdigest())
    os.replace(tmp, layer)
    return layer, diff_file.read_text()


def push_debian_base(host: str) -> str:
    layer, diff_id = debian_base_layer()
    data = layer.read_bytes()
    digest = oci.digest_of(data)
    client = RegistryClient(Reference.parse(f"{host}/base/debian"))
    config = oci.canonical({"architecture": "amd64", "os": "linux",
                            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
                            "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
    if not client.blob_exists("base/debian", digest):
        client.upload_blob("base/debian", digest, layer)
    client.upload_blob("base/debian", oci.digest_of(config), config)
    manifest = oci.canonical(oci.image_manifest(config, [], [{"mediaType": GZIP_LAYER, "digest": digest, "size": len(data)}]))
    return f"{host}/base/debian@{client.put_manifest('base/debian', 'bookworm', manifest, oci.OCI_MANIFEST)}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(port: int, body: bytes, key: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/score", body=body, headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_the_quickstart_image_scores_the_sample_request_from_its_own_root_filesystem(registry, tmp_path):
    _need()
    base = push_debian_base(registry)
    manifest = load_manifest(QUICKSTART / "deployctl.yaml").manifest
    inputs = ImageInputs.from_manifest(manifest)
    inputs = ImageInputs(**{**inputs.__dict__, "base_image": base})
    image = build_image(inputs, f"{registry}/apps/quickstart")

    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{image.image}", f"oci:{layout}:img"],
                   check=True, capture_output=True)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:img", str(bundle)], check=True, capture_output=True)
    rootfs = bundle / "rootfs"
    config = json.loads((bundle / "config.json").read_text())  # the OCI runtime spec umoci derived
    env = dict(e.split("=", 1) for e in config["process"]["env"])
    port, key = _free_port(), "k-" + os.urandom(8).hex()
    env.update(PORT=str(port), DEPLOYCTL_HOST="127.0.0.1", DEPLOYCTL_SCORING_KEY=key)
    assert config["process"]["args"] == ["python3", "-m", "deployctl_runtime.container"]
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(["chroot", str(rootfs), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
                             *config["process"]["args"]], stdout=log, stderr=log, cwd="/", start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        status, body = 0, b""
        sample = (QUICKSTART / "sample-request.json").read_bytes()
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, body = _post(port, sample, key)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        logs = (tmp_path / "server.log").read_text(errors="replace")[-3000:]
        assert status == 200, f"no answer from the image's server (status {status}):\n{logs}"
        assert json.loads(body) == [0, 2]  # setosa, virginica: as the local target answers
        assert _post(port, sample, "wrong")[0] == 401
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)  # a container stop: SIGTERM must end the server, not a SIGKILL
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # it may end between the wait and this
                os.killpg(proc.pid, 9)
            proc.wait()
            log.close()
            pytest.fail("SIGTERM did not stop the image's server in 20 s:\n"
                        + (tmp_path / "server.log").read_text(errors="replace")[-3000:])
        log.close()
