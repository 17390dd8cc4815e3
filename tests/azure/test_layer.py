"""orchestrator.azure's pure parts: typed errors, quota sums across targets, budgets in words."""

from __future__ import annotations

from types import SimpleNamespace

from orchestrator.azure import budgets, quota
from orchestrator.azure.errors import AzureForbidden, AzureNotFound, AzureOperationError, is_not_found, typed
from orchestrator.azure.ops import busy_answer
from orchestrator.plan import TargetPlan
from orchestrator.target import Finding, Severity


class FakeHttpError(Exception):  # the shape of azure-core's HttpResponseError
    def __init__(self, status: int, code: str | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.error = SimpleNamespace(code=code, message=f"status {status}")


def test_typed_errors_say_not_found_and_forbidden_without_walking_causes():
    nf = typed("gone", FakeHttpError(404, "ResourceNotFound"), target="t")
    assert isinstance(nf, AzureNotFound) and is_not_found(nf) and nf.status == 404 and nf.code == "ResourceNotFound"
    assert isinstance(typed("no", FakeHttpError(403)), AzureForbidden)
    busy = typed("busy", FakeHttpError(409, "Conflict"))
    assert type(busy) is AzureOperationError and not is_not_found(busy)
    assert is_not_found(FakeHttpError(404)) and not is_not_found(FakeHttpError(500))


def _plan(target: str, *demands: quota.QuotaDemand) -> TargetPlan:
    return TargetPlan(target=target, kind="online-endpoint", findings=[
        Finding(severity=Severity.info, message="quota", data=d.as_data()) for d in demands])


def _demand(required: int, held: int = 0, region: str = "eastus", family: str = "DSv2") -> quota.QuotaDemand:
    return quota.QuotaDemand("sub", region, family, required, held, current=0, limit=100)


def test_quota_is_summed_per_subscription_region_and_family():
    fits = [_plan(f"t{i}", _demand(6)) for i in range(16)]  # 96 of 100
    assert quota.fleet_findings(fits) == {}
    over = [_plan(f"t{i}", _demand(6)) for i in range(20)]  # 120 of 100: every target is told
    found = quota.fleet_findings(over)
    assert sorted(found) == sorted(f"t{i}" for i in range(20))
    assert "need 120 cores together" in found["t0"][0].message and found["t0"][0].severity is Severity.error
    # other regions or families are other quotas; what an update gives back counts
    mixed = [_plan(f"a{i}", _demand(6)) for i in range(10)] + [_plan(f"b{i}", _demand(6, region="westus"))
                                                              for i in range(10)]
    assert quota.fleet_findings(mixed) == {}
    updates = [_plan(f"t{i}", _demand(6, held=6)) for i in range(20)]
    assert quota.fleet_findings(updates) == {}


def test_busy_scoring_answers_are_retried_and_model_failures_are_not():
    assert busy_answer(429, None) and busy_answer(503, "x") and busy_answer(504, None)
    assert busy_answer(500, {"error": {"code": "InternalServerError"}})
    assert not busy_answer(500, {"message": "An unexpected error occurred in scoring script."})
    assert not busy_answer(502, {"message": "The scoring container could not start"}) and not busy_answer(400, None)


def test_budgets_say_what_they_allow():
    text = budgets.notes()
    assert text.startswith("retries: ") and "30 min" in text and "3 min" in text and "Updating" in text


def test_provider_usages_reads_any_providers_quota_rows_through_arm():
    from orchestrator.azure.arm import provider_usages
    from orchestrator.azure.simulator import AzureSimulator

    sim = AzureSimulator(strict=False)
    try:
        sim.set_quota("sub1", "eastus", "standardDSv2Family", 36)
        session = sim.session()
        rows = provider_usages(session, session.get_credential("sub1"), "sub1", "Microsoft.MachineLearningServices",
                               "East US", "2024-04-01")
        row = quota.usage_of(rows, "STANDARDDSV2FAMILY")
        assert row is not None and (row.current, row.limit, row.free) == (0, 36, 36)
    finally:
        sim.close()
