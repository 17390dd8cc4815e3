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


def test_index_options_are_kept_for_the_lock():
    from targets.local.envs import index_options

    reqs = ["joblib==1.6.0", "--extra-index-url https://example.org/simple", "-f ./wheels", "numpy"]
    assert index_options(reqs) == ["--extra-index-url https://example.org/simple", "-f ./wheels"]


@pytest.mark.slow
def test_environment_built_once_locked_shared_and_resynced(tmp_path):
    """The real uv: one install per input, the installed set recorded as the lock, two inputs
    resolving to the same packages share one environment, and a deleted environment comes back
    from its lock (not re-resolved)."""
    import shutil
    import subprocess

    from targets.local.envs import ensure_environment, wait_for_bytecode

    reqs = ["joblib==1.6.0"]
    first = ensure_environment(reqs, "3.11", cache=tmp_path)
    assert not first.reused
    lock = first.lock.read_text()
    assert lock.startswith("# python 3.11\n") and "joblib==1.6.0" in lock
    out = subprocess.run([str(first.python), "-c", "import joblib; print(joblib.__version__)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1.6.0"

    again = ensure_environment(["joblib==1.6.0", ""], "3.11", cache=tmp_path)  # same input digest
    assert again.reused and again.root == first.root

    other_input = ensure_environment(["joblib>=1.6,<1.6.1"], "3.11", cache=tmp_path)  # same packages
    assert other_input.reused and other_input.lock_hash == first.lock_hash

    wait_for_bytecode(60)
    shutil.rmtree(first.root)
    resynced = ensure_environment(reqs, "3.11", cache=tmp_path)
    assert not resynced.reused and resynced.lock_hash == first.lock_hash
    assert (resynced.root / ".deployctl-complete").exists()
    wait_for_bytecode(60)


def test_missing_python_is_a_clear_error(tmp_path):
    from targets.local.envs import ensure_environment

    with pytest.raises(UserError, match=r"Python 3\.2 is not installed"):
        ensure_environment(["joblib==1.6.0"], "3.2", cache=tmp_path)


def test_requirements_includes_constraints_and_local_paths(tmp_path):
    from targets.local.envs import parse_requirements

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
    from targets.local.envs import parse_requirements

    main = tmp_path / "requirements.txt"
    main.write_text("joblib\n-r missing.txt\n")
    with pytest.raises(UserError, match=r"requirements\.txt:2: -r missing\.txt: no such file"):
        parse_requirements(main, None)
    main.write_text("-r requirements.txt\n")
    with pytest.raises(UserError, match="includes itself"):
        parse_requirements(main, None)
