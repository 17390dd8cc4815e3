"""The function app package: built here by uv --target for the Functions platform, zipped
deterministically, content-addressed, size-checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from orchestrator.errors import TargetError
from targets.web import package
from tests.functions.conftest import EXAMPLE, stage


def test_zip_is_deterministic_and_holds_only_what_runs(tmp_path):
    src = stage(tmp_path)
    (src / "code" / "__pycache__").mkdir()
    (src / "code" / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"junk")
    a = package.zip_package(src, tmp_path / "a.zip")
    b = package.zip_package(src, tmp_path / "b.zip")
    assert a.sha256 == b.sha256 and a.size == b.size
    names = zipfile.ZipFile(a.path).namelist()
    assert sorted(names) == sorted(["code/score.py", "deployctl_function.json", "deployctl_runtime/__init__.py",
                                    "deployctl_runtime/contract.py", "function_app.py", "host.json",
                                    "model/model/weights.json"])


def test_host_json_poisons_after_the_apps_own_last_attempt(tmp_path):
    import json

    doc = json.loads((stage(tmp_path, max_attempts=4) / "host.json").read_text())
    assert doc["extensions"]["queues"]["maxDequeueCount"] == 5
    assert doc["version"] == "2.0" and doc["extensionBundle"]["version"] == "[4.*, 5.0.0)"


def test_a_package_over_the_limit_is_refused_before_upload(tmp_path):
    src = stage(tmp_path)
    with pytest.raises(TargetError, match="over the 0 MiB limit"):
        package.zip_package(src, tmp_path / "big.zip", limit=100)
    assert not (tmp_path / "big.zip").exists()


def test_input_digest_changes_with_code_and_not_without(tmp_path):
    code = tmp_path / "src"
    shutil.copytree(EXAMPLE / "src", code)
    kw = dict(model_path=EXAMPLE / "model", requirements=["numpy"], python="3.11", config={"entry": "score.py"})
    d1 = package.input_digest(code_dir=code, **kw)
    assert package.input_digest(code_dir=code, **kw) == d1
    (code / "score.py").write_text((code / "score.py").read_text() + "\n# changed\n")
    assert package.input_digest(code_dir=code, **kw) != d1
    assert package.input_digest(code_dir=EXAMPLE / "src", **{**kw, "requirements": ["numpy==2.0"]}) != \
        package.input_digest(code_dir=EXAMPLE / "src", **kw)


@pytest.mark.slow
def test_uv_target_builds_manylinux_site_packages_once_and_the_app_runs_with_them(tmp_path):
    """azure-functions (and the user's requirements) installed for x86_64-manylinux / 3.11 into
    .python_packages; a second build of the same requirements is the cached folder."""
    cache = tmp_path / "cache"
    try:
        sp = package.site_packages(list(package.host_requirements("queue")), "3.11", cache)
    except TargetError as e:  # no package index reachable
        pytest.skip(f"uv could not install from the package index: {e}")
    assert (sp / "azure" / "functions" / "__init__.py").exists()
    assert package.site_packages(list(package.host_requirements("queue")), "3.11", cache) == sp
    pkg = package.stage(tmp_path / "pkg", code_dir=EXAMPLE / "src", model_path=EXAMPLE / "model",
                        config=package.app_config("score.py", 3, {}), site_packages_dir=sp)
    # the package's own azure-functions, not the test venv's: the app imports from .python_packages
    code = ("import sys; sys.path[:0] = [sys.argv[1] + '/.python_packages/lib/site-packages', sys.argv[1]];"
            "import function_app, azure.functions as f; print(f.__file__); "
            "print(function_app.score(b'{\"data\": [[5.1, 3.5, 1.4, 0.2]]}').decode())")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(pkg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    where, answer = out.stdout.strip().splitlines()[-2:]  # after what init() prints
    assert ".python_packages" in where and answer == '["setosa"]'
