"""Requirement lines from a manifest's environment (orchestrator.requirements): pure parsing."""

from __future__ import annotations

import pytest

from orchestrator.errors import UserError
from orchestrator.requirements import conda_to_requirements, parse_requirements

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


def test_requirements_includes_constraints_and_local_paths(tmp_path):
    (tmp_path / "req").mkdir()
    (tmp_path / "req" / "base.txt").write_text("numpy>=1.26  # shared\n-c ../constraints.txt\n")
    (tmp_path / "constraints.txt").write_text("numpy<3\n")
    (tmp_path / "wheels").mkdir()
    main = tmp_path / "requirements.txt"
    main.write_text("# model\n-r req/base.txt\nscikit-learn==1.9.1\n./wheels/mymodel-1.0-py3-none-any.whl\n"
                    "-e ./src/featurizer\n--extra-index-url https://example.org/simple\n")
    lines, python = parse_requirements(main, None)
    assert python is None
    assert lines == [
        "numpy>=1.26", f"-c {tmp_path / 'constraints.txt'}", "scikit-learn==1.9.1",
        str(tmp_path / "wheels" / "mymodel-1.0-py3-none-any.whl"), f"-e {tmp_path / 'src' / 'featurizer'}",
        "--extra-index-url https://example.org/simple",
    ]


def test_requirements_include_errors_name_file_and_line(tmp_path):
    main = tmp_path / "requirements.txt"
    main.write_text("joblib\n-r missing.txt\n")
    with pytest.raises(UserError, match=r"requirements\.txt:2: -r missing\.txt: no such file"):
        parse_requirements(main, None)
    main.write_text("-r requirements.txt\n")
    with pytest.raises(UserError, match="includes itself"):
        parse_requirements(main, None)
