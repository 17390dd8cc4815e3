"""``deployctl image build`` end to end against a real registry on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images.conftest import push_base

pytestmark = pytest.mark.slow


def _deployctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True, cwd=cwd)


def _manifest(tmp: Path, base: str) -> Path:
    (tmp / "src").mkdir()
    (tmp / "src" / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (tmp / "model.bin").write_bytes(b"m" * 100)
    (tmp / "requirements.txt").write_text("six==1.17.0\n")
    m = tmp / "deployctl.yaml"
    m.write_text(f"apiVersion: deployctl/v1\nname: img-cli\nmodel: {{path: ./model.bin}}\n"
                 f"environment: {{python: '3.11', requirements: ./requirements.txt, base_image: '{base}'}}\n"
                 "code: {path: ./src, entry: score.py}\nscoring: {type: real-time}\n"
                 "targets: [{name: dev, kind: local}]\n")
    return m


def test_image_build_prints_the_image_and_its_layers_as_json(registry, tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "python3.11").write_text("")
    base = push_base(registry, "base/cli", root, tmp_path / "c")
    m = _manifest(tmp_path, base)
    proc = _deployctl("image", "build", str(m), "--registry", f"{registry}/apps/cli", "-o", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["image"] == f"{registry}/apps/cli@{doc['digest']}"
    assert [x["name"] for x in doc["layers"]] == ["base[0]", "environment:six==1.17.0", "runtime", "model", "code"]
    assert set(doc["layers"][0]) == {"name", "digest", "size", "pushed"}
    again = json.loads(_deployctl("image", "build", str(m), "--registry", f"{registry}/apps/cli", "-o", "json",
                                  cwd=tmp_path).stdout)
    assert again["digest"] == doc["digest"] and not any(x["pushed"] for x in again["layers"])


def test_image_build_without_a_registry_is_invalid_input(tmp_path):
    m = _manifest(tmp_path, "127.0.0.1:9/base:x")
    proc = _deployctl("image", "build", str(m), cwd=tmp_path)
    assert proc.returncode == 2 and "--registry" in proc.stderr and "Traceback" not in proc.stderr
    proc = _deployctl("image", "build", str(m), "--target", "dev", cwd=tmp_path)
    assert proc.returncode == 2 and "has no registry setting" in proc.stderr


def test_an_unreachable_registry_exits_1_without_a_traceback(tmp_path):
    m = _manifest(tmp_path, "127.0.0.1:9/base:x")
    proc = _deployctl("image", "build", str(m), "--registry", "127.0.0.1:9/apps/x", cwd=tmp_path)
    assert proc.returncode == 1 and "is unreachable" in proc.stderr and "Traceback" not in proc.stderr


def test_image_build_of_a_dockerfile_manifest_says_where_it_is_built(tmp_path):
    m = _manifest(tmp_path, "unused")
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    m.write_text(m.read_text().replace("base_image: 'unused'", "dockerfile: ./Dockerfile"))
    proc = _deployctl("image", "build", str(m), "--registry", "127.0.0.1:9/apps/x", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "environment.dockerfile (Dockerfile) is built by ACR Tasks" in proc.stderr and "container target" in proc.stderr
