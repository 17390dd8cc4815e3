"""Environment inputs (pure parts): conda files and requirement digests."""

from __future__ import annotations

import pytest

from orchestrator.errors import UserError
from targets.local.envs import conda_to_requirements, input_digest

CONDA = """
name: model-env
channels: [conda-forge]
dependencies:
  - python=3.11
  - pip
  - numpy=1.26
  - conda-forge::scikit-learn==1.5.2
  - pytorch>=2.1
  - pip:
      - azureml-inference-server-http
      - joblib==1.4.2
"""


def test_conda_file_to_requirements():
    reqs, python = conda_to_requirements(CONDA)
    assert python == "3.11"
    assert reqs == ["numpy==1.26.*", "scikit-learn==1.5.2", "torch>=2.1", "azureml-inference-server-http", "joblib==1.4.2"]


def test_conda_only_packages_are_named():
    with pytest.raises(UserError, match="cudatoolkit, mkl"):
        conda_to_requirements("dependencies:\n  - python=3.11\n  - cudatoolkit=11.8\n  - mkl\n", "env/conda.yaml")


def test_bad_conda_files():
    with pytest.raises(UserError, match="no 'dependencies' list"):
        conda_to_requirements("name: x\n")
    with pytest.raises(UserError, match="invalid YAML"):
        conda_to_requirements("dependencies: [\n")


def test_input_digest_ignores_order_and_blank_lines():
    assert input_digest(["b", "a", ""], "3.11") == input_digest(["a", "b"], "3.11")
    assert input_digest(["a"], "3.11") != input_digest(["a"], "3.12")
