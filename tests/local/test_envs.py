"""Local environments: requirement digests, and real builds with uv."""

from __future__ import annotations

import pytest

from orchestrator.errors import UserError
from targets.local.envs import input_digest


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


@pytest.mark.slow
def test_a_lock_resolved_without_an_environment_is_the_one_the_local_target_installs(tmp_path):
    """``resolve_lock`` (an image build needs only the pins) builds no environment, and the local
    target later installs exactly those pins from it: the same lock as installing would record."""
    from targets.local.envs import ensure_environment, resolve_lock, wait_for_bytecode

    reqs = ["joblib>=1.6,<1.6.1", "six"]
    lock = resolve_lock(reqs, "3.11", cache=tmp_path)
    text = lock.read_text()
    assert text.startswith("# python 3.11\n") and "joblib==1.6.0" in text and "six==" in text
    assert not list((tmp_path / "envs").glob("[!.]*"))  # nothing installed
    assert resolve_lock(reqs, "3.11", cache=tmp_path) == lock  # known: not resolved again
    env = ensure_environment(reqs, "3.11", cache=tmp_path)
    assert env.lock == lock and lock.read_text() == text  # the local target took these pins
    fresh = ensure_environment(reqs, "3.11", cache=tmp_path / "other")  # installing records the same set
    assert sorted(fresh.lock.read_text().splitlines()) == sorted(text.splitlines())
    wait_for_bytecode(60)


def test_missing_python_is_a_clear_error(tmp_path):
    from targets.local.envs import ensure_environment

    with pytest.raises(UserError, match=r"Python 3\.2, asked for by conda\.yaml:4, is not installed") as exc:
        ensure_environment(["joblib==1.6.0"], "3.2", cache=tmp_path, python_source="conda.yaml:4")
    assert "uv python install 3.2" in str(exc.value)


