"""ACI scenarios shared by the simulated tests and the opt-in live ones: only deployctl's own
interfaces (plan, apply, invoke, status, destroy), so the same function runs against either."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.azure.session import OPTIONS_KEY
from orchestrator.engine import Engine
from orchestrator.manifest import load_manifest
from orchestrator.retry import RetrySettings
from orchestrator.target import InvokeRequest, RunOptions

SCORE = ("import json, os, logging\n\ndef init():\n    global W\n    W = open(os.path.join(os.environ['AZUREML_MODEL_DIR'], "
         "'model', 'w.txt')).read().strip()\n\ndef run(raw):\n    logging.getLogger('score').info('scoring')\n"
         "    return {{'weights': W, 'n': len(json.loads(raw)['data']), 'version': {version}}}\n")


def engine(path: Path, session: Any, sleep: Callable[[float], None] | None = None, **opts: Any) -> Engine:
    kw: dict[str, Any] = {"sleep": sleep} if sleep else {}
    return Engine(load_manifest(path), state_dir=path.parent / ".state",
                  options=RunOptions(extra={OPTIONS_KEY: session}, **opts),
                  retry=RetrySettings(initial_wait=0.01, max_wait=0.05) if sleep else RetrySettings(), **kw)


def apply(path: Path, session: Any, sleep: Any = None, destroy: bool = False, **opts: Any) -> tuple[Any, Any]:
    e = engine(path, session, sleep, **opts)
    plan = e.plan(destroy=destroy)
    return plan, e.apply(plan, check_fresh=False)


def blue_green(path: Path, session: Any, sleep: Any = None) -> dict[str, Any]:
    """Create, score, no-op, a code change rolled out to a new group, score it, destroy."""
    src = path.parent / "src" / "score.py"
    src.write_text(SCORE.format(version=1))
    plan, result = apply(path, session, sleep)
    assert result.ok, result.model_dump_json(indent=2)
    first = result.targets[0].outputs
    answer = engine(path, session, sleep).invoke("prod", InvokeRequest(body={"data": [[1, 2, 3, 4], [5, 6, 7, 8]]}))
    assert answer.ok and answer.body == {"weights": "w1", "n": 2, "version": 1}, answer
    again, _ = apply(path, session, sleep)
    assert not again.has_changes, again.to_json()
    src.write_text(SCORE.format(version=2))
    _, result = apply(path, session, sleep)
    assert result.ok, result.model_dump_json(indent=2)
    second = result.targets[0].outputs
    assert second["group"] != first["group"] and second["scoring_uri"] != first["scoring_uri"]
    assert engine(path, session, sleep).invoke("prod", InvokeRequest(body={"data": [[1]]})).body["version"] == 2
    _, result = apply(path, session, sleep, destroy=True)
    assert result.ok
    assert not apply(path, session, sleep, destroy=True)[0].has_changes
    return {"first": first, "second": second}
