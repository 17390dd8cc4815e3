"""The Scorer the Azure simulator uses: the local runtime without the local target's lifecycle."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import TargetError
from targets.local.envs import build_environment
from targets.local.scorer import Scorer
from tests.local.conftest import QUICKSTART, SCORE

pytestmark = pytest.mark.slow


def test_score_and_batch_with_a_built_environment(tmp_path, env_cache):
    python = build_environment(requirements=(QUICKSTART / "requirements.txt").read_text())
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(SCORE + '''
def _batch(mini_batch):
    return [p + ",ok" for p in mini_batch]
''')
    (code / "batch.py").write_text("def init(): pass\ndef run(mini_batch):\n    return [f.rsplit('/', 1)[-1] for f in mini_batch]\n")
    with Scorer(python, code, "score.py", QUICKSTART) as s:
        status, body, headers = s.score(json.dumps({"data": [[6.7, 3.0, 5.2, 2.3]]}).encode())
        assert status == 200 and json.loads(body)["predictions"] == [2]
        assert headers["x-ms-run-function-failed"] == "False"
        assert s.score(b'{"fail": true}')[0] == 500
    files = []
    for i in range(3):
        f = tmp_path / f"in{i}.txt"
        f.write_text("x")
        files.append(f)
    assert Scorer(python, code, "batch.py", QUICKSTART).run_batch(files, mini_batch_size=2) == ["in0.txt", "in1.txt", "in2.txt"]
    bad = code / "bad.py"
    bad.write_text("def init():\n    raise RuntimeError('no model here')\ndef run(x): pass\n")
    with pytest.raises(TargetError, match="no model here"):
        Scorer(python, code, "bad.py", QUICKSTART).start()
