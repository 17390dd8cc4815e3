"""azure-mgmt-authorization's role assignments and user-assigned identities against the
simulator, as Azure answers them: GUID names, unknown principals, a grant that exists under
another name, deletes at the scope and of the scope."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from tests.simulator.conftest import SUB

pytest.importorskip("azure.mgmt.authorization", reason="azure-mgmt-authorization is not installed")

REGISTRY = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/devacr"
IDENT = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pull"


@pytest.fixture
def cloud(azure_simulator):
    from orchestrator.azure import registries
    from orchestrator.azure.arm import arm_request

    sim = azure_simulator
    sim.add_resource_group(SUB, "rg")
    registries.create(sim.session(), SUB, "rg", "devacr", location="westeurope", tags={})
    ident = arm_request(sim.session(), sim.credential, "PUT", IDENT, "2023-01-31", {"location": "westeurope"})
    return sim, ident["properties"]["principalId"]


def _params(principal: str, role: str = "7f951dda-4ed3-4680-a7ca-43fe172d538d"):
    from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters

    return RoleAssignmentCreateParameters(
        role_definition_id=f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}",
        principal_id=principal, principal_type="ServicePrincipal")


def test_an_identity_gets_its_directory_ids_and_keeps_them(cloud):
    from orchestrator.azure.arm import arm_request

    sim, principal = cloud
    again = arm_request(sim.session(), sim.credential, "PUT", IDENT, "2023-01-31", {"location": "westeurope"})
    assert again["properties"]["principalId"] == principal and len(again["properties"]["clientId"]) == 36


def test_role_assignments_as_azure_answers_them(cloud):
    from orchestrator.azure import roles
    from orchestrator.azure.simulator.providers.authorization import has_role

    sim, principal = cloud
    client = roles.client(sim.session(), SUB)
    with pytest.raises(HttpResponseError) as e:
        client.role_assignments.create(REGISTRY, "not-a-guid", _params(principal))
    assert e.value.error.code == "InvalidRoleAssignmentId"
    with pytest.raises(HttpResponseError) as e:
        client.role_assignments.create(REGISTRY, roles.assignment_name(REGISTRY, "nobody", roles.ACR_PULL),
                                       _params("00000000-0000-4000-8000-00000000dead"))
    assert e.value.error.code == "PrincipalNotFound"
    assert not has_role(sim, principal, REGISTRY)
    owner = roles.describe_owner({"deployctl-target": "prod"})
    name = roles.assign(sim.session(), SUB, REGISTRY, principal, roles.ACR_PULL, description=owner)
    assert name == roles.assignment_name(REGISTRY.upper(), principal, roles.ACR_PULL)  # deterministic, case-blind
    assert roles.assign(sim.session(), SUB, REGISTRY, principal, roles.ACR_PULL, description=owner) == name  # again: same one
    with pytest.raises(HttpResponseError) as e:  # the same grant under another name
        client.role_assignments.create(REGISTRY, "0f0f0f0f-0000-4000-8000-000000000001", _params(principal))
    assert e.value.status_code == 409 and e.value.error.code == "RoleAssignmentExists"
    got = roles.get(sim.session(), SUB, REGISTRY, name)
    assert got is not None and roles.owner_tags(got["description"]) == {"deployctl-target": "prod"}
    assert has_role(sim, principal, REGISTRY) and has_role(sim, principal, REGISTRY + "/repositories/x")
    assert not has_role(sim, principal, REGISTRY.replace("devacr", "other"))
    listed = list(client.role_assignments.list_for_scope(REGISTRY, filter=f"principalId eq '{principal}'"))
    assert [a.name for a in listed] == [name]
    roles.delete(sim.session(), SUB, REGISTRY, name)
    roles.delete(sim.session(), SUB, REGISTRY, name)  # 204: already gone
    assert roles.get(sim.session(), SUB, REGISTRY, name) is None and not has_role(sim, principal, REGISTRY)


def test_a_grant_made_by_hand_under_another_name_counts_as_done(cloud):
    from orchestrator.azure import roles
    from orchestrator.azure.simulator.providers.authorization import assignments

    sim, principal = cloud
    roles.client(sim.session(), SUB).role_assignments.create(REGISTRY, "0f0f0f0f-0000-4000-8000-000000000002",
                                                             _params(principal))
    roles.assign(sim.session(), SUB, REGISTRY, principal, roles.ACR_PULL, description="")  # 409 RoleAssignmentExists
    assert [a["name"] for a in assignments(sim)] == ["0f0f0f0f-0000-4000-8000-000000000002"]


def test_deleting_the_scope_deletes_its_assignments(cloud):
    from orchestrator.azure import registries, roles

    sim, principal = cloud
    name = roles.assign(sim.session(), SUB, REGISTRY, principal, roles.ACR_PULL, description="")
    registries.delete(sim.session(), SUB, "rg", "devacr")
    assert roles.get(sim.session(), SUB, REGISTRY, name) is None


def test_owner_tags_come_back_only_from_deployctl_descriptions():
    from orchestrator.azure import roles

    tags = {"deployctl-manifest": "iris", "deployctl-target": "prod", "deployctl-spec": "abc"}
    assert roles.owner_tags(roles.describe_owner(tags)) == tags
    assert roles.owner_tags("granted by hand") == {} and roles.owner_tags(None) == {}
    assert roles.owner_tags("deployctl:{not json") == {}
