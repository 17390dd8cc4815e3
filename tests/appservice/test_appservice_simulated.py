"""The ``app-service`` target end to end: the real azure-mgmt-web (and registry) clients, Kudu zip
deploys and deployctl's image builder against the Azure simulator, whose web apps really run the
deployed package or image through deployctl's runtime.  Nothing of deployctl is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.target import InvokeRequest
from tests.aci import scenarios
from tests.appservice import scenarios as app_scenarios

pytest.importorskip("azure.mgmt.web", reason="the Azure SDKs are not installed (pip install 'deployctl[azure]')")

SUB = "00000000-0000-0000-0000-0000000000b1"
IDENTITY = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pull"
CLIENT_ID = "5f1b0c8e-0000-4000-8000-00000000c11d"
PRINCIPAL = "0d1e2f3a-0000-4000-8000-0000000000a1"
DEVACR = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/devacr"
MANIFEST = """\
apiVersion: deployctl/v1
name: iris
model:
  path: ./model
environment:
  python: "3.11"
{image}code:
  path: ./src
  entry: score.py
scoring:
  type: real-time
  sample_request: ./sample.json
targets:
  - name: prod
    kind: app-service
    subscription: {sub}
    resource_group: rg
    region: westeurope
{extra}"""
SCORE = scenarios.SCORE
BROKEN = app_scenarios.BROKEN


@pytest.fixture
def project(tmp_path, azure_simulator):
    azure_simulator.add_resource_group(SUB, "rg", "westeurope")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.txt").write_text("w1\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(SCORE.format(version=1))
    (tmp_path / "sample.json").write_text('{"data": [[1, 2, 3, 4]]}')

    def write(image: str = "", **extra: object) -> Path:
        lines = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in extra.items())
        path = tmp_path / "deployctl.yaml"
        path.write_text(MANIFEST.format(sub=SUB, image=f"  image: {image}\n" if image else "", extra=lines))
        return path

    return write


def engine(path: Path, sim, **opts):
    return scenarios.engine(path, sim.session(), sim.clock.sleep, **opts)


def apply(path: Path, sim, destroy: bool = False, **opts):
    return scenarios.apply(path, sim.session(), sim.clock.sleep, destroy=destroy, **opts)


def score(path: Path, sim, body=None):
    return engine(path, sim).invoke("prod", InvokeRequest(body=body or {"data": [[1, 2], [3, 4]]}))


def sites(sim) -> dict[str, dict]:
    """Web apps and slots by host label (a slot's is <app>-<slot>)."""
    return {str(r["properties"]["defaultHostName"]).split(".")[0]: r for r in sim.state["resources"].values()
            if r.get("type", "").lower().startswith("microsoft.web/sites")}


def error_of(result) -> str:
    return json.dumps(result.model_dump(mode="json"))


def test_package_create_score_noop_code_change_through_slot_and_destroy(project, azure_simulator):
    sim = azure_simulator
    path = project(run="package")
    plan = engine(path, sim).plan()
    findings = " ".join(f.message for f in plan.targets[0].findings)
    assert "plan: P0v3" in findings and "staging slot" in findings and "westeurope offers PremiumV3" in findings
    assert "start time limit 230 s" in findings
    _, result = apply(path, sim)
    assert result.ok, error_of(result)
    creates = {r.operation: r.status for r in sim.requests if r.method == "PUT" and "Microsoft.Web/" in r.path
               and r.operation.endswith(("CreateOrUpdate", "CreateOrUpdateSlot"))}
    assert creates == {"AppServicePlans_CreateOrUpdate": 202, "WebApps_CreateOrUpdate": 202,
                       "WebApps_CreateOrUpdateSlot": 202}, creates  # as Microsoft.Web answers a create
    out = result.targets[0].outputs
    assert out["scoring_uri"] == "https://iris-prod.azurewebsites.net/score" and out["plan_sku"] == "P0v3"
    assert result.targets[0].smoke_test.passed and result.targets[0].smoke_test.status == 200
    answer = score(path, sim)
    assert answer.ok and answer.body == {"weights": "w1", "n": 2, "version": 1}, answer
    site = sites(sim)["iris-prod"]
    conf = site["properties"]["siteConfig"]
    assert conf["appCommandLine"] == "python -m deployctl_runtime.container" and conf["linuxFxVersion"] == "PYTHON|3.11"
    assert conf["alwaysOn"] is True and conf["healthCheckPath"] == "/"
    assert site["_appsettings"]["WEBSITE_RUN_FROM_PACKAGE"] == "1"
    assert site["_appsettings"]["SCM_DO_BUILD_DURING_DEPLOYMENT"] == "false"
    key = (path.parent / ".state").rglob("scoring-key").__next__().read_text()
    assert key not in json.dumps([s.model_dump(mode="json") for s in engine(path, sim).status()])
    from orchestrator.azure.scoring import score as raw_score

    assert raw_score(sim.session(), out["scoring_uri"], "wrong", {"data": [[1]]})[0] == 401
    log = engine(path, sim).logs("prod", tail=50)
    assert "ready" in log.lower() and key not in log  # the runtime's own log, through Kudu
    reads = len(sim.requests)
    again = engine(path, sim).plan()
    assert not again.has_changes and not any("offers" in f.message for f in again.targets[0].findings)
    assert not [r for r in sim.requests[reads:] if "geoRegions" in r.path]  # no pre-write checks without writes
    app_scenarios.blue_green(path, sim.session(), sim.clock.sleep)  # no-op, code change via slot + swap, failure
    from orchestrator.azure.http import request_json

    slot = request_json(sim.session(), "POST", "https://iris-prod-staging.azurewebsites.net/score",
                        headers={"Authorization": f"Bearer {key}"}, body={"data": [[1]]})
    assert slot[0] == 503 and "model file is corrupt" in str(slot[1])  # the failing version stayed on the slot
    _, result = apply(path, sim, destroy=True)
    assert result.ok, error_of(result)
    assert sites(sim) == {}


def test_basic_tier_replaces_in_place_and_restores_the_previous_package(project, azure_simulator):
    sim = azure_simulator
    path = project(run="package", sku="B1")
    plan = engine(path, sim).plan()
    assert any("no blue/green (the Basic tier has no deployment slots)" in f.message for f in plan.targets[0].findings)
    assert apply(path, sim)[1].ok
    assert score(path, sim).body["version"] == 1
    (path.parent / "src" / "score.py").write_text(BROKEN)
    _, result = apply(path, sim)
    assert not result.ok and "previous version" in error_of(result) and "is back" in error_of(result)
    assert score(path, sim).body["version"] == 1  # the rollback package serves again
    assert not [n for n in sites(sim) if "staging" in n]


def test_a_slot_asked_on_a_basic_plan_is_one_clear_error(project, azure_simulator):
    path = project(run="package", sku="B2", staging_slot=True)
    plan = engine(path, azure_simulator).plan()
    assert "Basic tier (B2) has no deployment slots" in (plan.targets[0].error or ""), plan.to_json()
    assert sites(azure_simulator) == {}


def test_a_start_command_that_exits_and_a_port_the_app_does_not_listen_on(project, azure_simulator):
    sim = azure_simulator
    path = project(run="package", sku="B1", startup_command="gunicorn app:app")
    _, result = apply(path, sim)
    assert not result.ok and "startup command exited" in error_of(result)
    assert "deployctl_runtime.container" in error_of(result)  # the hint
    assert "startup command exited" in engine(path, sim).logs("prod")
    path = project(run="package", sku="B1", app_settings={"PORT": "9000"})
    _, result = apply(path, sim)
    assert not result.ok and "pings on port: 8000" in error_of(result)


def test_a_region_without_the_tier_is_refused_before_any_write(project, azure_simulator):
    sim = azure_simulator
    from orchestrator.azure.simulator.providers.appservice import settings

    settings(sim)["unavailable"]["westeurope"] = ["PremiumV3"]
    path = project(run="package")
    _, result = apply(path, sim)
    assert not result.ok and "does not offer PremiumV3" in error_of(result)
    assert sites(sim) == {}


def test_the_subscriptions_app_service_cores_quota_is_checked_before_any_write(project, azure_simulator):
    """GetUsagesInLocation: another app's P1v3 (2 cores) of a 2-core quota leaves none for this plan."""
    from orchestrator.azure.simulator.providers.appservice import settings

    sim = azure_simulator
    sim.put_resource(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Web/serverfarms/other-plan",
                     {"sku": {"name": "P1v3", "tier": "PremiumV3", "capacity": 1}, "kind": "linux"}, location="West Europe")
    settings(sim)["core_limit"] = 2
    path = project(run="package")
    plan = engine(path, sim).plan()
    [error] = [f for f in plan.targets[0].findings if f.severity == "error"]
    assert error.message == ("quota in westeurope: the P0v3 plan needs 1 App Service cores but only 0 are available "
                             "(quota 2, in use 2)"), error.message
    _, result = apply(path, sim)
    assert not result.ok and sites(sim) == {}
    assert {r["name"] for r in sim.state["resources"].values() if r["type"] == "Microsoft.Web/serverfarms"} == {"other-plan"}
    settings(sim)["core_limit"] = 3
    plan = engine(path, sim).plan()
    assert any(f.message == "App Service cores in westeurope: 1 needed, 1 free (quota 3)" for f in plan.targets[0].findings)
    assert apply(path, sim)[1].ok


@pytest.fixture
def base_image(azure_simulator, tmp_path):
    """devacr with a tiny base image (Python 3.11 announced, no interpreter needed: the simulator
    runs the image's layers with a local Python of that version)."""
    pytest.importorskip("azure.mgmt.containerregistry", reason="the Azure SDKs are not installed")
    from orchestrator.images.registry import RegistryAuth
    from tests.aci.test_aci_simulated import _registry
    from tests.images.conftest import push_base

    sim = azure_simulator
    _registry(sim, SUB, "devacr")
    root = tmp_path / "base-root" / "usr" / "local" / "bin"
    root.mkdir(parents=True)
    (root / "python3.11").write_text("")
    return push_base("devacr.azurecr.io", "base/python", tmp_path / "base-root", tmp_path / "base-cache",
                     env=["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION=3.11.9"],
                     auth=RegistryAuth(credential=sim.credential), transport=sim.transport)


def _grant_acr_pull(sim, principal: str, registry: str) -> str:
    """What the user does for an identity they name: AcrPull on their registry (the real client)."""
    from orchestrator.azure import roles

    scope = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/{registry}"
    return roles.assign(sim.session(), SUB, scope, principal, roles.ACR_PULL, description="granted by hand")


def role_assignments(sim) -> list[dict]:
    from orchestrator.azure.simulator.providers.authorization import assignments

    return assignments(sim)


def test_image_by_digest_pulled_with_the_identity_blue_green_and_a_registry_it_cannot_pull(project, azure_simulator,
                                                                                           base_image):
    sim = azure_simulator
    path = project(image=base_image, registry="devacr", identity=IDENTITY)
    plan = engine(path, sim).plan()
    assert any(f.severity == "error" and f"identity {IDENTITY} does not exist" in f.message
               for f in plan.targets[0].findings), plan.to_json()
    sim.put_resource(IDENTITY, {"location": "westeurope", "properties": {"clientId": CLIENT_ID, "principalId": PRINCIPAL}},
                     location="westeurope")
    # named identity, no AcrPull on the registry: the plan warns, the pull fails with one clear error
    plan, result = apply(path, sim)
    assert any(f.severity == "warning" and "identity pull holds no AcrPull" in f.message and "devacr" in f.message
               for f in plan.targets[0].findings), plan.to_json()
    assert not result.ok and "image pull failed" in error_of(result) and "no AcrPull role on devacr.azurecr.io" \
        in error_of(result) and "give the identity the AcrPull role" in error_of(result), error_of(result)
    assert "nothing was swapped into production" in error_of(result)  # a first version: there is no previous one
    granted = _grant_acr_pull(sim, PRINCIPAL, "devacr")
    plan, result = apply(path, sim)
    assert result.ok, error_of(result)
    assert not any("holds no AcrPull" in f.message for f in plan.targets[0].findings)
    assert [a["name"] for a in role_assignments(sim)] == [granted]  # a named pair: deployctl grants nothing
    site = sites(sim)["iris-prod"]
    fx = site["properties"]["siteConfig"]["linuxFxVersion"]
    assert fx.startswith("DOCKER|devacr.azurecr.io/deployctl/iris@sha256:")
    assert site["properties"]["siteConfig"]["acrUseManagedIdentityCreds"] is True
    assert site["properties"]["siteConfig"]["acrUserManagedIdentityID"] == CLIENT_ID  # the client id, as Azure takes it
    assert site["_appsettings"]["WEBSITES_PORT"] == "8000" and "WEBSITE_RUN_FROM_PACKAGE" not in site["_appsettings"]
    assert score(path, sim).body == {"weights": "w1", "n": 2, "version": 1}
    assert not apply(path, sim)[0].has_changes
    (path.parent / "src" / "score.py").write_text(SCORE.format(version=2))
    _, result = apply(path, sim)
    assert result.ok, error_of(result)
    assert score(path, sim).body["version"] == 2
    new_fx = sites(sim)["iris-prod"]["properties"]["siteConfig"]["linuxFxVersion"]
    assert new_fx != fx and sites(sim)["iris-prod-staging"]["properties"]["siteConfig"]["linuxFxVersion"] == fx
    # the identity loses AcrPull: the next version cannot be pulled on the slot, production keeps serving
    from orchestrator.azure import roles

    roles.delete(sim.session(), SUB, f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/"
                 "registries/devacr", granted)
    (path.parent / "src" / "score.py").write_text(SCORE.format(version=3))
    _, result = apply(path, sim)
    assert not result.ok and "image pull failed" in error_of(result) and "AcrPull" in error_of(result)
    assert score(path, sim).body["version"] == 2
    destroyed = apply(path, sim, destroy=True)[1]
    assert destroyed.ok, error_of(destroyed)
    assert sim.get(IDENTITY) is not None and sim.get(DEVACR) is not None  # the user's: left alone


def test_minimal_manifest_runs_the_image_through_a_registry_identity_and_acrpull_deployctl_makes(project,
                                                                                                 azure_simulator):
    """subscription, resource_group and region only: deployctl makes the registry, a user-assigned
    identity and its AcrPull assignment (owned, tagged), the app pulls with it; a second apply
    changes nothing (no second assignment); destroy removes all of it."""
    from orchestrator.azure.simulator.providers.authorization import settings as auth_settings

    sim = azure_simulator
    auth_settings(sim)["replication_puts"] = 2  # the new identity is not visible to ARM at once
    path = project()
    plan = engine(path, sim).plan()
    creates = {c.type for c in plan.targets[0].changes if c.action == "create"}
    assert {"container-registry", "managed-identity", "role-assignment"} <= creates, plan.to_json()
    summary = " ".join(f.message for f in plan.targets[0].findings)
    assert "identity iris-prod-pull (created by deployctl)" in summary and "AcrPull role assignment" in summary
    eng, result = apply(path, sim)
    assert result.ok, error_of(result)
    ident = sim.get(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
                    "userAssignedIdentities/iris-prod-pull")
    assert ident is not None and ident["tags"]["deployctl-target"] == "prod"
    registry = next(r for r in sim.state["resources"].values()
                    if r.get("type", "").lower() == "microsoft.containerregistry/registries")
    assert registry["name"].startswith("irisprod") and registry["tags"]["deployctl-manifest"] == "iris"
    [grant] = role_assignments(sim)
    assert grant["properties"]["principalId"] == ident["properties"]["principalId"]
    assert grant["properties"]["roleDefinitionId"].endswith("/7f951dda-4ed3-4680-a7ca-43fe172d538d")
    assert grant["properties"]["scope"].lower() == registry["id"].lower()
    assert auth_settings(sim)["seen"][ident["properties"]["principalId"].lower()] == 2  # 2 PrincipalNotFound, retried
    site = sites(sim)["iris-prod"]
    conf = site["properties"]["siteConfig"]
    assert conf["linuxFxVersion"].startswith(f"DOCKER|{registry['name']}.azurecr.io/deployctl/iris@sha256:")
    assert conf["acrUserManagedIdentityID"] == ident["properties"]["clientId"]
    assert score(path, sim).body == {"weights": "w1", "n": 2, "version": 1}
    again, result = apply(path, sim)
    assert result.ok and not again.has_changes, again.to_json()
    assert len(role_assignments(sim)) == 1
    destroyed = apply(path, sim, destroy=True)[1]
    assert destroyed.ok, error_of(destroyed)
    assert role_assignments(sim) == [] and sites(sim) == {}
    assert not [r for r in sim.state["resources"].values() if r.get("type", "").lower() in (
        "microsoft.containerregistry/registries", "microsoft.managedidentity/userassignedidentities",
        "microsoft.web/serverfarms")]


def test_a_pull_grant_made_by_hand_under_another_name_is_the_state_wanted(project, azure_simulator):
    """The named identity's AcrPull on deployctl's registry, replaced by hand with an identical
    grant under another name: the plan is a no-op (not a create on every run), and destroy
    succeeds (deleting deployctl's assignment by its own name finds none; the registry's deletion
    takes the grants on it, as on Azure)."""
    import uuid

    from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters

    from orchestrator.azure import roles

    sim = azure_simulator
    sim.put_resource(IDENTITY, {"location": "westeurope", "properties": {"clientId": CLIENT_ID, "principalId": PRINCIPAL}},
                     location="westeurope")
    path = project(identity=IDENTITY)
    assert apply(path, sim)[1].ok
    [ours] = role_assignments(sim)
    scope = ours["properties"]["scope"]
    roles.delete(sim.session(), SUB, scope, ours["name"])
    by_hand = str(uuid.uuid4())
    roles.client(sim.session(), SUB).role_assignments.create(scope, by_hand, RoleAssignmentCreateParameters(
        role_definition_id=roles.role_definition_id(SUB, roles.ACR_PULL), principal_id=PRINCIPAL,
        principal_type="ServicePrincipal"))
    again, result = apply(path, sim)
    assert result.ok and not again.has_changes, again.to_json()
    assert [a["name"] for a in role_assignments(sim)] == [by_hand]
    assert score(path, sim).body == {"weights": "w1", "n": 2, "version": 1}
    destroyed = apply(path, sim, destroy=True)[1]
    assert destroyed.ok, error_of(destroyed)


def _pull_resources(sim) -> list[str]:
    return sorted(r["type"] for r in sim.state["resources"].values() if r.get("type", "").lower() in (
        "microsoft.containerregistry/registries", "microsoft.managedidentity/userassignedidentities",
        "microsoft.authorization/roleassignments"))


def test_switching_to_run_package_deletes_the_registry_identity_and_role_deployctl_made(project, azure_simulator):
    sim = azure_simulator
    assert apply(project(), sim)[1].ok
    assert len(_pull_resources(sim)) == 3
    plan, result = apply(project(run="package"), sim)
    deletes = {c.type for c in plan.targets[0].changes if c.action == "delete"}
    assert deletes == {"container-registry", "managed-identity", "role-assignment"}, plan.to_json()
    assert result.ok, error_of(result)
    assert _pull_resources(sim) == []
    assert score(project(run="package"), sim).body == {"weights": "w1", "n": 2, "version": 1}


def test_a_principal_that_never_replicates_fails_with_the_reason(project, azure_simulator):
    from orchestrator.azure.simulator.providers.authorization import settings as auth_settings

    sim = azure_simulator
    auth_settings(sim)["replication_puts"] = 10_000
    _, result = apply(project(), sim)
    assert not result.ok and "PrincipalNotFound" in error_of(result), error_of(result)
    assert sites(sim) == {}  # the app never came: it would have pulled with an identity without AcrPull


def test_production_failing_after_the_swap_is_swapped_back(project, azure_simulator):
    sim = azure_simulator
    path = project(run="package")
    assert apply(path, sim)[1].ok
    from orchestrator.azure.simulator.providers.appservice import settings

    (path.parent / "src" / "score.py").write_text(SCORE.format(version=2))
    settings(sim)["unhealthy"].append("iris-prod")  # production's instances fail; the slot's are fine
    _, result = apply(path, sim)
    assert not result.ok and "swapped back to the previous version" in error_of(result)
    settings(sim)["unhealthy"].clear()
    assert score(path, sim).body["version"] == 1  # the previous version is production again
    assert sites(sim)["iris-prod-staging"]["properties"]["siteConfig"]["linuxFxVersion"] == "PYTHON|3.11"
    (path.parent / "src" / "score.py").write_text(SCORE.format(version=3))
    _, result = apply(path, sim)  # the next apply rolls out again (the failed version was not recorded)
    assert result.ok, error_of(result)
    assert score(path, sim).body["version"] == 3


SLOW_INIT = ("import json, os, time\n\ndef init():\n    time.sleep(1.5)  # a model that takes a while to load\n\n"
             "def run(raw):\n    return {'n': len(json.loads(raw)['data'])}\n")


def test_the_start_time_limit_is_sized_from_the_init_time_the_runtime_measured(project, azure_simulator):
    """The runtime reports its init() seconds on the health answer; the target keeps that (not the
    deploy-to-healthy time, which adds the pull, the package and the process start) for the next plan."""
    sim = azure_simulator
    (project().parent / "src" / "score.py").write_text(SLOW_INIT)
    path = project(run="package")
    _, result = apply(path, sim)
    assert result.ok, error_of(result)
    out = result.targets[0].outputs
    assert 1.5 <= out["init_s"] < 2.5 and out["start_s"] > out["init_s"], out
    [stored] = list((path.parent / ".state").rglob("init-seconds"))
    assert float(stored.read_text()) == round(out["init_s"], 1)
    findings = " ".join(f.message for f in engine(path, sim).plan().targets[0].findings)
    assert f"3 x the measured init() of {round(out['init_s'], 1):.1f} s + 60 s" in findings, findings
