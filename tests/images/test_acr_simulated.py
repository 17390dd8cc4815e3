"""ACR through the real SDK clients against the Azure simulator: build_image pushes to a
simulated <name>.azurecr.io (token exchange with the Entra ID credential), listCredentials gives
admin credentials that work, and importImage promotes the image by digest to a registry in
another subscription, with no byte through this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import TargetError, UserError
from orchestrator.images.build import ImageInputs, build_image
from orchestrator.images.promote import promote_image, registry_id
from orchestrator.images.registry import Reference, RegistryAuth, RegistryClient
from tests.images.conftest import push_base

pytest.importorskip("azure.mgmt.containerregistry", reason="azure-mgmt-containerregistry is not installed (pip install 'deployctl[azure]')")

DEV, PROD = "00000000-0000-0000-0000-0000000000d1", "00000000-0000-0000-0000-0000000000f1"


def _registry(sim, sub: str, name: str, admin: bool = False):
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import Registry, Sku

    sim.add_resource_group(sub, "rg")
    client = ContainerRegistryManagementClient(sim.credential, sub, transport=sim.transport, polling_interval=0)
    reg = client.registries.begin_create("rg", name, Registry(location="westeurope", sku=Sku(name="Standard"),
                                                              admin_user_enabled=admin)).result()
    return client, reg


def _inputs(tmp: Path, base: str) -> ImageInputs:
    (tmp / "src").mkdir()
    (tmp / "src" / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (tmp / "model.bin").write_bytes(b"w" * 512)
    return ImageInputs(name="acr", python="3.11", requirements=("six==1.17.0",), code=tmp / "src", entry="score.py",
                       model=tmp / "model.bin", base_image=base)


def _pythonish_root(tmp: Path) -> Path:
    (tmp / "root" / "usr" / "bin").mkdir(parents=True)
    (tmp / "root" / "usr" / "bin" / "python3.11").write_text("")
    return tmp / "root"


def test_build_pushes_to_acr_with_token_exchange_and_promotes_by_digest(azure_simulator, tmp_path):
    sim = azure_simulator
    _, dev = _registry(sim, DEV, "devacr")
    _, prod = _registry(sim, PROD, "prodacr")
    assert dev.login_server == "devacr.azurecr.io"
    aad = RegistryAuth(credential=sim.credential)
    base = push_base("devacr.azurecr.io", "base/py", _pythonish_root(tmp_path), tmp_path / "c", auth=aad,
                     transport=sim.transport)
    built = build_image(_inputs(tmp_path, base), "devacr.azurecr.io/apps/iris", auth=aad, transport=sim.transport,
                        cache=tmp_path / "cache")
    assert [x.pushed for x in built.layers] == [False, True, True, True, True]  # the base is mounted
    assert any(r.path == "/oauth2/exchange" for r in sim.requests)

    promoted = promote_image(sim.session(), built.image, source_registry_id=registry_id(DEV, "rg", "devacr"),
                             subscription=PROD, resource_group="rg", registry="prodacr")
    assert promoted == f"prodacr.azurecr.io/apps/iris@{built.digest}"
    prod_client = RegistryClient(Reference.parse("prodacr.azurecr.io/apps/iris"), auth=aad, transport=sim.transport)
    data, _, digest = prod_client.get_manifest("apps/iris", built.tag)
    assert digest == built.digest
    # every blob came along: the image is complete in prod
    assert all(prod_client.blob_exists("apps/iris", x.digest) for x in built.layers)
    uploads_to_prod = [r for r in sim.requests if r.host == "prodacr.azurecr.io" and r.method in ("PUT", "POST")
                       and "/blobs/" in r.path]
    assert uploads_to_prod == []


def test_admin_credentials_from_list_credentials_work_and_wrong_ones_are_a_clear_401(azure_simulator, tmp_path):
    client, reg = _registry(azure_simulator, DEV, "adminacr", admin=True)
    creds = client.registries.list_credentials("rg", "adminacr")
    good = RegistryAuth(creds.username, creds.passwords[0].value)
    ref = Reference.parse("adminacr.azurecr.io/apps/x")
    rc = RegistryClient(ref, auth=good, transport=azure_simulator.transport)
    assert rc.blob_exists("apps/x", "sha256:" + "0" * 64) is False
    bad = RegistryClient(ref, auth=RegistryAuth(creds.username, "nope"), transport=azure_simulator.transport)
    with pytest.raises(TargetError, match="refused the credentials"):
        bad.blob_exists("apps/x", "sha256:" + "0" * 64)


def test_promoting_an_image_the_source_lacks_fails_clearly(azure_simulator):
    _registry(azure_simulator, DEV, "devacr")
    _registry(azure_simulator, PROD, "prodacr")
    with pytest.raises(TargetError, match="not found"):
        promote_image(azure_simulator.session(), "devacr.azurecr.io/apps/none@sha256:" + "1" * 64,
                      source_registry_id=registry_id(DEV, "rg", "devacr"), subscription=PROD, resource_group="rg",
                      registry="prodacr")


def _context(tmp: Path, dockerfile: str) -> Path:
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "score.py").write_text("def init(): pass\n")
    return ctx


def test_a_dockerfile_is_built_by_acr_tasks_with_its_log_streamed(azure_simulator, tmp_path):
    pytest.importorskip("azure.mgmt.containerregistrytasks")
    from orchestrator.images.acrtasks import build_context, build_with_acr_tasks

    _registry(azure_simulator, DEV, "devacr")
    ctx = _context(tmp_path, "FROM python:3.11-slim\nCOPY score.py /app/\nCMD [\"python3\"]\n")
    assert build_context(ctx, "Dockerfile") == build_context(ctx, "Dockerfile")  # reproducible: the tag is its digest
    said: list[str] = []
    built = build_with_acr_tasks(azure_simulator.session(), subscription=DEV, resource_group="rg", registry="devacr",
                                 context=ctx, dockerfile="Dockerfile", repository="apps/custom", progress=said.append,
                                 poll_s=5)
    assert built.status == "Succeeded" and built.image.startswith("devacr.azurecr.io/apps/custom:ctx-")
    assert "Step 2/3 : COPY score.py /app/" in said and said.count("Step 1/3 : FROM python:3.11-slim") == 1
    ops = [r.operation for r in azure_simulator.requests]
    assert "Registries_GetBuildSourceUploadUrl" in ops and "Registries_ScheduleRun" in ops
    assert [r.host for r in azure_simulator.requests if r.method == "PUT" and ".blob." in r.host]  # context uploaded


def test_a_failed_acr_tasks_run_is_one_error_with_the_log_tail(azure_simulator, tmp_path):
    pytest.importorskip("azure.mgmt.containerregistrytasks")
    from orchestrator.images.acrtasks import build_with_acr_tasks

    _registry(azure_simulator, DEV, "devacr")
    ctx = _context(tmp_path, "RUN echo no base\n")
    with pytest.raises(TargetError, match=r"ended Failed:[\s\S]*first instruction must be FROM"):
        build_with_acr_tasks(azure_simulator.session(), subscription=DEV, resource_group="rg", registry="devacr",
                             context=ctx, dockerfile="Dockerfile", repository="apps/custom", poll_s=5)
    with pytest.raises(UserError, match="Missing.Dockerfile not found"):
        build_with_acr_tasks(azure_simulator.session(), subscription=DEV, resource_group="rg", registry="devacr",
                             context=ctx, dockerfile="Missing.Dockerfile", repository="apps/custom")
