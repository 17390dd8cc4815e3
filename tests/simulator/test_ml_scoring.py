"""Simulated endpoints really score: the uploaded score.py and model run in the local runtime.

Assets are uploaded the way the Azure ML targets do it (a blob client on the simulator's transport,
then registration by ``azureml://datastores/...`` URI)."""

from __future__ import annotations

import pytest
from azure.ai.ml import Input
from azure.ai.ml.entities import (
    AmlCompute,
    BatchEndpoint,
    CodeConfiguration,
    Environment,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    ModelBatchDeployment,
    ModelBatchDeploymentSettings,
)
from azure.ai.ml.entities._assets._artifacts.code import Code

from tests.simulator.conftest import SUB, mlclient

pytestmark = pytest.mark.slow  # builds (or reuses) a uv environment and starts a scoring server

ONLINE = b"""import json, os
def init():
    global WEIGHT
    WEIGHT = float(open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "weight.txt")).read())
def run(raw):
    return {"sums": [WEIGHT * sum(row) for row in json.loads(raw)["data"]]}
"""
BATCH = b"""import os
def init():
    pass
def run(mini_batch):
    return [f"{os.path.basename(f)},{open(f).read().strip()}" for f in mini_batch]
"""


def _upload(sim, ml, files):
    from azure.storage.blob import ContainerClient

    ds = ml.datastores.get("workspaceblobstore", include_secrets=True)
    cc = ContainerClient(f"https://{ds.account_name}.blob.core.windows.net", ds.container_name,
                         credential=ds.credentials.account_key, transport=sim.transport)
    for name, data in files.items():
        cc.upload_blob(name, data, overwrite=True)
    return cc


def _assets(sim, ml, script):
    _upload(sim, ml, {"model/weight.txt": b"2", "src/score.py": script})
    ml.models.create_or_update(Model(name="m", version="1", path="azureml://datastores/workspaceblobstore/paths/model/"))
    ml.environments.create_or_update(Environment(name="e", version="1", image="mcr.microsoft.com/azureml/minimal-py311-inference",
                                                 conda_file={"dependencies": ["python=3.11"]}))
    ml._code.create_or_update(Code(name="c", version="1", path="azureml://datastores/workspaceblobstore/paths/src/"))


def test_online_deployment_scores_with_the_uploaded_code_and_model(sim):
    from orchestrator.azure.scoring import score

    ml = mlclient(sim)
    _assets(sim, ml, ONLINE)
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="sc-ep")).result()
    dep = ManagedOnlineDeployment(name="blue", endpoint_name="sc-ep", model="azureml:m:1", environment="azureml:e:1",
                                  code_configuration=CodeConfiguration(code="azureml:c:1", scoring_script="score.py"),
                                  instance_type="Standard_DS3_v2", instance_count=1)
    assert ml.online_deployments.begin_create_or_update(dep).result().provisioning_state.lower() == "succeeded"
    ep = ml.online_endpoints.get("sc-ep")
    key = ml.online_endpoints.get_keys("sc-ep").primary_key
    session = sim.session()
    # no traffic yet: only the deployment header routes
    assert score(session, ep.scoring_uri, key, {"data": [[1, 2]]})[0] == 424
    status, body, headers = score(session, ep.scoring_uri, key, {"data": [[1, 2], [3, 4]]}, deployment="blue")
    assert (status, body) == (200, {"sums": [6.0, 14.0]})
    assert headers["azureml-model-deployment"] == "blue"
    ep.traffic = {"blue": 100}
    ml.online_endpoints.begin_create_or_update(ep).result()
    assert score(session, ep.scoring_uri, key, {"data": [[5]]})[1] == {"sums": [10.0]}
    assert score(session, ep.scoring_uri, "wrong-key", {"data": [[5]]})[0] == 401
    logs = ml.online_deployments.get_logs("blue", "sc-ep", lines=50)
    assert "init has completed" in logs
    # a simulator dropped without close() does not leave its scoring servers running
    import gc

    scoring = next(p for p in sim.providers if type(p).__name__ == "Scoring")
    scorers, finalizer = scoring.runtime.scorers, scoring.runtime._finalizer
    assert len(scorers) == 1
    scoring.runtime = None
    gc.collect()
    assert not finalizer.alive and scorers == {}


def test_batch_endpoint_invoke_runs_a_job_over_the_input_files(sim):
    ml = mlclient(sim)
    _assets(sim, ml, BATCH)
    cc = _upload(sim, ml, {"in/a.csv": b"1,2", "in/b.csv": b"3,4"})
    ml.compute.begin_create_or_update(AmlCompute(name="cpu", size="Standard_DS3_v2", max_instances=2)).result()
    ml.batch_endpoints.begin_create_or_update(BatchEndpoint(name="b-ep")).result()
    ml.batch_deployments.begin_create_or_update(ModelBatchDeployment(
        name="d1", endpoint_name="b-ep", model="azureml:m:1", environment="azureml:e:1", compute="cpu",
        code_configuration=CodeConfiguration(code="azureml:c:1", scoring_script="score.py"),
        settings=ModelBatchDeploymentSettings(mini_batch_size=1))).result()
    assert ml.batch_endpoints.get("b-ep").defaults.deployment_name == "d1"  # the first deployment is the default
    # deployment_name given: azure-ai-ml 1.35 keeps an earlier invoke's deployment header process-wide
    job = ml.batch_endpoints.invoke(endpoint_name="b-ep", deployment_name="d1",
                                    input=Input(type="uri_folder", path="azureml://datastores/workspaceblobstore/paths/in/"))
    assert job.name == "batchjob-b-ep-0001"  # deterministic names
    sim.clock.advance(sim.latency.lro_seconds("default"))
    assert ml.jobs.get(job.name).status == "Completed"
    out = cc.download_blob(f"azureml/{job.name}/score/predictions.csv").readall().decode()
    assert sorted(out.split()) == ["a.csv,1,2", "b.csv,3,4"]
    assert sim.get(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/"
                   "computes/cpu")["properties"]["computeType"] == "AmlCompute"


SLOW_INIT = b"""import json, time
def init():
    time.sleep(4)
def run(raw):
    return {"n": len(json.loads(raw)["data"])}
"""


def test_a_starting_scorer_does_not_hold_up_other_requests(sim):
    """Starting a scorer (its init() takes 4 s here) happens outside the simulator's lock: ARM
    requests sent meanwhile are answered at once, not after the start (issue 15)."""
    import threading
    import time

    from orchestrator.azure.scoring import score

    ml = mlclient(sim)
    _assets(sim, ml, SLOW_INIT)
    ml.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(name="slow-ep")).result()
    dep = ManagedOnlineDeployment(name="blue", endpoint_name="slow-ep", model="azureml:m:1", environment="azureml:e:1",
                                  code_configuration=CodeConfiguration(code="azureml:c:1", scoring_script="score.py"),
                                  instance_type="Standard_DS3_v2", instance_count=1)
    ml.online_deployments.begin_create_or_update(dep).result()
    ep = ml.online_endpoints.get("slow-ep")
    key = ml.online_endpoints.get_keys("slow-ep").primary_key
    done: dict[str, float] = {}

    def first_score() -> None:
        done["result"] = score(sim.session(), ep.scoring_uri, key, {"data": [[1]]}, deployment="blue")[0]
        done["scored"] = time.monotonic()

    t = threading.Thread(target=first_score)
    t.start()
    time.sleep(1.0)  # the scorer is starting (init() sleeps 4 s)
    ml.online_endpoints.get("slow-ep")
    answered = time.monotonic()
    t.join()
    assert done["result"] == 200
    assert answered < done["scored"]  # the GET did not wait for the scorer to start
    assert [r.status for r in sim.requests if r.operation == "Score"] == [200]
