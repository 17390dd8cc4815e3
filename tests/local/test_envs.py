"""Local environments: requirement digests, and real builds with uv."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib

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

    from targets.local.bytecode import wait_for_bytecode
    from targets.local.envs import ensure_environment

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
    from targets.local.bytecode import wait_for_bytecode
    from targets.local.envs import ensure_environment, resolve_lock

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




# --- the shared bytecode store ---------------------------------------------------------------------

def _wheel(folder, name: str, version: str, files: dict[str, str], record: dict[str, bytes] | None = None):
    """A pure-Python wheel written by hand (no build backend, no index).  ``record`` makes its
    RECORD claim other contents for some files (uv installs such a wheel as it is)."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    lines = []
    for path, text in files.items():
        claimed = (record or {}).get(path, text.encode())
        digest = base64.urlsafe_b64encode(hashlib.sha256(claimed).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(text.encode())}")
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{info}/RECORD", "\n".join([*lines, f"{info}/RECORD,,"]) + "\n")
    return wheel


def _site(env):
    return next((env.root / "lib").glob("python3*/site-packages"))


def _tag(env) -> str:
    import subprocess

    return subprocess.run([str(env.python), "-c", "import sys; print(sys.implementation.cache_tag)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _entry(cache, env, source):
    import hashlib

    return cache / "bytecode" / _tag(env) / f"{hashlib.sha256(source.read_bytes()).hexdigest()}.pyc"


def _pyc(env, source):
    return source.parent / "__pycache__" / f"{source.stem}.{_tag(env)}.pyc"


def _loaded_from(env, module: str) -> list[str]:
    """The pycs a first start of ``env`` loads ``module``'s code from (nothing written: ``-v`` with
    PYTHONDONTWRITEBYTECODE), read from the interpreter's own ``code object from`` lines."""
    import os
    import subprocess

    proc = subprocess.run([str(env.python), "-v", "-c", f"import {module}"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, check=True)
    return [line.split("'")[1] for line in proc.stderr.splitlines() if line.startswith("# code object from '")]


def _summary(env) -> dict:
    import json

    return json.loads((env.root / ".deployctl-bytecode").read_text())


def _valid(data: bytes) -> bool:
    import struct
    import zlib

    return data[-8:-4] == b"dctl" and zlib.crc32(data[:-8]) == struct.unpack("<I", data[-4:])[0]


@pytest.mark.slow
def test_the_background_compile_fills_the_store(tmp_path):
    """Every .py of a new environment ends up in the store under the sha256 of its content, as a
    CHECKED_HASH pyc of that very content, hardlinked into the environment's __pycache__."""
    import importlib.util
    import os

    from targets.local.bytecode import wait_for_bytecode
    from targets.local.envs import ensure_environment

    env = ensure_environment(["joblib==1.6.0"], "3.11", cache=tmp_path)
    wait_for_bytecode(120)
    sources = sorted(_site(env).rglob("*.py"))
    assert len(sources) > 50 and _summary(env)["failed"] == 0
    for source in sources:
        entry = _entry(tmp_path, env, source)
        data = entry.read_bytes()
        assert _valid(data), entry
        assert int.from_bytes(data[4:8], "little") == 0b11  # hash-based, checked against the source
        assert data[8:16] == importlib.util.source_hash(source.read_bytes())
        assert os.path.samefile(entry, _pyc(env, source))
    assert not [p for p in (tmp_path / "bytecode").rglob("*") if p.name.startswith(".tmp-")]  # no temp left


@pytest.mark.slow
def test_a_new_environment_gets_the_stores_bytecode_before_its_first_start(tmp_path):
    """Environment B shares joblib's files with A (compiled): B is finished with their pycs
    already in place (its own background compile finds them there), and its first start loads
    joblib from them, not from source."""
    import os

    from targets.local.bytecode import wait_for_bytecode
    from targets.local.envs import ensure_environment

    a = ensure_environment(["joblib==1.6.0"], "3.11", cache=tmp_path)
    wait_for_bytecode(120)
    wheel = _wheel(tmp_path / "wheels", "tinypkg", "1.0", {"tinypkg/__init__.py": "VALUE = 1\n"})
    b = ensure_environment(["joblib==1.6.0", str(wheel)], "3.11", cache=tmp_path)
    assert b.lock_hash != a.lock_hash
    init = _site(b) / "joblib" / "__init__.py"
    assert os.path.samefile(_pyc(b, init), _entry(tmp_path, b, init))
    assert str(_pyc(b, init)) in _loaded_from(b, "joblib")  # the first start: from bytecode
    wait_for_bytecode(120)
    joblib_files = len(list((_site(b) / "joblib").rglob("*.py")))
    summary = _summary(b)
    assert summary["in_place"] >= joblib_files  # placed before the background compile started
    assert summary["compiled"] == 1  # tinypkg/__init__.py, the only new content


@pytest.mark.slow
def test_a_source_with_other_content_never_gets_another_files_bytecode(tmp_path):
    """Same distribution, same path, other content: never the other content's pyc.  Keys are
    contents, not paths; and where a RECORD lies about a file's content (uv installs such a
    wheel), the pyc its claim points to is refused by Python itself (CHECKED_HASH): the source
    runs."""
    import os
    import subprocess

    from targets.local.bytecode import link_bytecode, wait_for_bytecode
    from targets.local.envs import ensure_environment

    def value(env) -> str:
        return subprocess.run([str(env.python), "-c", "import tinypkg; print(tinypkg.VALUE)"], capture_output=True,
                              text=True, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}).stdout.strip()

    one = "VALUE = 1\n"
    a = ensure_environment(["joblib==1.6.0", str(_wheel(tmp_path / "w1", "tinypkg", "1.0", {"tinypkg/__init__.py": one}))],
                           "3.11", cache=tmp_path)
    wait_for_bytecode(120)
    first = _entry(tmp_path, a, _site(a) / "tinypkg" / "__init__.py")
    assert first.exists() and value(a) == "1"

    b = ensure_environment(["joblib==1.6.0", str(_wheel(tmp_path / "w2", "tinypkg", "1.0", {"tinypkg/__init__.py": "VALUE = 2\n"}))],
                           "3.11", cache=tmp_path)
    init = _site(b) / "tinypkg" / "__init__.py"
    assert not _pyc(b, init).exists()  # nothing in the store for this content
    assert _pyc(b, _site(b) / "joblib" / "__init__.py").exists()  # (the shared files were linked)
    assert value(b) == "2"

    liar = _wheel(tmp_path / "w3", "tinypkg", "1.0", {"tinypkg/__init__.py": "VALUE = 3\n"},
                  record={"tinypkg/__init__.py": one.encode()})
    c = ensure_environment(["joblib==1.6.0", str(liar)], "3.11", cache=tmp_path)
    init = _site(c) / "tinypkg" / "__init__.py"
    assert value(c) == "3"
    wait_for_bytecode(120)
    assert value(c) == "3" and os.path.samefile(_pyc(c, init), _entry(tmp_path, c, init))  # its own, compiled
    # What the lying RECORD points to, linked as a new environment gets it before its first start
    # (done again here: the background compile may already have replaced it above, a race).
    _pyc(c, init).unlink()
    link_bytecode(c.root, tmp_path)
    assert os.path.samefile(_pyc(c, init), first)  # the RECORD's claim: the other content's pyc
    assert value(c) == "3" and str(_pyc(c, init)) not in _loaded_from(c, "tinypkg")  # refused by Python
    assert _valid(first.read_bytes()) and value(a) == "1"  # the first one untouched


@pytest.mark.slow
def test_a_damaged_store_entry_is_neither_fatal_nor_passed_on(tmp_path):
    """A truncated entry and one with a damaged body (importlib would fail the import on either:
    it falls back to the source only for a bad header) are not linked into a new environment,
    are removed, and the background compile writes them anew."""
    import os
    import subprocess

    from targets.local.bytecode import wait_for_bytecode
    from targets.local.envs import ensure_environment

    a = ensure_environment(["joblib==1.6.0"], "3.11", cache=tmp_path)
    wait_for_bytecode(120)
    damaged = [_site(a) / "joblib" / "__init__.py", _site(a) / "joblib" / "parallel.py"]
    for source, damage in zip(damaged, ("truncate", "flip"), strict=True):
        entry = _entry(tmp_path, a, source)
        data = bytearray(entry.read_bytes())
        if damage == "truncate":
            data = data[: len(data) // 2]
        else:
            data[len(data) // 2] ^= 0xFF
        tmp = entry.with_name("damaged")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, entry)  # a new inode: the environments linked to the old one keep it
    # importlib itself would not survive these pycs: the import fails, no fallback to the source
    probe = tmp_path / "probe"
    (probe / "__pycache__").mkdir(parents=True)
    (probe / "m.py").write_bytes(damaged[0].read_bytes())
    os.link(_entry(tmp_path, a, damaged[0]), _pyc(a, probe / "m.py"))
    proc = subprocess.run([str(a.python), "-c", "import m"], cwd=probe, capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode != 0 and "marshal data too short" in proc.stderr

    b = ensure_environment(["joblib==1.6.0", str(_wheel(tmp_path / "w", "tinypkg", "1.0", {"tinypkg/__init__.py": "X = 1\n"}))],
                           "3.11", cache=tmp_path)
    for source in damaged:
        mine = _site(b) / source.relative_to(_site(a))
        assert not _pyc(b, mine).exists() or _valid(_pyc(b, mine).read_bytes())
    loaded = _loaded_from(b, "joblib")  # the first start works
    assert str(_pyc(b, _site(b) / "joblib" / "_utils.py")) in loaded  # (the others came from the store)
    wait_for_bytecode(120)
    assert _summary(b)["compiled"] >= 3  # the two damaged ones, and tinypkg
    for source in damaged:
        mine = _site(b) / source.relative_to(_site(a))
        assert _valid(_entry(tmp_path, b, mine).read_bytes())
        assert os.path.samefile(_pyc(b, mine), _entry(tmp_path, b, mine))


def test_the_worker_removes_only_stale_temp_files_of_dead_writers(tmp_path):
    """A writer killed between create and rename leaves a .tmp- file that nobody will rename;
    the next background compile removes it once it is an hour old, never a fresh one (a writer
    at work right now)."""
    from targets.local import bytecode_worker

    store = tmp_path / "cpython-311"
    store.mkdir()
    old, fresh, entry = store / ".tmp-1-dead", store / ".tmp-2-busy", store / ("0" * 64 + ".pyc")
    for f in (old, fresh, entry):
        f.write_bytes(b"x")
    past = time.time() - bytecode_worker.STALE_TMP_S - 60
    os.utime(old, (past, past))
    os.utime(entry, (past, past))
    assert bytecode_worker.remove_stale_temps(str(store), time.time()) == 1
    assert not old.exists() and fresh.exists() and entry.exists()


def test_a_store_entry_is_a_pyc_importlib_loads_and_its_trailer_checks(tmp_path):
    from targets.local import bytecode_worker

    source = b"VALUE = 6 * 7\n"
    data = bytecode_worker.entry_bytes(source, "m.py")
    assert bytecode_worker.valid(data) and bytecode_worker.valid(data, magic=None)
    assert not bytecode_worker.valid(data[:-1]) and not bytecode_worker.valid(data[:20] + bytes([data[20] ^ 0xFF]) + data[21:], magic=None)
    other = b"\0\0\0\0" + data[4:-8]  # another Python's entry: deployctl's check accepts it, the worker's not
    other += struct.pack("<4sI", b"dctl", zlib.crc32(other))
    assert not bytecode_worker.valid(other) and bytecode_worker.valid(other, magic=None)
    (tmp_path / "m.py").write_bytes(source)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / f"m.{sys.implementation.cache_tag}.pyc").write_bytes(data)
    out = subprocess.run([sys.executable, "-v", "-c", "import m; print(m.VALUE)"], cwd=tmp_path, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.stdout.strip() == "42" and "code object from" in out.stderr and "m.cpython" in out.stderr


def test_the_background_compile_does_test_modules_last_and_keeps_walk_order_otherwise():
    """The first start imports from source while the background compile runs beside it: what a
    serving process never imports (a package's tests) must not delay what it will."""
    from targets.local.bytecode_worker import compile_order

    site = "/env/lib/python3.11/site-packages"
    walk = [f"{site}/{rel}" for rel in (
        "numpy/__init__.py", "numpy/tests/test_core.py", "numpy/core/multiarray.py", "numpy/testing/utils.py",
        "scipy/conftest.py", "scipy/sparse/__init__.py", "scipy/sparse/test_helper.py", "sklearn/base.py",
        "attest/contest.py", "tests_helper/mod.py")]
    order = [f[len(site) + 1:] for f in compile_order(walk, site)]
    assert order == ["numpy/__init__.py", "numpy/core/multiarray.py", "scipy/sparse/__init__.py", "sklearn/base.py",
                     "attest/contest.py", "tests_helper/mod.py",
                     "numpy/tests/test_core.py", "numpy/testing/utils.py", "scipy/conftest.py", "scipy/sparse/test_helper.py"]
    assert compile_order([], site) == []
