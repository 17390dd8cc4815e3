"""Layers and manifests as values: reproducible tars, digests, OCI config and manifest JSON."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.images import oci
from orchestrator.images.layers import FIXED_MTIME, blob_path, cached_layer, write_layer
from orchestrator.images.registry import Reference


def _tree(root: Path, files: dict[str, str], mtime: int) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.utime(p, (mtime, mtime))
    return root


FILES = {"score.py": "def init(): pass\n", "pkg/b.py": "B = 1\n", "pkg/a.py": "A = 1\n", "pkg/__pycache__/a.pyc": "junk"}


def test_equal_content_gives_equal_digests_whatever_the_mtimes_and_paths(tmp_path):
    a = _tree(tmp_path / "one", FILES, 1_000_000)
    b = _tree(tmp_path / "two" / "elsewhere", FILES, 2_000_000)
    la = write_layer("code", [("opt/app/code", a)], tmp_path / "c1")
    lb = write_layer("code", [("opt/app/code", b)], tmp_path / "c2")
    assert (la.digest, la.diff_id, la.size) == (lb.digest, lb.diff_id, lb.size)
    (b / "pkg" / "a.py").write_text("A = 2\n")
    assert write_layer("code", [("opt/app/code", b)], tmp_path / "c3").digest != la.digest


def test_layer_tar_is_sorted_with_parents_root_owned_and_fixed_mtimes(tmp_path):
    src = _tree(tmp_path / "src", FILES, 1_234_567)
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    layer = write_layer("code", [("opt/app/code", src)], tmp_path / "cache")
    blob = blob_path(tmp_path / "cache", layer.digest).read_bytes()
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer.digest and len(blob) == layer.size
    raw = gzip.decompress(blob)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer.diff_id
    assert blob[4:8] == b"\0\0\0\0"  # the gzip header's mtime
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    # a fixed order: each folder's files sorted, then its subfolders sorted; parents before children
    assert names == ["opt", "opt/app", "opt/app/code", "opt/app/code/run.sh", "opt/app/code/score.py",
                     "opt/app/code/pkg", "opt/app/code/pkg/a.py", "opt/app/code/pkg/b.py"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", FIXED_MTIME)}
    modes = {m.name: m.mode for m in members}
    assert modes["opt/app/code/run.sh"] == 0o755 and modes["opt/app/code/score.py"] == 0o644
    assert modes["opt/app"] == 0o755 and members[1].isdir()


def test_cached_layer_builds_once_per_content_key(tmp_path):
    src = _tree(tmp_path / "src", {"m.bin": "x" * 1000}, 1)
    calls = []

    def sources():
        calls.append(1)
        return [("opt/model", src)]

    first, built1 = cached_layer("model", "key-1", sources, tmp_path / "cache")
    again, built2 = cached_layer("model", "key-1", sources, tmp_path / "cache")
    assert (built1, built2, len(calls)) == (True, False, 1) and first == again
    blob_path(tmp_path / "cache", first.digest).unlink()  # a record without its blob is rebuilt
    assert cached_layer("model", "key-1", sources, tmp_path / "cache")[1] is True


BASE_CONFIG = {
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/usr/local/bin:/usr/bin", "LANG=C.UTF-8"], "Cmd": ["python3"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
    "history": [{"created_by": "base"}],
}


def test_image_config_appends_layers_and_merges_environment():
    cfg = oci.image_config(BASE_CONFIG, ["sha256:" + "2" * 64, "sha256:" + "3" * 64], ["environment", "code"],
                           env={"LANG": "C", "PORT": "5001"}, cmd=["python3", "-m", "x"], workdir="/app", port=5001,
                           labels={"a": "b"})
    assert cfg["rootfs"]["diff_ids"] == ["sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64]
    assert cfg["config"]["Env"] == ["PATH=/usr/local/bin:/usr/bin", "LANG=C", "PORT=5001"]
    assert cfg["config"]["Entrypoint"] == ["python3", "-m", "x"] and "Cmd" not in cfg["config"]
    assert cfg["config"]["ExposedPorts"] == {"5001/tcp": {}} and cfg["config"]["Labels"] == {"a": "b"}
    assert [h["created_by"] for h in cfg["history"]] == ["base", "deployctl: environment", "deployctl: code"]
    assert all(set(h) == {"created_by"} for h in cfg["history"])  # no per-layer timestamps: bytes pushed on every change
    assert cfg["created"] == oci.FIXED_CREATED
    with pytest.raises(ValueError):
        oci.image_config(BASE_CONFIG, ["sha256:" + "2" * 64], [], env={}, cmd=[], workdir="/", port=1)


def test_image_manifest_describes_config_and_rewrites_docker_layer_types():
    config = oci.canonical({"b": 1, "a": 2})
    assert config == b'{"a":2,"b":1}'
    base = [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:" + "1" * 64, "size": 10}]
    ours = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "2" * 64, "size": 20}]
    doc = oci.image_manifest(config, base, ours)
    assert doc["mediaType"] == oci.OCI_MANIFEST and doc["schemaVersion"] == 2
    assert doc["config"] == {"mediaType": oci.OCI_CONFIG, "digest": oci.digest_of(config), "size": len(config)}
    assert [x["mediaType"] for x in doc["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"] * 2
    assert oci.digest_of(oci.canonical(doc)) == oci.digest_of(oci.canonical(json.loads(oci.canonical(doc))))


def test_select_platform_picks_linux_amd64_or_names_what_there_is():
    index = {"manifests": [{"digest": "sha256:a", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                           {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "amd64"}}]}
    assert oci.select_platform(index)["digest"] == "sha256:b"
    with pytest.raises(ValueError, match="linux/arm64"):
        oci.select_platform({"manifests": index["manifests"][:1]})


def test_references_expand_docker_hub_and_use_plain_http_only_on_loopback():
    r = Reference.parse("python:3.11-slim")
    assert (r.host, r.repository, r.tag) == ("registry-1.docker.io", "library/python", "3.11-slim")
    assert r.base_url.startswith("https://")
    local = Reference.parse("127.0.0.1:5000/team/app")
    assert (local.host, local.repository, local.tag, local.base_url) == ("127.0.0.1:5000", "team/app", None, "http://127.0.0.1:5000")
    assert Reference.parse("localhost:5000/app").plain_http
    for remote in ("myacr.azurecr.io/app", "10.0.0.1:5000/app", "127.0.0.1.evil.example/app"):
        assert not Reference.parse(remote).plain_http, remote
    d = "sha256:" + "a" * 64
    assert Reference.parse(f"myacr.azurecr.io/app@{d}").digest == d
    with pytest.raises(UserError, match="not a sha256 digest"):
        Reference.parse("myacr.azurecr.io/app@md5:abc")
    with pytest.raises(UserError, match="repository name"):
        Reference.parse("myacr.azurecr.io/App")


def test_lock_lines_split_into_packages_and_index_options():
    from orchestrator.images.build import _dist_name, _lock_packages

    lock = "# python 3.11\n--extra-index-url https://example.invalid/simple\nScikit_Learn==1.9.1\nzope.interface==7.0\n"
    assert _lock_packages(lock) == (["Scikit_Learn==1.9.1", "zope.interface==7.0"], ["--extra-index-url https://example.invalid/simple"])
    assert [_dist_name(x) for x in ("Scikit_Learn==1.9.1", "zope.interface==7.0", "pkg @ file:///w/pkg.whl")] == [
        "scikit-learn", "zope-interface", "pkg"]


def test_repository_names_follow_the_distribution_spec():
    import pytest as _pytest

    from orchestrator.errors import UserError
    from orchestrator.images.registry import Reference

    for good in ("devacr.azurecr.io/deployctl/iris-aci", "r.io/a/b_c/d__e/f--g", "python:3.11-slim"):
        Reference.parse(good)
    for bad in ("r.io/Upper", "r.io/a//b", "r.io/a-", "r.io/-a", "r.io/a/"):
        with _pytest.raises(UserError):
            Reference.parse(bad)
