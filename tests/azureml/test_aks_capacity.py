"""The ``aks`` capacity preflight against the simulator: the real MLClient reads the Kubernetes
compute and the deployments on it, a plain ARM GET reads the AKS cluster behind it, and the plan
compares the rollout's pod requests with the cluster's allocatable CPU and memory."""

from __future__ import annotations

import pytest

from tests.azureml.conftest import SUB
from tests.azureml.test_simulated import apply, cloud, engine  # noqa: F401 - fixture

CLUSTER = f"/subscriptions/{SUB}/resourceGroups/aks-rg/providers/Microsoft.ContainerService/managedClusters/cluster1"
# one Standard_D2s_v3 node (2 vCPU, 8 GiB) on Kubernetes 1.29, maxPods 30: AKS keeps 100m CPU and
# min(20 MiB x 30 + 50 MiB, 25%) + 100 MiB eviction = 750 MiB: 1.90 CPU, 7.3 GiB allocatable
SMALL = [{"name": "pool1", "count": 1, "vmSize": "Standard_D2s_v3"}]


def aks_target(**extra: str) -> str:
    lines = ["  - name: k8s", "    kind: aks", f"    subscription: {SUB}", "    resource_group: rg",
             "    workspace: ws", "    compute: k8s", "    rollout: {steps: [100]}"]
    return "\n".join(lines + [f"    {k}: {v}" for k, v in extra.items()])


@pytest.fixture
def k8s(cloud):  # noqa: F811 - the fixture imported above
    sim, session, rec = cloud

    def attach(pools=None, **kw):
        sim.add_aks_cluster(SUB, "aks-rg", "cluster1", pools=pools, **kw)
        sim.add_kubernetes_compute(SUB, "rg", "ws", "k8s", cluster_id=CLUSTER)

    return sim, session, rec, attach


def _findings(plan, severity: str) -> list[str]:
    return [f.message for f in plan.targets[0].findings if f.severity.value == severity]


def _writes(rec, since: int) -> list[tuple[str, str]]:
    return [(m, u) for m, u in rec.calls[since:] if m in ("PUT", "DELETE", "PATCH")]


def test_a_rollout_that_fits_applies_and_says_why(project, k8s):
    sim, session, rec, attach = k8s
    attach()  # 3 x Standard_D4s_v3
    plan, result = apply(project(aks_target()), session)
    info = [m for m in _findings(plan, "info") if m.startswith("cluster capacity:")]
    assert info and "offers 11.58 CPU" in info[0] and "nodepool1: 3 x Standard_D4s_v3" in info[0], info
    assert "new deployment d" in info[0] and ": 1 x (1 CPU" in info[0], info
    assert result.ok, result.model_dump_json(indent=2)
    assert any(r.operation == "ManagedClusters_Get" and r.status == 200 for r in sim.requests)


def test_a_shortfall_blocks_apply_with_its_numbers(project, k8s):
    sim, session, rec, attach = k8s
    attach(SMALL)
    n = len(rec.calls)
    plan, result = apply(project(aks_target(instance_count="3")), session)
    errors = [m for m in _findings(plan, "error") if m.startswith("cluster capacity:")]
    assert len(errors) == 1, plan.to_json()
    assert "needs 3 CPU" in errors[0] and "offers 1.90 CPU, 7.3 GiB allocatable" in errors[0], errors
    assert "pool1: 1 x Standard_D2s_v3" in errors[0] and "short by 1.10 CPU" in errors[0], errors
    assert not result.ok and "blocked before any write" in (result.targets[0].error or "")
    assert not _writes(rec, n)


def test_blue_green_counts_the_live_deployment_beside_the_new_one(project, k8s):
    sim, session, rec, attach = k8s
    attach(SMALL)  # room for one pod (1 CPU), not two
    path = project(aks_target())
    assert apply(path, session)[1].ok
    live = engine(path, session).status()[0].outputs["deployment"]
    (project.dir / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return 2\n")
    n = len(rec.calls)
    plan, result = apply(path, session)
    errors = [m for m in _findings(plan, "error") if m.startswith("cluster capacity:")]
    assert errors and f"credit-risk-k8s/{live} (live, beside the new one): 1 x (1 CPU" in errors[0], errors
    assert "needs 2 CPU" in errors[0] and "short by 0.10 CPU" in errors[0], errors
    assert not result.ok and not _writes(rec, n)
    assert engine(path, session).status()[0].outputs["traffic"] == {live: 100}


def test_an_in_place_scale_replaces_the_deployments_pods(project, k8s):
    sim, session, rec, attach = k8s
    attach([{"name": "pool1", "count": 3, "vmSize": "Standard_D2s_v3"}])  # 1.90 CPU each: one 1-CPU pod per node
    path = project(aks_target())
    assert apply(path, session)[1].ok
    live = engine(path, session).status()[0].outputs["deployment"]
    path = project(aks_target(instance_count="3"))
    plan, result = apply(path, session)
    assert [c.action.value for c in plan.targets[0].pending if c.type == "azureml.deployment"] == ["update"]
    info = [m for m in _findings(plan, "info") if m.startswith("cluster capacity:")]
    # 3 pods, not 3 + the 1 already running (4 pods would not fit on 3 nodes)
    assert info and "needs 3 CPU" in info[0] and f"deployment {live}: 3 x (1 CPU" in info[0], plan.to_json()
    assert result.ok, result.model_dump_json(indent=2)


def test_pods_that_fit_in_total_but_not_node_by_node_are_a_shortfall(project, k8s):
    """A pod runs on one node: three 2.5-CPU pods need three nodes, though two 3.86-CPU nodes
    offer 7.72 CPU in total.  The plan says how many pods the nodes can really hold."""
    sim, session, rec, attach = k8s
    sim.add_aks_cluster(SUB, "aks-rg", "cluster1", pools=[{"name": "pool1", "count": 2, "vmSize": "Standard_D4s_v3"}])
    types = {"big": {"resources": {"requests": {"cpu": "2500m", "memory": "4Gi"}, "limits": {"cpu": "3", "memory": "8Gi"}}}}
    sim.add_kubernetes_compute(SUB, "rg", "ws", "k8s", cluster_id=CLUSTER, instance_types=types)
    def manifest(count: str):
        path = project(aks_target(instance_type="big", instance_count=count))
        path.write_text(path.read_text().replace("targets:\n", "resources:\n  memory_gb: 4\n  cpu: 2.5\ntargets:\n", 1))
        return path

    n = len(rec.calls)
    plan, result = apply(manifest("3"), session)
    errors = [m for m in _findings(plan, "error") if m.startswith("cluster capacity:")]
    assert errors and "needs 7.5 CPU" in errors[0] and "offers 7.72 CPU" in errors[0], plan.to_json()
    assert "the nodes can hold only 2 of the 3 pods" in errors[0], errors
    assert not result.ok and not _writes(rec, n)
    plan, result = apply(manifest("2"), session)
    assert not _findings(plan, "error") and result.ok, plan.to_json()


def test_skip_quota_check_proceeds(project, k8s):
    sim, session, rec, attach = k8s
    attach(SMALL)
    plan, result = apply(project(aks_target(instance_count="3")), session, skip_quota_check=True)
    assert not _findings(plan, "error"), plan.to_json()
    assert any("cluster capacity check skipped (3 pod(s) x (1 CPU" in m for m in _findings(plan, "warning"))
    assert result.ok, result.model_dump_json(indent=2)


def test_an_unreadable_cluster_is_a_warning_not_an_error(project, k8s):
    sim, session, rec, attach = k8s
    attach(SMALL)
    sim.deny(subscription=SUB, resource_group="aks-rg")
    plan, result = apply(project(aks_target(instance_count="3")), session)
    warnings = [m for m in _findings(plan, "warning") if "cannot read AKS cluster cluster1" in m]
    assert warnings and "HTTP 403" in warnings[0] and "AuthorizationFailed" in warnings[0], plan.to_json()
    assert "cluster capacity not checked (3 pod(s)" in warnings[0]
    assert not _findings(plan, "error") and result.ok, result.model_dump_json(indent=2)


def test_autoscaling_pools_count_at_max_and_a_pinned_pool_only_counts_itself(project, k8s):
    sim, session, rec, attach = k8s
    pools = [{"name": "sys", "count": 1, "vmSize": "Standard_D2s_v3", "mode": "System"},
             {"name": "gpu", "count": 1, "vmSize": "Standard_D4s_v3", "enableAutoScaling": True, "minCount": 1,
              "maxCount": 4}]
    sim.add_aks_cluster(SUB, "aks-rg", "cluster1", pools=pools)
    types = {"onsys": {"nodeSelector": {"agentpool": "sys"},
                       "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}}}
    sim.add_kubernetes_compute(SUB, "rg", "ws", "k8s", cluster_id=CLUSTER, instance_types=types)
    plan, _ = engine(project(aks_target(instance_type="onsys", instance_count="3")), session).plan(), None
    errors = [m for m in _findings(plan, "error") if m.startswith("cluster capacity:")]
    assert errors and "offers 1.90 CPU" in errors[0] and "gpu:" not in errors[0], errors
    sim.add_kubernetes_compute(SUB, "rg", "ws", "k8s", cluster_id=CLUSTER)  # defaultinstancetype: any pool
    plan = engine(project(aks_target(instance_count="3")), session).plan()
    info = [m for m in _findings(plan, "info") if m.startswith("cluster capacity:")]
    assert info and "gpu: up to 4 x Standard_D4s_v3" in info[0], plan.to_json()


@pytest.mark.slow
def test_cli_shortfall_exits_non_zero_and_skip_quota_check_applies(project, tmp_path):
    """The same through `deployctl apply --simulate` on a persisted simulated cloud."""
    import subprocess

    from orchestrator.azure.simulator import AzureSimulator
    from tests.azureml.test_examples_simulated import DEPLOYCTL
    from tests.conftest import REPO, subprocess_env

    state = tmp_path / "state"
    state.mkdir()
    sim = AzureSimulator(strict=False)
    sim.add_workspace(SUB, "rg", "ws")
    sim.add_aks_cluster(SUB, "aks-rg", "cluster1", pools=SMALL)
    sim.add_kubernetes_compute(SUB, "rg", "ws", "k8s", cluster_id=CLUSTER)
    sim.save(state / "simulated-azure.json")
    sim.close()
    path = project(aks_target(instance_count="2"))

    def deployctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*DEPLOYCTL, "apply", str(path), "--simulate", "--yes", "--state-dir", str(state), *args],
                              capture_output=True, text=True, env=subprocess_env(), timeout=600, cwd=REPO)

    blocked = deployctl()
    out = blocked.stdout + blocked.stderr
    assert blocked.returncode == 1, out
    assert "needs 2 CPU" in out and "offers 1.90 CPU, 7.3 GiB" in out and "short by 0.10 CPU" in out, out
    assert "--skip-quota-check" in out and "Traceback" not in out, out
    applied = deployctl("--skip-quota-check")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "cluster capacity check skipped" in applied.stdout + applied.stderr


def test_allocatable_follows_the_aks_reservations_of_each_kubernetes_version():
    from targets.azureml.capacity import allocatable

    cpu, mem = allocatable(2, 8, kubernetes_version="1.29.2", max_pods=30)
    assert round(cpu, 2) == 1.90 and round(mem, 3) == round(8 - (20 * 30 + 50) / 1024 - 100 / 1024, 3)
    # before 1.29: 25% of the first 4 GiB + 20% of the next 4 + 750 MiB eviction threshold
    cpu, mem = allocatable(2, 8, kubernetes_version="1.28.5", max_pods=30)
    assert round(mem, 3) == round(8 - (1.0 + 0.8) - 750 / 1024, 3)
    # a big node: the 25% cap does not bind, 64 cores keep 740m
    cpu, mem = allocatable(64, 256, kubernetes_version="1.30.0", max_pods=250)
    assert round(cpu, 2) == 63.26 and round(mem, 2) == round(256 - (20 * 250 + 50) / 1024 - 100 / 1024, 2)


def test_a_too_small_instance_type_names_the_smallest_that_fits(project, k8s):
    """The compute's instance types are aks's catalog: when the chosen one is too small (memory or
    CPU), the plan names the smallest that fits, before anything is written."""
    sim, session, rec, attach = k8s
    sim.add_aks_cluster(SUB, "aks-rg", "cluster1")
    types = {name: {"resources": {"requests": {"cpu": c, "memory": m}, "limits": {"cpu": c, "memory": m}}}
             for name, c, m in (("small", "1", "2Gi"), ("medium", "2", "8Gi"), ("large", "8", "32Gi"))}
    types["nolimits"] = {}  # promises nothing: never recommended
    sim.add_kubernetes_compute(SUB, "rg", "ws", "k8s", cluster_id=CLUSTER, instance_types=types)
    path = project(aks_target(instance_type="small"))
    path.write_text(path.read_text().replace("targets:\n", "resources:\n  memory_gb: 6\n  cpu: 2\ntargets:\n", 1))
    n = len(rec.calls)
    plan, result = apply(path, session)
    errors = [f for f in plan.targets[0].findings if f.severity.value == "error" and "instance type small" in f.message]
    assert errors, plan.to_json()
    assert "1 of the 2 CPU" in errors[0].message and "of the 6.0 GiB" in errors[0].message
    assert "set instance_type: medium (2 CPU, 8.0 GiB)" in (errors[0].hint or "")
    assert not result.ok and not _writes(rec, n)


def test_smallest_fitting_is_pure_and_skips_types_without_limits():
    from targets.azureml.aks import smallest_fitting

    types = {"a": {"resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}},
             "b": {"resources": {"limits": {"cpu": "4", "memory": "16Gi"}}},
             "c": {"resources": {"limits": {"cpu": "2", "memory": "8192Mi"}}}, "d": {}}
    assert smallest_fitting(types, 1, 4) == ("c", 2.0, 8.0)
    assert smallest_fitting(types, 0.5, 1) == ("a", 0.5, 1.0)
    assert smallest_fitting(types, 16, 1) is None


def test_packing_is_exact_small_cases_checked_against_every_assignment():
    """max_placed against brute force (every pod on every node, or on none) on random small
    clusters with one or two pod shapes: the same answer every time."""
    import itertools
    import random

    from targets.azureml.capacity import NodePool, Pods, max_placed

    def brute(pods, nodes):
        items = [(p.cpu, p.memory_gib) for p in pods for _ in range(p.count)]
        best = 0
        for where in itertools.product(range(len(nodes) + 1), repeat=len(items)):
            load = [[0.0, 0.0] for _ in nodes]
            for (c, m), w in zip(items, where, strict=True):
                if w < len(nodes):
                    load[w][0] += c
                    load[w][1] += m
            if all(lc <= nc + 1e-9 and lm <= nm + 1e-9 for (lc, lm), (nc, nm) in zip(load, nodes, strict=True)):
                best = max(best, sum(w < len(nodes) for w in where))
        return best

    rng = random.Random(7)
    checked = 0
    while checked < 150:
        pods = [Pods(f"d{i}", rng.randint(1, 3), rng.choice([0.5, 1, 1.5, 2, 2.5]), rng.choice([1, 2, 3, 5]))
                for i in range(rng.randint(1, 2))]
        pools = [NodePool(f"p{j}", "v", rng.randint(1, 2), False, rng.choice([2, 3, 4]), rng.choice([4, 6, 8]))
                 for j in range(rng.randint(1, 2))]
        nodes = [(p.cpu, p.memory_gib) for p in pools for _ in range(p.nodes)]
        if sum(p.count for p in pods) > 6 or len(nodes) > 3:
            continue
        assert max_placed(pods, pools) == brute(pods, nodes), (pods, pools)
        checked += 1


def test_packing_counts_memory_too_and_mixes_shapes():
    from targets.azureml.capacity import NodePool, Pods, assess

    node = NodePool("p", "Standard_D4s_v3", 2, False, 3.86, 14.5)
    # memory binds: 4 pods of 0.5 CPU and 7 GiB fit two per node in memory, CPU is plenty
    assert assess([Pods("m", 4, 0.5, 7)], [node]).fits
    a = assess([Pods("m", 3, 0.5, 7), Pods("s", 1, 0.5, 1)], [node])
    assert a.fits  # 7+7 on one node, 7+1 on the other
    a = assess([Pods("m", 3, 0.5, 7), Pods("x", 1, 0.5, 1.5)], [node])  # 14.5 - 7 = 7.5 is left for x: fits
    assert a.fits
    a = assess([Pods("m", 3, 0.5, 7), Pods("x", 1, 0.5, 7.6)], [node])  # 28.6 <= 29 in total, not per node
    assert not a.fits and a.placed == 3 and "can hold only 3 of the 4 pods" in a.shortfall
