"""The local target's batch resume (by content, never by path), where its output lands, what it
reports, and what the scoring script logs: end to end, with real processes."""

from __future__ import annotations

import json
import textwrap

import pytest

from orchestrator.target import InvokeRequest

pytestmark = pytest.mark.slow

BATCH_SCORE = '''
import logging, os, joblib
model = None
def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "model.pkl"))
def run(mini_batch):
    rows = []
    for path in mini_batch:
        logging.info("scoring %s", os.path.basename(path))
        print("print from run() for", os.path.basename(path))
        values = [[float(x) for x in line.split(",")] for line in open(path).read().split()]
        rows += [f"{os.path.basename(path)},{int(c)}" for c in model.predict(values)]
    return rows
'''
SETOSA, VIRGINICA = "5.1,3.5,1.4,0.2\n", "6.7,3.0,5.2,2.3\n"


def _target(project):
    e = project.engine()
    return e, e.target(e.manifest.targets[0])


def _progress(engine) -> list[str]:
    return [ev[2] for ev in engine.reporter.events if ev[0] == "progress"]


def test_batch_resume_is_keyed_by_content_and_output_lands_beside_the_manifest(project_factory, tmp_path,
                                                                             monkeypatch):
    p = project_factory(scoring="batch")
    p.write_score(BATCH_SCORE)
    (p.root / "sample.json").write_text(SETOSA)
    assert p.apply()[1].ok
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        (inputs / f"f{i}.csv").write_text(SETOSA)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the manifest's folder decides, not the current one

    e, target = _target(p)
    first = target.invoke(InvokeRequest(inputs=[inputs]))
    assert first.ok, first.details
    out = p.root / "predictions.csv"  # scoring.batch.output_file's default, relative to the manifest
    assert first.output == str(out) and not list(elsewhere.iterdir())
    assert out.read_text().splitlines() == ["f0.csv,0", "f1.csv,0", "f2.csv,0"]

    # the same path with new rows is new work: scored again (not "resuming: 3 of 3" and old rows)
    (inputs / "f1.csv").write_text(VIRGINICA + VIRGINICA)
    e, target = _target(p)
    changed = target.invoke(InvokeRequest(inputs=[inputs]))
    assert changed.ok, changed.details
    assert out.read_text().splitlines() == ["f0.csv,0", "f1.csv,2", "f1.csv,2", "f2.csv,0"]
    assert "resuming: 2 of 3 mini-batches were done by an earlier run" in _progress(e)

    # unchanged inputs: nothing is scored again
    log = target.ctx.state_dir / "batch.log"
    scored_before = log.read_text().count("scoring f")
    e, target = _target(p)
    again = target.invoke(InvokeRequest(inputs=[inputs]))
    assert again.ok and "resuming: 3 of 3 mini-batches were done by an earlier run" in _progress(e)
    assert out.read_text().splitlines() == ["f0.csv,0", "f1.csv,2", "f1.csv,2", "f2.csv,0"]
    assert log.read_text().count("scoring f") == scored_before

    # the scoring script's logging and prints are the deployment's logs
    logs = target.logs(tail=200)
    assert "root - scoring f1.csv" in logs and "print from run() for f1.csv" in logs


def test_queue_workers_are_reported_and_started(project_factory):
    p = project_factory(scoring="near-real-time")
    p.manifest.write_text(p.manifest.read_text().replace("queue: {workers: 1,", "queue: {workers: 2,"))
    e, result = p.apply()
    assert result.ok, result.targets[0].error
    assert any("(2 queue worker(s), 1 HTTP worker(s))" in m for m in _progress(e)), _progress(e)
    _, target = _target(p)
    record = json.loads((target.ctx.state_dir / "deployment.json").read_text())
    status = json.loads(open(record["status_file"]).read())
    assert len(status["workers"]) == 3  # one HTTP front, two queue workers


def test_the_scoring_scripts_logging_and_prints_reach_the_logs(project_factory):
    p = project_factory()
    p.write_score(textwrap.dedent('''
        import logging
        log = logging.getLogger("my.scorer")
        def init():
            logging.info("root info from init()")
            print("print from init()")
        def run(raw_data):
            log.info("named info from run()")
            logging.debug("debug is below the level")
            print("print from run()")
            return {"ok": True}
    '''))
    _, result = p.apply()  # the smoke test calls run() once
    assert result.ok, result.targets[0].error
    _, target = _target(p)
    assert target.invoke(InvokeRequest(body={"data": []})).ok
    logs = target.logs(tail=200)
    for line in ("root - root info from init()", "print from init()", "my.scorer - named info from run()",
                 "print from run()"):
        assert line in logs, logs
    assert "debug is below the level" not in logs
    # azmlinfsrv's format: "<UTC time> I [pid] logger - message"
    named = next(x for x in logs.splitlines() if "named info from run()" in x)
    assert " I [" in named
