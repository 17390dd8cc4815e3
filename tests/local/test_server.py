"""The runtime's HTTP server on its own (run by this test venv's Python: it is stdlib-only, so any
environment with the user's packages can run it): workers, body limit, swagger, headers."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from urllib.parse import quote

import pytest

from targets.local import processes

pytestmark = pytest.mark.slow

SCRIPT = '''
import os, time
inits = 0
def init():
    global inits
    inits += 1
def run(raw_data):
    time.sleep(0.05)  # long enough that concurrent requests need both workers
    return {"pid": os.getpid(), "inits": inits, "model_dir": os.environ["AZUREML_MODEL_DIR"]}
'''

SCHEMA_SCRIPT = '''
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
def init(): pass
@input_schema("data", StandardPythonParameterType([[5.1, 3.5, 1.4, 0.2]]))
@output_schema(StandardPythonParameterType([0]))
def run(data):
    return [len(row) for row in data]
'''


def test_health_answers_say_how_long_init_took(server):
    s = server("import time\ndef init():\n    time.sleep(0.4)\ndef run(raw):\n    return 1\n")
    for path in ("/", "/ready"):
        status, body, r = s.request("GET", path)
        assert status == 200 and 0.4 <= float(r.getheader("x-deployctl-init-seconds")) < 1.4, path
    assert s.request("GET", "/")[1] == b"Healthy"  # the Azure ML contract's body is unchanged


def test_workers_each_init_once_and_share_the_port(server):
    from concurrent.futures import ThreadPoolExecutor

    s = server(SCRIPT, "--workers", "2")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: json.loads(s.request("POST", "/score", b"{}")[1]), range(40)))
    assert len({a["pid"] for a in answers}) == 2  # both workers served
    assert {a["inits"] for a in answers} == {1}  # init() ran once per worker, before traffic
    assert answers[0]["model_dir"] == str(s.status_file.parent)


def test_routes_headers_and_body_limit(server):
    s = server(SCRIPT, "--max-body-bytes", "1000")
    status, body, r = s.request("GET", "/")
    assert status == 200 and body == b"Healthy"
    assert s.request("GET", "/ready")[0] == 200
    assert s.request("GET", "/nowhere")[0] == 404
    # as azmlinfsrv: a swagger even for an undecorated run() (open objects), version 2 or 3
    status, body, _ = s.request("GET", "/swagger.json")
    assert status == 200 and json.loads(body)["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
    status, body, _ = s.request("GET", "/swagger.json?version=3")
    assert status == 200 and json.loads(body)["openapi"].startswith("3.0")
    assert s.request("GET", "/swagger.json?version=9")[0] == 404
    assert s.request("OPTIONS", "/score")[0] == 200  # a CORS preflight
    status, body, r = s.request("POST", "/score", b"{}", {"x-ms-client-request-id": "abc"})
    assert status == 200 and r.getheader("x-ms-request-id") == "abc"
    assert r.getheader("x-ms-run-function-failed") == "False" and float(r.getheader("x-ms-run-fn-exec-ms")) > 0
    status, body, _ = s.request("POST", "/score", b"x" * 2000)
    assert status == 413 and b"over the limit of 1000" in body
    assert s.request("POST", "/score", b"{}")[0] == 200  # still serving


def test_keep_alive_on_one_connection(server):
    s = server(SCRIPT.replace("time.sleep(0.05)", "pass"))
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    conn.connect()
    local = conn.sock.getsockname()
    for _ in range(20):
        conn.request("POST", "/score", b"{}")
        r = conn.getresponse()
        r.read()
        assert r.status == 200 and r.getheader("Connection", "").lower() != "close"
    assert conn.sock.getsockname() == local  # the same connection throughout
    conn.close()


def test_inference_schema_swagger_and_parsed_input(server):
    pytest.importorskip("inference_schema")
    s = server(SCHEMA_SCRIPT)
    status, body, _ = s.request("GET", "/swagger.json")
    assert status == 200
    doc = json.loads(body)
    assert doc["definitions"]["ServiceInput"]["properties"]["data"]["type"] == "array"
    status, body, _ = s.request("POST", "/score", json.dumps({"data": [[1, 2, 3, 4], [1, 2]]}).encode())
    assert status == 200 and json.loads(body) == [4, 2]
    # GET /score: the input as query parameters, each parsed as JSON
    status, body, _ = s.request("GET", "/score?data=" + quote("[[1, 2, 3], [4]]"))
    assert status == 200 and json.loads(body) == [3, 1]
    status, body, _ = s.request("POST", "/score", b"[1, 2]")
    assert status == 400 and b"dictionary" in body


SLOW_RUN_SCRIPT = SCRIPT.replace("time.sleep(0.05)",
                                 "open(os.environ['AZUREML_MODEL_DIR'] + '/in-run', 'w').close(); time.sleep(0.5)")


def _request_in_run(s) -> tuple[threading.Thread, list[tuple[int, str | None]]]:
    """Start a request against a SLOW_RUN_SCRIPT server and return once it is inside run():
    (its thread, where its (status, Connection header) will be)."""
    got: list[tuple[int, str | None]] = []

    def call() -> None:
        status, _, r = s.request("POST", "/score", b"{}")
        got.append((status, r.getheader("Connection")))

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 30  # bounded: wait until the request is in run()
    while not (s.status_file.parent / "in-run").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return t, got


def test_sigterm_finishes_in_flight_requests(server):
    s = server(SLOW_RUN_SCRIPT)
    t, got = _request_in_run(s)
    s.stop()
    t.join(10)
    assert got == [(200, "close")]  # answered, and told to reconnect (to the next version)


def test_how_a_silent_process_ended_is_told():
    """A server that dies without a word (the OOM killer's SIGKILL) is described, not left blank."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes.alive(proc.pid, marker="time.sleep") and time.monotonic() < deadline:
            time.sleep(0.01)
        ended = processes.how_it_ended(proc.pid)
        assert ended is not None and ended.startswith("killed by SIGKILL") and "out-of-memory" in ended
    finally:
        proc.kill()
    quick = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    deadline = time.monotonic() + 10
    while processes.how_it_ended(quick.pid) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert processes.how_it_ended(quick.pid) == "exited with code 3"
    assert processes.how_it_ended(1) is None  # not our child


def test_a_storm_of_signals_never_wedges_a_worker(server):
    """A signal handler that takes a lock the interrupted main thread holds deadlocks it for good
    (``Event.set()`` from a handler while the loop sits in ``Event.wait()``): the worker then
    ignores every later SIGTERM and its supervisor waits for it for ever (a container stop that
    only SIGKILL ends).  Thousands of SIGUSR1s (the go-public signal, a no-op once public) give
    that window every chance; SIGTERM must still stop the server at once."""
    import itertools
    import os
    import signal

    s = server("def init(): pass\ndef run(raw):\n    return 1\n")
    worker = json.loads(s.status_file.read_text())["workers"][0]
    bursts = itertools.cycle((1, 5, 20, 50))  # bursts of every size: each meets the loop at other moments
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and processes.alive(worker):
        for _ in range(next(bursts)):
            os.kill(worker, signal.SIGUSR1)
        time.sleep(0.0005)
    assert processes.alive(worker), f"the worker died in the storm:\n{s.log.read_text()[-1500:]}"
    assert s.request("POST", "/score", b"{}")[0] == 200
    started = time.monotonic()
    os.kill(s.pid, signal.SIGTERM)
    while processes.alive(s.pid) and time.monotonic() - started < 8:
        time.sleep(0.02)
    assert not processes.alive(s.pid), (
        f"SIGTERM did not stop the server in 8 s; worker {worker}: {processes.describe([worker])}\n"
        f"{s.log.read_text()[-1500:]}")


def test_ctrl_c_at_the_process_group_drains_like_sigterm(server):
    """A terminal's Ctrl-C reaches every process of the group at once (a container run in the
    foreground): the workers leave it to their supervisor, which stops them in order, so the
    request in flight is still answered."""
    import os
    import signal

    s = server(SLOW_RUN_SCRIPT)
    t, got = _request_in_run(s)
    os.killpg(os.getpgid(s.pid), signal.SIGINT)
    t.join(10)
    assert got == [(200, "close")]
    deadline = time.monotonic() + 10
    while processes.alive(s.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not processes.alive(s.pid)
