from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from orchestrator.engine import Engine
from orchestrator.events import RecordingReporter
from orchestrator.manifest import load_manifest

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
