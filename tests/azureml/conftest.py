"""Shared fixtures of the Azure ML target tests: a small project folder and manifests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

SUB = "00000000-0000-0000-0000-000000000001"
OTHER_SUB = "00000000-0000-0000-0000-000000000002"

MANIFEST = """\
apiVersion: deployctl/v1
name: credit-risk
model:
{model}
environment:
  python: "3.11"
  requirements: ./requirements.txt
code:
  path: ./src
  entry: score.py
scoring:
  type: {scoring}
  sample_request: ./sample.json
targets:
{targets}
"""


def online_target(**extra: str) -> str:
    lines = ["  - name: prod", "    kind: online-endpoint", f"    subscription: {SUB}",
             "    resource_group: rg", "    workspace: ws"]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines)


@pytest.fixture
def project(tmp_path: Path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.pkl").write_bytes(b"model-bytes" * 100)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(
        "import json, os\n\ndef init():\n    global M\n    M = os.environ.get('AZUREML_MODEL_DIR')\n\n"
        "def run(raw):\n    return {'n': len(json.loads(raw)['data'])}\n")
    (tmp_path / "requirements.txt").write_text("scikit-learn==1.5.2\njoblib\n")
    (tmp_path / "sample.json").write_text('{"data": [[1, 2, 3]]}')

    def write(targets: str, *, model: str = "  path: ./model", scoring: str = "real-time",
              name: str = "deployctl.yaml") -> Path:
        path = tmp_path / name
        path.write_text(MANIFEST.format(model=model, scoring=scoring, targets=targets))
        return path

    write.dir = tmp_path  # type: ignore[attr-defined]
    return write


def dedent(s: str) -> str:
    return textwrap.dedent(s)
