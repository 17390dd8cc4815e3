"""The App Service plan choice and start time limit: pure functions of the config and the model."""

from __future__ import annotations

import re

import pytest

from targets.web.appservice_config import AppServiceConfig, choose_plan, start_time_limit

SUB = "00000000-0000-0000-0000-0000000000b1"


def cfg(**kw: object) -> AppServiceConfig:
    return AppServiceConfig(name="prod", subscription=SUB, resource_group="rg", region="westeurope", **kw)


@pytest.mark.parametrize(("gib", "cpu", "kw", "sku", "slot"), [
    (1.0, 1, {}, "P0v3", True),                      # cheaper than S1 and holds more
    (5.0, 1, {}, "P1v3", True),
    (6.0, 4, {}, "P2v3", True),                      # 4 vCPU: P2v3 is cheaper than S3
    (20.0, 1, {}, "P3v3", True),
    (1.0, 1, {"staging_slot": False}, "B1", False),  # no slots wanted: Basic
    (3.0, 2, {"staging_slot": False}, "B2", False),
    (1.0, 1, {"sku": "B3"}, "B3", False),            # a Basic plan named: in place
    (1.0, 1, {"sku": "S2"}, "S2", True),
])
def test_the_cheapest_plan_that_fits(gib, cpu, kw, sku, slot):
    choice = choose_plan(cfg(**kw), gib, cpu)
    assert (choice.sku.name, choice.slot) == (sku, slot)
    assert sku in choice.why


@pytest.mark.parametrize(("kw", "gib", "message"), [
    ({"sku": "B1", "staging_slot": True}, 1.0, "Basic tier (B1) has no deployment slots"),
    ({"sku": "S1"}, 3.0, "over the 1.75 GiB / 1 vCPU of S1"),
    ({}, 40.0, "over the largest App Service plan"),
])
def test_what_cannot_be_had_is_one_clear_error(kw, gib, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        choose_plan(cfg(**kw), gib, 1)


def test_start_limit_grows_with_the_measured_start_and_the_model():
    assert start_time_limit(cfg(), None, 10 << 20)[0] == 230          # small model, nothing measured: the default
    assert start_time_limit(cfg(), None, 6 << 30)[0] == 480           # 6 GiB: 120 s + 60 s/GiB, whole minutes
    assert start_time_limit(cfg(), 150.0, 0) == (540, "3 x the measured init() of 150.0 s + 60 s")
    assert start_time_limit(cfg(), 5000.0, 0)[0] == 1800              # App Service's ceiling
    assert start_time_limit(cfg(start_time_limit_s=900), 5000.0, 0) == (900, "named in the manifest")
