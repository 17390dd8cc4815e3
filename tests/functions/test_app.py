"""The generated function app, called through azure-functions' own objects (no Core Tools):
init() once at load, run() per call, Azure ML shapes, clear errors, and the queue function's
idempotency and poison rules."""

from __future__ import annotations

import json
import time

import azure.functions as func
import pytest

from targets.web.host import FunctionHost, Out, queue_message
from tests.functions.conftest import stage

pytestmark = pytest.mark.usefixtures("isolated_process")

COUNTING = """
import json, os
calls = {"init": 0, "run": 0}
def init():
    calls["init"] += 1
def run(raw):
    calls["run"] += 1
    doc = json.loads(raw)
    if doc.get("fail"):
        raise ValueError("asked to fail")
    if doc.get("set"):
        return {1, 2}
    return {"echo": doc, "init_calls": calls["init"], "run_calls": calls["run"]}
"""

SETTINGS = {"DEPLOYCTL_QUEUE": "requests", "DEPLOYCTL_RESULTS": "results"}


def functions_of(host: FunctionHost) -> dict:
    return {f.get_function_name(): f.get_user_function() for f in host.functions}


def post(fn, body: bytes) -> func.HttpResponse:
    return fn(func.HttpRequest("POST", "http://localhost/api/score", headers={"content-type": "application/json"},
                               params={}, route_params={}, body=body))


def test_http_scores_the_unmodified_example_and_inits_once(tmp_path):
    host = FunctionHost(stage(tmp_path), SETTINGS)
    score = functions_of(host)["score_http"]
    body = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).encode()
    r = post(score, body)
    assert r.status_code == 200, r.get_body()
    assert json.loads(r.get_body()) == ["setosa", "virginica"]
    assert r.headers["x-ms-run-fn-exec-ms"]


def test_init_runs_once_per_worker_not_per_call(tmp_path):
    host = FunctionHost(stage(tmp_path, COUNTING), SETTINGS)
    score = functions_of(host)["score_http"]
    outs = [json.loads(post(score, b'{"x": 1}').get_body()) for _ in range(3)]
    assert [o["init_calls"] for o in outs] == [1, 1, 1]
    assert [o["run_calls"] for o in outs] == [1, 2, 3]


def test_http_errors_are_clear(tmp_path):
    host = FunctionHost(stage(tmp_path, COUNTING), SETTINGS)
    score = functions_of(host)["score_http"]
    r = post(score, b'{"fail": true}')
    assert r.status_code == 500 and "ValueError: asked to fail" in json.loads(r.get_body())["message"]
    r = post(score, b'{"set": true}')
    assert r.status_code == 500
    assert "not JSON-serialisable" in json.loads(r.get_body())["message"]


def test_failing_init_is_reported_by_every_call_and_health(tmp_path):
    host = FunctionHost(stage(tmp_path, "def init():\n    raise RuntimeError('no model')\ndef run(d):\n    return d\n"),
                        SETTINGS)
    fns = functions_of(host)
    r = post(fns["score_http"], b"{}")
    assert r.status_code == 503 and "init() failed: RuntimeError: no model" in json.loads(r.get_body())["message"]
    h = fns["health"](func.HttpRequest("GET", "http://localhost/api/health", body=b""))
    assert h.status_code == 503 and json.loads(h.get_body())["ready"] is False


def test_host_routes_http_and_checks_the_function_key(tmp_path):
    host = FunctionHost(stage(tmp_path), SETTINGS, keys=("k1",))
    body = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
    assert host.http("POST", "/api/score", body).status == 401
    assert host.http("POST", "/api/score", body, params={"code": "wrong"}).status == 401
    ok = host.http("POST", "/api/score", body, headers={"x-functions-key": "k1"})
    assert ok.status == 200 and json.loads(ok.body) == ["setosa"]
    assert host.http("GET", "/api/health").status == 200  # anonymous
    assert host.http("GET", "/api/score", params={"code": "k1"}).status == 405


def queue_call(fn, body: bytes, *, dequeue_count: int = 1, existing: str | None = None) -> tuple[Out, Out]:
    result, poison = Out(), Out()
    fn(msg=queue_message(body, dequeue_count), existing=existing, result=result, poison=poison)
    return result, poison


def test_queue_function_stores_the_result_by_request_id(tmp_path):
    fn = functions_of(FunctionHost(stage(tmp_path, COUNTING), SETTINGS))["score_queue"]
    result, poison = queue_call(fn, json.dumps({"id": "r1", "body": {"x": 1}}).encode())
    doc = json.loads(result.get())
    assert doc["request_id"] == "r1" and doc["state"] == "done" and doc["result"]["echo"] == {"x": 1}
    assert poison.get() is None


def test_queue_function_is_idempotent_by_request_id(tmp_path):
    fn = functions_of(FunctionHost(stage(tmp_path, COUNTING), SETTINGS))["score_queue"]
    result, _ = queue_call(fn, json.dumps({"id": "r1", "body": {"x": 1}}).encode(), existing='{"state": "done"}')
    assert result.get() is None  # already scored: nothing run, nothing rewritten


def test_queue_failures_retry_then_go_to_the_poison_queue_with_the_error(tmp_path):
    fn = functions_of(FunctionHost(stage(tmp_path, COUNTING, max_attempts=3), SETTINGS))["score_queue"]
    msg = json.dumps({"id": "r2", "body": {"fail": True}}).encode()
    for attempt in (1, 2):
        with pytest.raises(ValueError, match="asked to fail"):  # the host redelivers it
            queue_call(fn, msg, dequeue_count=attempt)
    result, poison = queue_call(fn, msg, dequeue_count=3)
    assert json.loads(result.get()) == {"request_id": "r2", "state": "dead", "attempts": 3,
                                        "error": "ValueError: asked to fail"}
    kept = json.loads(poison.get())
    assert kept["body"] == {"fail": True} and kept["error"] == "ValueError: asked to fail"


def test_queue_message_that_is_not_json_is_a_clear_error(tmp_path):
    fn = functions_of(FunctionHost(stage(tmp_path, COUNTING), SETTINGS))["score_queue"]
    with pytest.raises(ValueError, match="queue message is not JSON"):
        queue_call(fn, b"not json")
    with pytest.raises(ValueError, match='JSON object {"id"'):
        queue_call(fn, b'[1, 2]')


class OrchestrationContext:
    """The two members of azure-durable-functions' DurableOrchestrationContext the orchestrator
    uses (the real one needs the Functions host's replay history)."""

    def __init__(self, payload: str) -> None:
        self.payload = payload
        self.calls: list[tuple[str, object, str]] = []

    def get_input(self) -> str:
        return self.payload

    def call_activity_with_retry(self, name: str, retry, body: str) -> str:  # noqa: ANN001
        self.calls.append((name, retry, body))
        return f"task:{name}"


def test_durable_mode_registers_starter_orchestrator_and_activity(tmp_path):
    import azure.durable_functions as df

    host = FunctionHost(stage(tmp_path, COUNTING, mode="durable", max_attempts=4), SETTINGS)
    assert isinstance(host.module.app, df.DFApp)
    triggers = {f.get_function_name(): host._trigger(f)["type"] for f in host.functions}
    assert triggers == {"score_http": "httpTrigger", "health": "httpTrigger", "submit": "httpTrigger",
                        "score_orchestration": "orchestrationTrigger", "score_activity": "activityTrigger"}
    fns = functions_of(host)
    # the orchestrator: one activity call with max_attempts attempts, its result is the output
    ctx = OrchestrationContext('{"x": 1}')
    gen = fns["score_orchestration"].orchestrator_function(ctx)
    assert next(gen) == "task:score_activity"
    name, retry, body = ctx.calls[0]
    assert body == '{"x": 1}' and retry.max_number_of_attempts == 4
    with pytest.raises(StopIteration) as done:
        gen.send({"echo": {"x": 1}})
    assert done.value.value == {"echo": {"x": 1}}
    # the activity: run() on the request; a failure raises (the orchestrator's retry sees it)
    assert fns["score_activity"]('{"x": 2}')["echo"] == {"x": 2}
    with pytest.raises(ValueError, match="asked to fail"):
        fns["score_activity"]('{"fail": true}')


def _finished(host: FunctionHost, iid: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = host.durable.status(iid)
        if doc and doc["runtimeStatus"] in ("Completed", "Failed"):
            return doc
        time.sleep(0.02)
    raise AssertionError(f"instance {iid} did not finish: {host.durable.status(iid)}")


def test_durable_host_drives_the_generated_orchestrator_by_replay(tmp_path):
    """The host's Durable extension: the library's orchestrator replayed over the history the host
    builds, the activity (run()) called per attempt with the retry's timer between attempts."""
    host = FunctionHost(stage(tmp_path, COUNTING, mode="durable", max_attempts=3), SETTINGS)
    host.durable.sleep = lambda s: None  # the retry interval (1 s) is not what is tested
    # the body as the Python client posts it: its df_dumps() text of the request, as a JSON string
    status, doc = host.durable.start("score_orchestration", "ok-1", json.dumps(json.dumps('{"x": 1}')).encode())
    assert (status, doc) == (202, {"id": "ok-1"})
    done = _finished(host, "ok-1")
    assert done["runtimeStatus"] == "Completed" and done["output"]["echo"] == {"x": 1}
    status, _ = host.durable.start("score_orchestration", "bad-1", json.dumps(json.dumps('{"fail": 1}')).encode())
    failed = _finished(host, "bad-1")
    assert failed["runtimeStatus"] == "Failed" and "asked to fail" in failed["output"]
    history = host.durable.store.get("bad-1")["history"]
    kinds = [e["EventType"] for e in history]
    assert kinds.count(4) == 3 and kinds.count(6) == 3  # 3 attempts scheduled, 3 failed
    assert kinds.count(10) == 3 and kinds.count(11) == 3  # a retry timer after each failure
    assert host.durable.start("no_such", None, b"null")[0] == 400
    assert host.durable.status("unknown") is None


def test_durable_host_resumes_what_a_stopped_host_left_unfinished(tmp_path):
    """An instance a host accepted but did not finish (the process was stopped) is finished by the
    next host that starts on the same store, from its history."""
    host = FunctionHost(stage(tmp_path, COUNTING, mode="durable"), SETTINGS)
    store = host.durable.store
    store.put({"name": "score_orchestration", "instanceId": "left", "runtimeStatus": "Pending",
               "input": json.dumps('{"x": 2}'), "output": None, "customStatus": None, "createdTime": "-",
               "history": [], "actionsDone": 0, "nextEventId": 0})
    host.durable.resume_unfinished()
    assert _finished(host, "left")["output"]["echo"] == {"x": 2}
