from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

BASE = """\
apiVersion: deployctl/v1
name: credit-risk
model:
  path: ./model.pkl
code:
  path: ./src
  entry: score.py
scoring:
  type: real-time
  sample_request: ./sample.json
targets:
{targets}
"""

MEMORY_TARGETS = """\
  - name: dev
    kind: memory
  - name: prod
    kind: memory
    size: 2
"""


@pytest.fixture
def project(tmp_path: Path):
    """A folder with a model, code and sample request; returns write(manifest_text) -> path."""
    (tmp_path / "model.pkl").write_bytes(b"model-bytes")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    (tmp_path / "sample.json").write_text('{"data": [[1, 2, 3]]}')

    def write(text: str | None = None, name: str = "deployctl.yaml", targets: str = MEMORY_TARGETS) -> Path:
        body = text if text is not None else BASE.format(targets=targets.rstrip("\n"))
        path = tmp_path / name
        path.write_text(textwrap.dedent(body))
        return path

    write.dir = tmp_path  # type: ignore[attr-defined]
    return write
