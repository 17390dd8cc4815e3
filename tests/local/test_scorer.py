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


def test_a_forgotten_scorer_stops_with_its_owner(tmp_path, env_cache):
    """A caller that exits without stop() must not leave a server behind."""
    import subprocess
    import sys
    import time

    from targets.local import processes

    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text("def init(): pass\ndef run(raw):\n    return raw\n")
    owner = subprocess.run([sys.executable, "-c", f"""
from pathlib import Path
import sys
from targets.local.scorer import Scorer
s = Scorer(Path(sys.executable), Path({str(code)!r}), "score.py", Path({str(tmp_path)!r})).start()
print(s._pid)
"""], capture_output=True, text=True, timeout=120, cwd=QUICKSTART.parents[1])
    assert owner.returncode == 0, owner.stderr
    pid = int(owner.stdout.split()[-1])
    deadline = time.monotonic() + 10
    while processes.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes.alive(pid)


def test_a_worker_that_dies_without_a_word_is_described(tmp_path):
    """A worker killed while starting (the OOM killer's way) or failing outside the scoring contract
    must not end in an empty message: the error names how it ended, or carries the traceback."""
    import sys
    from pathlib import Path

    code = tmp_path / "code"
    code.mkdir()
    (code / "killed.py").write_text("import os, signal\ndef init():\n    os.kill(os.getpid(), signal.SIGKILL)\n"
                                    "def run(raw):\n    return raw\n")
    with pytest.raises(TargetError) as err, Scorer(Path(sys.executable), code, "killed.py", tmp_path):
        pass
    assert "a worker process killed by SIGKILL" in str(err.value) and "out-of-memory" in str(err.value)
    # an error in the server's own machinery (here: made to fail from score.py) reaches the log
    (code / "broken.py").write_text("import sys\ns = sys.modules['__main__']  # the server, run as python -m\n"
                                    "def _fail(*a):\n    raise OSError('no sockets today')\n"
                                    "s.serve = _fail\ndef init(): pass\ndef run(raw):\n    return raw\n")
    with pytest.raises(TargetError) as err, Scorer(Path(sys.executable), code, "broken.py", tmp_path):
        pass
    assert "OSError: no sockets today" in str(err.value) and "Traceback" in str(err.value)
