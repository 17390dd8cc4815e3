"""No bytecode in the image's layers: ``__pycache__`` and ``*.pyc`` depend on the interpreter and
(for timestamp-checked pycs) on when the sources were written, so a layer holding them would not
be reproducible.  Even when uv is asked to compile (``UV_COMPILE_BYTECODE=1``) and the runtime's
code folder holds stale pycs, the layers hold sources only, and two builds from empty
caches give the same image digest.  Pushed to the simulator's ACR (no registry tool needed)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from orchestrator.images.build import ImageInputs, build_image
from orchestrator.images.layers import blob_path
from orchestrator.images.registry import RegistryAuth

pytest.importorskip("azure.mgmt.containerregistry", reason="azure-mgmt-containerregistry is not installed (pip install 'deployctl[azure]')")

SUB = "00000000-0000-0000-0000-0000000000c1"


def _registry(sim) -> None:
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import Registry, Sku

    sim.add_resource_group(SUB, "rg")
    ContainerRegistryManagementClient(sim.credential, SUB, transport=sim.transport, polling_interval=0).registries.begin_create(
        "rg", "bytecodeacr", Registry(location="westeurope", sku=Sku(name="Standard"))).result()


def _members(cache: Path, digest: str) -> list[str]:
    with tarfile.open(blob_path(cache, digest), "r:gz") as tar:
        return tar.getnames()


def test_layers_hold_no_bytecode_and_two_builds_give_equal_digests(azure_simulator, tmp_path, monkeypatch):
    monkeypatch.setenv("UV_COMPILE_BYTECODE", "1")  # uv compiles what it installs: the layers must still not hold it
    (tmp_path / "src" / "__pycache__").mkdir(parents=True)
    (tmp_path / "src" / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (tmp_path / "src" / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"\xa7\r\r\n stale")
    (tmp_path / "src" / "helper.pyc").write_bytes(b"\xa7\r\r\n stale")
    inputs = ImageInputs(name="bc", python="3.11", requirements=("six==1.17.0",), code=tmp_path / "src", entry="score.py")

    _registry(azure_simulator)
    auth = RegistryAuth(credential=azure_simulator.credential)
    builds = []
    for n in (1, 2):  # empty layer caches each time: everything is rebuilt, uv installs again
        cache = tmp_path / f"cache{n}"
        built = build_image(inputs, "bytecodeacr.azurecr.io/apps/bc", auth=auth, transport=azure_simulator.transport,
                            cache=cache)
        builds.append(built)
        ours = [x for x in built.layers if not x.name.startswith("base[")]
        assert {x.name for x in ours} >= {"environment:six==1.17.0", "runtime", "code"}
        for layer in ours:
            names = _members(cache, layer.digest)
            assert names, layer.name
            assert not [m for m in names if "__pycache__" in m or m.endswith((".pyc", ".pyo"))], (layer.name, names)
        assert any(m.endswith("site-packages/six.py") for m in _members(cache, ours[0].digest))
    assert builds[0].digest == builds[1].digest
    assert [x.digest for x in builds[0].layers] == [x.digest for x in builds[1].layers]
