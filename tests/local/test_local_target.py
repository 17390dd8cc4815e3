"""The local target end to end: a real environment, real processes, real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from orchestrator.plan import Action
from orchestrator.target import InvokeRequest
from tests.local.conftest import SCORE

pytestmark = pytest.mark.slow


def post(port: int, body: dict, key: str | None = "auto", path: str = "/score") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request("POST", path, json.dumps(body), headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data) if data.startswith((b"{", b"[")) else {"text": data.decode()}


def deployment(project) -> dict:
    e = project.engine()
    dev = e.target(e.manifest.targets[0])
    st = dev.ctx.state_dir
    key = st / "key"
    return {"record": json.loads((st / "deployment.json").read_text()),
            "key": key.read_text().strip() if key.exists() else None, "target": dev}


def test_real_time_serve_noop_update_without_downtime_and_destroy(project_factory):
    p = project_factory()
    e, result = p.apply()
    assert result.ok, result.targets[0].error
    out = result.targets[0].outputs
    assert out["health"] == "healthy" and out["scoring_uri"].startswith("http://127.0.0.1:")
    d = deployment(p)
    port, key = d["record"]["public_port"], d["key"]

    # Azure ML routes and key auth
    status, body = post(port, {"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}, key)
    assert status == 200 and body == {"predictions": [0, 2], "version": 1}
    assert post(port, {"data": [[1, 2, 3, 4]]}, key=None)[0] == 401
    assert post(port, {"data": [[1, 2, 3, 4]]}, key="wrong")[0] == 401
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"Healthy"

    # run() raising: a 500 with the error text, and the server stays up
    status, body = post(port, {"fail": True}, key)
    assert status == 500 and "ValueError: asked to fail" in body["message"]
    assert post(port, {"data": [[5.1, 3.5, 1.4, 0.2]]}, key)[0] == 200

    # invoke through the target
    r = d["target"].invoke(InvokeRequest(body={"data": [[6.7, 3.0, 5.2, 2.3]]}))
    assert r.ok and r.body["predictions"] == [2]

    # an unchanged manifest is a no-op: nothing is written, the same process keeps serving
    e2 = p.engine()
    plan = e2.plan()
    assert {c.action for c in plan.targets[0].changes} == {Action.noop}
    again = e2.apply(plan, check_fresh=False)
    assert again.ok and again.targets[0].writes == 0
    assert deployment(p)["record"]["pid"] == d["record"]["pid"]

    # a code change: the new version takes over the same port, with no failed request meanwhile
    failures: list[object] = []
    answered: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                s, b = post(port, {"data": [[5.1, 3.5, 1.4, 0.2]]}, key)
                (answered if s == 200 else failures).append(b.get("version", s))
            except OSError as exc:
                failures.append(exc)

    t = threading.Thread(target=traffic)
    t.start()
    time.sleep(0.3)
    p.write_score(SCORE.replace("VERSION = 1", "VERSION = 2"))
    e3 = p.engine()
    plan = e3.plan()
    server = [c for c in plan.targets[0].changes if c.type == "local.server"][0]
    assert server.action is Action.update and [d.path for d in server.diff] == ["code"]
    assert e3.apply(plan, check_fresh=False).ok
    time.sleep(0.3)
    stop.set()
    t.join()
    assert failures == []
    assert answered[0] == 1 and answered[-1] == 2
    new = deployment(p)["record"]
    assert new["public_port"] == port and new["pid"] != d["record"]["pid"]
    # the new version was forked from the zygote, which had imported the model's packages
    state = d["target"].ctx.state_dir
    zygote = json.loads((state / "zygote.json").read_text())["pid"]
    assert _ppid(new["pid"]) == zygote
    assert "sklearn" in json.loads((state / "modules.json").read_text())
    shared = Path(new["python"]).parent.parent / ".deployctl-modules.json"  # the next zygote starts warm
    assert "sklearn" in json.loads(shared.read_text())
    assert not _alive(d["record"]["pid"])  # drained and gone when apply returns

    # status, logs, destroy
    status = p.engine().status()[0]
    assert [r.state for r in status.resources] == ["in-sync", "in-sync"]
    assert "key" in status.secrets
    p.destroy()
    assert not _alive(new["pid"]) and not _alive(zygote)
    assert not (d["target"].ctx.state_dir / "deployment.json").exists()


def test_failing_new_versions_never_take_over(project_factory):
    p = project_factory()
    assert p.apply()[1].ok
    before = deployment(p)["record"]

    # init() fails: apply fails with the traceback's last lines; the old version keeps serving
    p.write_score(SCORE.replace("if os.environ.get(\"FAIL_INIT\"):", "if True:").replace(
        'os.environ["FAIL_INIT"]', '"model.pkl is corrupt"'))
    _, result = p.apply()
    assert not result.ok
    error = result.targets[0].error
    assert "did not start; the previous one keeps serving" in error and "model.pkl is corrupt" in error
    # the traceback names the user's own score.py (not this version's snapshot of it, nor the runtime)
    assert f'File "{p.root / "src" / "score.py"}", line' in error
    assert "versions/" not in error and "deployctl_runtime" not in error
    assert post(before["public_port"], {"data": [[5.1, 3.5, 1.4, 0.2]]}, deployment(p)["key"])[0] == 200

    # a worker killed while loading (the OOM killer's way) leaves no output: the error says how it
    # ended, not the running version's lines from the deployment's shared log
    p.write_score(SCORE.replace('if os.environ.get("FAIL_INIT"):',
                                'import signal; os.kill(os.getpid(), signal.SIGKILL)\n    if False:'))
    _, result = p.apply()
    error = result.targets[0].error
    assert not result.ok and "a worker process killed by SIGKILL while starting" in error, error
    assert "out-of-memory" in error and "serving on" not in error and "worker ready" not in error, error
    assert "free memory" in error, error  # the hint follows the cause
    assert deployment(p)["record"]["pid"] == before["pid"]

    # the smoke test fails (run() raises on the sample): the old version keeps serving
    p.write_score(SCORE.replace('if body.get("fail"):', 'if True:'))
    _, result = p.apply()
    assert not result.ok and "smoke test failed" in result.targets[0].error
    assert deployment(p)["record"]["pid"] == before["pid"]
    assert post(before["public_port"], {"data": [[5.1, 3.5, 1.4, 0.2]]}, deployment(p)["key"])[0] == 200


def test_a_dead_server_shows_as_missing_and_apply_restarts_it(project_factory):
    p = project_factory(target_extra="warm_start: false\n")  # a fresh interpreter per version
    assert p.apply()[1].ok
    pid = deployment(p)["record"]["pid"]
    assert not (deployment(p)["target"].ctx.state_dir / "zygote.json").exists()
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.2)
    plan = p.engine().plan()
    assert [c.action for c in plan.targets[0].changes] == [Action.noop, Action.create]
    assert p.apply()[1].ok
    assert deployment(p)["target"].invoke(InvokeRequest(body={"data": [[5.1, 3.5, 1.4, 0.2]]})).ok


def test_near_real_time_queue_async_idempotent_and_redelivered(project_factory):
    p = project_factory(scoring="near-real-time")
    e, result = p.apply()
    assert result.ok, result.targets[0].error
    target = deployment(p)["target"]
    queued = target.invoke(InvokeRequest(body={"data": [[6.7, 3.0, 5.2, 2.3]]}, run_async=True, idempotency_key="k1"))
    assert queued.ok and queued.state == "queued"
    dup = target.invoke(InvokeRequest(body={"data": [[1, 1, 1, 1]]}, run_async=True, idempotency_key="k1"))
    assert dup.request_id == queued.request_id  # runs once
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = target.invoke(InvokeRequest(request_id=queued.request_id))
        if got.state == "done":
            break
        time.sleep(0.05)
    assert got.body["predictions"] == [2]

    # a worker killed mid-message: the message is redelivered after the visibility timeout
    slow = target.invoke(InvokeRequest(body={"data": [[5.1, 3.5, 1.4, 0.2]], "sleep": 1.5}, run_async=True))
    time.sleep(0.5)
    record = deployment(p)["record"]
    status = json.loads(open(record["status_file"]).read())
    queue_worker = max(status["workers"])  # slots: the HTTP worker first, then the queue worker
    os.kill(queue_worker, signal.SIGKILL)
    got = target.invoke(InvokeRequest(request_id=slow.request_id))
    assert got.state == "running"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and got.state != "done":
        time.sleep(0.1)
        got = target.invoke(InvokeRequest(request_id=slow.request_id))
    assert got.state == "done" and got.body["predictions"] == [0]
    from targets.local.runtime.deployctl_runtime.queue import Queue

    q = Queue(str(target.ctx.state_dir / "queue.db"))
    doc = q.get(str(slow.request_id))
    q.close()
    assert doc is not None and doc["attempts"] == 2


def test_batch_contract_resume_and_error_threshold(project_factory, tmp_path):
    p = project_factory(scoring="batch")
    p.write_score('''
import os, joblib
model = None
def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "model.pkl"))
def run(mini_batch):
    rows = []
    for path in mini_batch:
        text = open(path).read()
        if "bad" in text:
            raise ValueError("bad file " + os.path.basename(path))
        values = [[float(x) for x in line.split(",")] for line in text.split()]
        rows += [f"{os.path.basename(path)},{int(c)}" for c in model.predict(values)]
    return rows
''')
    (p.root / "sample.json").write_text("5.1,3.5,1.4,0.2\n")
    assert p.apply()[1].ok
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):
        (inputs / f"f{i}.csv").write_text("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    target = deployment(p)["target"]
    out = tmp_path / "pred.csv"
    result = target.invoke(InvokeRequest(inputs=[inputs], output=out))
    assert result.ok, result.details
    assert out.read_text().splitlines()[:2] == ["f0.csv,0", "f0.csv,2"]
    assert len(out.read_text().splitlines()) == 10

    # resumable: a rerun over the same inputs reuses every finished mini-batch
    work = next((target.ctx.state_dir / "batch").iterdir()) / "done"
    assert len(list(work.glob("*.rows"))) == 5  # one file per mini-batch
    lost = sorted(work.glob("*.rows"))[0]
    lost.unlink()
    mtimes = {f.name: f.stat().st_mtime_ns for f in work.glob("*.rows")}
    assert target.invoke(InvokeRequest(inputs=[inputs], output=out)).ok
    assert lost.exists()  # the lost mini-batch was scored again, and only it
    assert {f.name: f.stat().st_mtime_ns for f in work.glob("*.rows") if f != lost} == mtimes

    # a failing file beyond the error threshold fails the job with the script's error
    (inputs / "f9.csv").write_text("bad\n")
    failed = target.invoke(InvokeRequest(inputs=[inputs], output=tmp_path / "p2.csv"))
    assert not failed.ok and "bad file f9.csv" in failed.details["error"]


def _ppid(pid: int) -> int:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    from targets.local.processes import alive

    return alive(pid)


def _alive_under(folder) -> list[int]:
    """Processes whose command line names ``folder`` (a deployment's zygote and servers do)."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(folder) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def test_a_first_deploy_whose_init_fails_says_so_plainly(project_factory):
    p = project_factory(variables={"FAIL_INIT": "no model.pkl at AZUREML_MODEL_DIR/model"})
    _, result = p.apply()
    error = result.targets[0].error
    assert not result.ok and "the new version did not start." in error  # nothing was serving before
    assert "keeps serving" not in error and "no model.pkl at AZUREML_MODEL_DIR/model" in error
    state = p.engine().target(p.engine().manifest.targets[0]).ctx.state_dir
    assert not (state / "deployment.json").exists()  # nothing half-started is recorded as running
    assert not (state / "zygote.json").exists() and not _alive_under(state)  # and no process is left


@pytest.mark.parametrize(("reply", "healthy"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
    (b"HTTP/1.0 200 OK\r\n\r\n", True),
    (b"HTTP/1.1 2", None),  # the status line in two pieces
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 2000 OK\r\n\r\n", False),
    (b"SSH-2.0-OpenSSH_9.6\r\n", False),  # another program took the port
    (b"", False),  # accepts and closes
])
def test_the_health_probe_reads_the_status_line(reply, healthy):
    """A no-op apply's liveness check (GET /, 200) is a socket and the status line, not
    http.client (~8 ms of its start-up): each kind of answer a port can give is read right."""
    import socket

    from targets.local.target import _answers_ok

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    requests: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            requests.append(conn.recv(4096))
            if healthy is None:  # split: "HTTP/1.1 2" then "00 OK..."
                conn.sendall(reply)
                time.sleep(0.05)
                conn.sendall(b"00 OK\r\n\r\n")
            else:
                conn.sendall(reply)

    t = threading.Thread(target=serve)
    t.start()
    try:
        assert _answers_ok(port) is (healthy is not False)
    finally:
        t.join(5)
        listener.close()
    assert requests[0].startswith(b"GET / HTTP/1.1\r\n") and b"Connection: close" in requests[0]


def test_the_health_probe_of_a_closed_port_is_false():
    import socket

    from targets.local.target import _answers_ok

    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    assert _answers_ok(port) is False


def test_the_health_probe_of_a_trickling_listener_ends_within_its_timeout():
    """A listener that sends a byte every 0.2 s and never a whole status line: the probe's
    timeout bounds the whole exchange, not each read (a hang of minutes before)."""
    import socket

    from targets.local.target import _answers_ok

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"H")
                except OSError:
                    return

    t = threading.Thread(target=trickle)
    t.start()
    try:
        started = time.monotonic()
        assert _answers_ok(port, timeout=1.0) is False
        assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        t.join(5)
        listener.close()
