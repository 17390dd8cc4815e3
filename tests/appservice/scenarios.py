"""App Service scenarios shared by the simulated tests and the opt-in live one: only deployctl's
own interfaces (plan, apply, invoke, destroy), so the same function runs against either."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.target import InvokeRequest
from tests.aci.scenarios import SCORE, apply, engine

BROKEN = "def init():\n    raise RuntimeError('model file is corrupt')\n\ndef run(raw):\n    return 1\n"


def blue_green(path: Path, session: Any, sleep: Any = None) -> dict[str, Any]:
    """Create, score, no-op replan, a code change through the staging slot and swap, a failing
    version never swapped in; the manifest's target is left deployed (version 2)."""
    src = path.parent / "src" / "score.py"
    src.write_text(SCORE.format(version=1))

    def answer() -> Any:
        res = engine(path, session, sleep).invoke("prod", InvokeRequest(body={"data": [[1, 2], [3, 4]]}))
        assert res.ok, res
        return res.body

    _, result = apply(path, session, sleep)
    assert result.ok, result.model_dump_json(indent=2)
    first = result.targets[0].outputs
    assert answer() == {"weights": "w1", "n": 2, "version": 1}
    again, _ = apply(path, session, sleep)
    assert not again.has_changes, again.to_json()
    src.write_text(SCORE.format(version=2))
    _, result = apply(path, session, sleep)
    assert result.ok, result.model_dump_json(indent=2)
    assert result.targets[0].outputs["scoring_uri"] == first["scoring_uri"]  # one host name: the swap moved versions
    assert answer()["version"] == 2
    src.write_text(BROKEN)
    _, result = apply(path, session, sleep)
    assert not result.ok and "model file is corrupt" in result.model_dump_json()
    assert answer()["version"] == 2
    src.write_text(SCORE.format(version=2))
    return first
