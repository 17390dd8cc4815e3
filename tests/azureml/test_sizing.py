"""orchestrator.sizing (requirement, choice), targets.azureml.catalog (the Azure ML catalog) and
orchestrator.azure.quota (quota arithmetic): pure, against the committed catalog."""

from __future__ import annotations

import pytest

from orchestrator import sizing
from orchestrator.azure import quota
from orchestrator.azure.quota import Usage
from orchestrator.sizing import GIB, SizingError
from targets.azureml import catalog as aml_catalog


@pytest.fixture(scope="module")
def catalog():
    return aml_catalog.load_catalog()


def test_catalog_is_consistent(catalog):
    names = [s.name for s in catalog.skus]
    assert len(names) == len(set(names))
    for s in catalog.skus:
        assert s.vcpus > 0 and s.memory_gib > 0 and s.relative_cost > 0 and s.family
        assert (s.gpus > 0) == (s.gpu_model is not None)
    assert catalog.reserve_fraction == 0.2
    assert catalog.get("standard_ds3_v2").name == "Standard_DS3_v2"


def test_small_model_gets_cheapest_managed_online_type_at_the_minimum(catalog):
    req = sizing.requirement(model_bytes=10 * 1024**2)
    choice = sizing.choose(req, catalog.candidates("managed-online"),
                           min_vcpus=catalog.min_vcpus, min_memory_gib=catalog.min_memory_gib)
    # 2 vCPU / 4 GiB floor: F2s_v2 (0.085) beats D2as_v4 (0.096) and DS2_v2 (0.146)
    assert choice.sku.name == "Standard_F2s_v2"
    assert "minimum" in choice.why and "cheapest" in choice.why


def test_big_model_and_torch_need_more_memory(catalog):
    req = sizing.requirement(model_bytes=6 * GIB, requirement_lines=["torch==2.3.0", "numpy"])
    # 1 + 1.5 + 6 * 2.5 = 17.5 GiB
    assert req.memory_gib == pytest.approx(17.5)
    assert any("torch" in r for r in req.reasons)
    choice = sizing.choose(req, catalog.candidates("managed-online"), min_vcpus=2, min_memory_gib=4)
    assert choice.sku.memory_gib >= 17.5
    assert choice.sku.name == "Standard_E4s_v3"  # 32 GiB at 0.252 beats D8as_v4 (0.384)


def test_explicit_numbers_and_gpu(catalog):
    req = sizing.requirement(model_bytes=0, cpu=4, memory_gib=20, gpu=1)
    choice = sizing.choose(req, catalog.candidates("any"))
    assert choice.sku.name == "Standard_NC4as_T4_v3"
    cpu_only = sizing.choose(sizing.requirement(model_bytes=0, cpu=4, memory_gib=20), catalog.candidates("any"))
    assert cpu_only.sku.gpus == 0


def test_nothing_fits(catalog):
    req = sizing.requirement(model_bytes=0, cpu=2, memory_gib=4000)
    with pytest.raises(SizingError, match="no instance type fits .*largest candidate"):
        sizing.choose(req, catalog.candidates("managed-online"))


def test_named_type_checks(catalog):
    req = sizing.requirement(model_bytes=0, cpu=1, memory_gib=10)
    with pytest.raises(SizingError, match="did you mean 'Standard_DS3_v2'"):
        aml_catalog.check_named("Standard_DS3v2", req, catalog, "managed-online")
    with pytest.raises(SizingError, match="not offered for managed online"):
        aml_catalog.check_named("Standard_D2_v3", req, catalog, "managed-online")
    sku, warnings = aml_catalog.check_named("Standard_DS1_v2", req, catalog, "managed-online")
    assert sku.vcpus == 1
    assert any("too small" in w for w in warnings) and any("minimum" in w for w in warnings)


@pytest.mark.parametrize(("count", "vcpus", "expected"), [(1, 4, 8), (2, 4, 12), (3, 2, 8), (5, 4, 24), (10, 2, 24)])
def test_managed_online_reserves_twenty_percent(count, vcpus, expected):
    assert quota.cores_required(count, vcpus, reserve_fraction=0.2) == expected


def test_quota_shortfall_message_has_the_numbers():
    msg = quota.quota_shortfall(12, Usage("standardDSv2Family", current=90, limit=100))
    assert msg == "needs 12 standardDSv2Family cores but only 10 are available (quota 100, in use 90)"
    assert quota.quota_shortfall(10, Usage("f", 90, 100)) is None
    assert quota.quota_shortfall(10, None) is None
