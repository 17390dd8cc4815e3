"""build_image against a real registry (docker-registry on 127.0.0.1), checked with skopeo."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.errors import TargetError, UserError
from orchestrator.images.build import ImageInputs, build_image
from orchestrator.images.registry import Reference, RegistryAuth, RegistryClient
from tests.images.conftest import push_base, run_registry

pytestmark = pytest.mark.slow


def _fake_python_root(root: Path, version: str = "3.11") -> Path:
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / f"python{version}").write_text("#!/bin/false\n")
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("ID=test\n")
    return root


def _inputs(tmp: Path, base: str, code_text: str = "def init(): pass\ndef run(raw): return raw\n") -> ImageInputs:
    code = tmp / "src"
    code.mkdir(exist_ok=True)
    (code / "score.py").write_text(code_text)
    model = tmp / "model"
    model.mkdir(exist_ok=True)
    (model / "weights.bin").write_bytes(b"\1" * 4096)
    return ImageInputs(name="t", python="3.11", requirements=("six==1.17.0",), code=code, entry="score.py",
                       model=model, base_image=base)


def _tags(host: str, repo: str) -> list[str]:
    client = RegistryClient(Reference.parse(f"{host}/{repo}"))
    resp = client.request("GET", f"/v2/{repo}/tags/list", scope=f"repository:{repo}:pull", ok=(200, 404))
    return sorted(resp.json().get("tags") or []) if resp.status_code == 200 else []


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_build_pushes_every_blob_once_and_skopeo_sees_the_image(registry, cache, tmp_path):
    base = push_base(registry, "base/py", _fake_python_root(tmp_path / "root"), cache)
    inputs = _inputs(tmp_path, base)
    first = build_image(inputs, f"{registry}/apps/iris", cache=cache)
    assert [x.name for x in first.layers] == ["base[0]", "environment:six==1.17.0", "runtime", "model", "code"]
    assert first.image == f"{registry}/apps/iris@{first.digest}" and first.tag == first.digest.replace(":", "-")
    # the base's layer is mounted from base/py (same registry): no bytes move; ours are uploaded
    assert [x.pushed for x in first.layers] == [False, True, True, True, True]

    if shutil.which("skopeo"):
        out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{first.image}"],
                             capture_output=True, text=True, check=True)
        seen = json.loads(out.stdout)
        assert seen["Digest"] == first.digest
        assert seen["Layers"] == [x.digest for x in first.layers]
        raw = subprocess.run(["skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{first.image}"],
                             capture_output=True, text=True, check=True)
        cfg = json.loads(raw.stdout)
        assert cfg["config"]["Entrypoint"] == ["python3", "-m", "deployctl_runtime.container"]
        assert "AZUREML_MODEL_DIR=/opt/deployctl/model" in cfg["config"]["Env"]

    again = build_image(inputs, f"{registry}/apps/iris", cache=cache)
    assert again.digest == first.digest and again.built == []
    assert not any(x.pushed for x in again.layers)

    (inputs.code / "score.py").write_text("def init(): pass\ndef run(raw): return 2\n")
    changed = build_image(inputs, f"{registry}/apps/iris", cache=cache)
    assert changed.digest != first.digest and changed.built == ["code"]
    assert [x.name for x in changed.layers if x.pushed] == ["code"]
    assert _tags(registry, "apps/iris") == sorted([first.tag, changed.tag])

    # a dependency change: one layer per distribution, so only the new one is built and pushed
    more = ImageInputs(**{**inputs.__dict__, "requirements": ("six==1.17.0", "idna==3.10")})
    dep = build_image(more, f"{registry}/apps/iris", cache=cache)
    assert dep.built == ["environment:idna==3.10"]
    assert [x.name for x in dep.layers if x.pushed] == ["environment:idna==3.10"]


def test_a_base_without_python_is_refused_and_nothing_is_tagged(registry, cache, tmp_path):
    root = tmp_path / "nopy"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=test\n")
    base = push_base(registry, "base/nopy", root, cache)
    with pytest.raises(UserError, match="has no Python"):
        build_image(_inputs(tmp_path, base), f"{registry}/apps/nopy", cache=cache)
    assert _tags(registry, "apps/nopy") == []
    other = push_base(registry, "base/py312", _fake_python_root(tmp_path / "r312", "3.12"), cache)
    with pytest.raises(UserError, match=r"has Python 3\.12, but environment\.python is 3\.11"):
        build_image(_inputs(tmp_path, other), f"{registry}/apps/nopy", cache=cache)


def test_an_unreachable_registry_is_one_clear_error(cache, tmp_path):
    with pytest.raises(TargetError, match=r"registry 127\.0\.0\.1:9 is unreachable"):
        build_image(_inputs(tmp_path, "127.0.0.1:9/base@sha256:" + "0" * 64), "127.0.0.1:9/apps/x", cache=cache)


def test_wrong_credentials_are_one_clear_error(cache, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt, as docker-registry's htpasswd wants

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"ci:{crypt.crypt('right', crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    with run_registry(tmp_path, htpasswd) as host:
        good = RegistryAuth("ci", "right")
        base = push_base(host, "base/py", _fake_python_root(tmp_path / "root"), cache, auth=good)
        with pytest.raises(TargetError, match="refused the credentials") as e:
            build_image(_inputs(tmp_path, base), f"{host}/apps/x", auth=RegistryAuth("ci", "wrong"), cache=cache)
        assert "wrong" not in str(e.value)
        assert build_image(_inputs(tmp_path, base), f"{host}/apps/x", auth=good, cache=cache).layers


def _local_only_wheel(folder: Path) -> Path:
    """A wheel for x86_64 Linux only (as many compiled packages publish)."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    name = "onlyhere-1.0"
    files = {"onlyhere.py": b"X = 1\n",
             f"{name}.dist-info/METADATA": b"Metadata-Version: 2.1\nName: onlyhere\nVersion: 1.0\n",
             f"{name}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-manylinux_2_17_x86_64\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
                     for p, d in files.items()) + f"{name}.dist-info/RECORD,,\n"
    path = folder / "onlyhere-1.0-py3-none-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, d in {**files, f"{name}.dist-info/RECORD": record.encode()}.items():
            z.writestr(p, d)
    return folder


def test_a_platform_without_a_wheel_for_a_pinned_package_is_one_clear_error(registry, cache, tmp_path):
    base = push_base(registry, "base/py", _fake_python_root(tmp_path / "root"), cache)
    wheels = _local_only_wheel(tmp_path / "wheels")
    inputs = _inputs(tmp_path, base)
    inputs = ImageInputs(**{**inputs.__dict__, "requirements": ("--no-index", f"--find-links {wheels}", "onlyhere==1.0"),
                                    "platform": "aarch64-manylinux_2_28"})
    with pytest.raises(UserError, match="cannot be installed for aarch64-manylinux_2_28") as e:
        build_image(inputs, f"{registry}/apps/nowheel", cache=cache)
    assert "onlyhere" in str(e.value)
    assert _tags(registry, "apps/nowheel") == []
