"""deployctl's scoring server against Azure ML's own (azmlinfsrv 1.5.1), side by side: the same
score.py, the same requests; the status codes, success bodies and run-function headers must
match.  One difference is deliberate: when run() raises, ours answers the error's text (Azure ML
answers a generic message and leaves the text to its logs)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from urllib.parse import quote

import pytest

from targets.local.envs import ensure_environment
from targets.local.scorer import Scorer

pytestmark = pytest.mark.slow

SCORE = '''
import json

state = {}

def init():
    state["ready"] = True

def run(raw_data):
    body = json.loads(raw_data)
    if body.get("fail"):
        raise ValueError("asked to fail")
    return {"n": len(body.get("data", [])), "ready": state["ready"]}
'''

LAUNCH = ("import sys; from azureml_inference_server_http import amlserver_linux as s; "
          "s.run('127.0.0.1', int(sys.argv[1]), 1, int(sys.argv[2]))")  # azmlinfsrv's own gunicorn setup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        r = conn.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """azmlinfsrv and ours, each serving SCORE from the same folder, in the same environment."""
    root = tmp_path_factory.mktemp("parity")
    (root / "code").mkdir()
    (root / "model").mkdir()
    (root / "code" / "score.py").write_text(SCORE)
    env = ensure_environment(["azureml-inference-server-http==1.5.1"], "3.11", cache=root / "cache")
    port, health = _free_port(), _free_port()
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environ.update(AZUREML_ENTRY_SCRIPT=str(root / "code" / "score.py"), AZUREML_MODEL_DIR=str(root / "model"))
    log = root / "azmlinfsrv.log"
    with open(log, "wb") as out:
        theirs = subprocess.Popen([str(env.python), "-c", LAUNCH, str(port), str(health)], env=environ,
                                  stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _request(port, "GET", "/")[0] == 200:
                    break
            except OSError:
                pass
            if theirs.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"azmlinfsrv did not start (exit {theirs.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        with Scorer(env.python, root / "code", "score.py", root / "model") as ours:
            yield port, ours._port
    finally:
        os.killpg(theirs.pid, signal.SIGTERM)
        theirs.wait(30)


CASES = [
    ("GET", "/", None),
    ("POST", "/score", b'{"data": [[1, 2], [3, 4]]}'),
    ("GET", "/score?data=" + quote("[[1, 2]]") + "&x=1&x=a", None),  # query parameters as the input
    ("OPTIONS", "/score", None),  # a CORS preflight
    ("POST", "/score", b'{"fail": true}'),  # run() raises
    ("POST", "/score", b"not json"),  # run() raises on its own parsing
    ("GET", "/swagger.json", None),
    ("GET", "/swagger.json?version=3", None),
    ("GET", "/swagger.json?version=7", None),
    ("GET", "/nowhere", None),
]


@pytest.mark.parametrize(("method", "path", "body"), CASES, ids=[f"{m} {p[:24]}" for m, p, _ in CASES])
def test_same_answers_as_azmlinfsrv(servers, method, path, body):
    theirs, ours = servers
    t_status, t_body, t_headers = _request(theirs, method, path, body)
    o_status, o_body, o_headers = _request(ours, method, path, body)
    assert o_status == t_status, (t_body, o_body)
    if t_status == 200 and path.startswith("/score") and method != "OPTIONS":
        assert json.loads(o_body) == json.loads(t_body)
    if path == "/":
        assert o_body == t_body == b"Healthy"
    if path.startswith("/score") and method != "OPTIONS":
        assert o_headers["x-ms-run-function-failed"] == t_headers["x-ms-run-function-failed"]
    if t_status == 500:  # the deliberate difference: ours says what went wrong
        assert json.loads(o_body)["message"].startswith("run() raised")
    if path.startswith("/swagger.json") and t_status == 200:
        t_doc, o_doc = json.loads(t_body), json.loads(o_body)
        t_defs = t_doc.get("definitions") or t_doc["components"]["schemas"]
        o_defs = o_doc.get("definitions") or o_doc["components"]["schemas"]
        assert o_defs["ServiceInput"] == t_defs["ServiceInput"] and o_defs["ServiceOutput"] == t_defs["ServiceOutput"]
        assert set(o_doc["paths"]) == set(t_doc["paths"])
