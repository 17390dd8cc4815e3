from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.engine import Engine
from orchestrator.events import RecordingReporter
from orchestrator.manifest import load_manifest
from targets.local import processes

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"

SCORE = '''
import json, os, time
import joblib

model = None

def init():
    global model
    if os.environ.get("FAIL_INIT"):
        raise RuntimeError("cannot load the model: " + os.environ["FAIL_INIT"])
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model", "model.pkl"))

def run(raw_data):
    body = json.loads(raw_data)
    if body.get("fail"):
        raise ValueError("asked to fail")
    if body.get("sleep"):
        time.sleep(body["sleep"])
    return {"predictions": model.predict(body["data"]).tolist(), "version": VERSION}

VERSION = 1
'''


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory):
    """One environment cache for the session: the first test builds, the others reuse."""
    path = tmp_path_factory.mktemp("deployctl-cache")
    old = os.environ.get("DEPLOYCTL_CACHE_DIR")
    os.environ["DEPLOYCTL_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DEPLOYCTL_CACHE_DIR", None)
    else:
        os.environ["DEPLOYCTL_CACHE_DIR"] = old


class Project:
    """A deployable folder: the quickstart model and environment, a scoring script we can edit."""

    def __init__(self, root: Path, scoring: str = "real-time", target_extra: str = "",
                 variables: dict[str, str] | None = None) -> None:
        self.root = root
        shutil.copytree(QUICKSTART / "model", root / "model")
        shutil.copy(QUICKSTART / "requirements.txt", root / "requirements.txt")
        (root / "src").mkdir()
        self.write_score(SCORE)
        (root / "sample.json").write_text('{"data": [[5.1, 3.5, 1.4, 0.2]]}')
        # (a JSON flow mapping on one line, indented as the dedented block below expects)
        env_vars = f"\n              variables: {json.dumps(variables)}" if variables else ""
        self.manifest = root / "deployctl.yaml"
        self.manifest.write_text(textwrap.dedent(f"""\
            apiVersion: deployctl/v1
            name: test-model
            model: {{path: ./model}}
            environment:
              requirements: ./requirements.txt{env_vars}
            code: {{path: ./src, entry: score.py}}
            scoring:
              type: {scoring}
              sample_request: ./sample.json
              queue: {{workers: 1, visibility_timeout_s: 2, max_attempts: 3}}
              batch: {{mini_batch_size: 1, max_concurrency: 2, error_threshold: 0, max_retries: 1}}
            targets:
              - name: dev
                kind: local
            """) + textwrap.indent(target_extra, "    "))
        self.engines: list[Engine] = []

    def write_score(self, text: str) -> None:
        (self.root / "src" / "score.py").write_text(text)

    def engine(self) -> Engine:
        e = Engine(load_manifest(self.manifest, use_environ=True), reporter=RecordingReporter())
        self.engines.append(e)
        return e

    def apply(self):
        e = self.engine()
        return e, e.apply(e.plan(), check_fresh=False)

    def destroy(self) -> None:
        e = self.engine()
        e.apply(e.plan(destroy=True), check_fresh=False)


@pytest.fixture
def project_factory(tmp_path, env_cache):
    made: list[Project] = []

    def make(**kw) -> Project:
        p = Project(tmp_path / f"p{len(made)}", **kw)
        made.append(p)
        return p

    yield make
    for p in made:  # every server a test starts is stopped by the test
        try:
            p.destroy()
        except Exception:
            pass


class Server:
    """The runtime's server started on its own (by this venv's Python: it is stdlib-only)."""

    def __init__(self, tmp: Path, script: str, *args: str) -> None:
        code = tmp / "code"
        code.mkdir(parents=True)
        (code / "score.py").write_text(textwrap.dedent(script))
        self.status_file = tmp / "status.json"
        self.log = tmp / "server.log"
        cmd = [sys.executable, "-m", "deployctl_runtime.server", "--code", str(code), "--entry", "score.py",
               "--status-file", str(self.status_file), "--public-port", "0", "--public-now", *args]  # 0: any free port
        self.pid = processes.start_detached(cmd, processes.runtime_env({"AZUREML_MODEL_DIR": str(tmp)}),
                                            tmp / "server.log", cwd=code)
        status = processes.wait_for(self.status_file, self.pid, lambda s: bool(s.get("public")), 60)
        if not status.get("public"):
            self.stop()
            pytest.fail(f"server did not start: status {status}, alive {processes.alive(self.pid)}, "
                        f"log: {(tmp / 'server.log').read_text()[-2000:]}")
        self.port = int(status["public_port"])

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read(), r
        finally:
            conn.close()

    def stop(self) -> None:
        processes.stop(self.pid)


@pytest.fixture
def server(tmp_path):
    started: list[Server] = []

    def start(script: str, *args: str) -> Server:
        s = Server(tmp_path / f"s{len(started)}", script, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
        assert not processes.alive(s.pid)
