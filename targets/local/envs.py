"""Isolated scoring environments, built with uv and shared by content.

An environment is resolved and installed once (``uv pip install``), what was installed is kept
as its lock (``uv pip freeze``), and the environment is keyed by the lock's hash: identical
environments are shared across deployments, and a code-only redeploy reuses one instantly.
Builds go through uv's shared cache.

Bytecode (without it every start compiles imports from source: 3-4x slower here) comes from a
content-addressed store shared by all environments under the cache root.  A new environment is
given, before its first start, the pyc of every file whose content the store already has
(:func:`link_bytecode`: keys read from the distributions' RECORD files, entries hardlinked into
``__pycache__``), so changing requirements.txt no longer recompiles numpy, scipy and
scikit-learn, whose files uv links from its cache unchanged.  What the store lacks is compiled
by a detached, idle-priority process once the environment is in place (the environment is
usable at once: its first start writes the bytecode of what it imports), which also fills the
store and links its entries into the environment (:func:`compile_in_background`).

Entries are hash-based pycs (PEP 552) of the CHECKED kind: valid wherever the same source lives,
whatever its mtime, and Python compares the source's hash on every import, so a wrong key (a
RECORD that lies, a source edited in place) costs a compile from source, never a stale module.
Measured against timestamp pycs, interleaved, ``import sklearn.ensemble`` warm (1,267 modules):
1,478 vs 1,480 ms wall and 1,539 vs 1,511 ms CPU (medians of 21), 0.93x and 0.99x wall, 1.00x and
1.02x CPU in two runs of ``bench/coldstart.py``: no difference out of the noise, so the check is
kept (UNCHECKED_HASH, which skips reading the sources, was no faster either: 1,546 ms).
Entries are written to a temp file and renamed (two deployctl processes racing on one entry
both write a valid pyc of the same source: the last rename wins), carry a CRC-32 trailer and
are checked whole before being linked: a damaged one is removed, never linked.

Trust: the store is code that every environment runs.  It has the trust of the environments
under the same cache root, which are code too: whoever can write the one can write the other.
Python's check of each pyc against its source's hash (CHECKED_HASH) catches mistakes, not an
attacker, who can write a pyc with the matching hash.
Size: the store grows by every distinct source file compiled (the quickstart's environment:
2,230 entries, 66 MB) and nothing prunes it (deployctl has no cache-cleaning command; nor does
anything prune ``envs/``).  Deleting ``bytecode/`` at any time is safe: environments keep their
hardlinked pycs, and new ones are compiled again.  Entries are hardlinked, so damage done in
place to one (not a replacement) reaches the environments linked to it, as with uv's cache.

Layout under the cache root (``$DEPLOYCTL_CACHE_DIR`` or ``~/.cache/deployctl``)::

    locks/<input hash>.txt     the lock for a requirements input (skips re-resolving)
    envs/<lock hash>/          a finished environment (marker file .deployctl-complete; its
                               background compile's summary in .deployctl-bytecode when over)
    bytecode/<cache tag>/<sha256 of a source>.pyc
                               the store: a CHECKED_HASH pyc of that source + a CRC-32 trailer
"""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import TargetError
from orchestrator.requirements import conda_to_requirements
from orchestrator.state import write_atomic

COMPLETE = ".deployctl-complete"
BYTECODE = "bytecode"  # the shared store, under the cache root
BYTECODE_DONE = ".deployctl-bytecode"  # in an environment: its background compile is over (a JSON summary)

def cache_root(override: Path | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get("DEPLOYCTL_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "deployctl"


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


@dataclass(frozen=True)
class Environment:
    python: Path  # the environment's interpreter
    root: Path
    lock_hash: str
    lock: Path
    reused: bool


def input_digest(requirements: list[str], python: str) -> str:
    text = f"python=={python}\n" + "\n".join(sorted(r.strip() for r in requirements if r.strip()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(args: list[str], what: str) -> str:
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise TargetError(f"{what} failed:\n{tail}")
    return proc.stdout


def find_python(version: str, source: str = "environment.python") -> Path:
    """The interpreter for ``version`` (``source``: where the manifest asked for it)."""
    from orchestrator.pythons import PythonChoice
    from orchestrator.pythons import find_python as find

    return find(PythonChoice(version, source))


def ensure_environment(requirements: list[str], python: str, *, cache: Path | None = None,
                       progress: object = None, python_source: str = "environment.python") -> Environment:
    """The environment for ``requirements`` on Python ``python``: reused when its lock exists,
    else resolved, locked and installed (under a lock, so concurrent deploys build it once).

    A new input is resolved and installed by one ``uv pip install`` (resolving separately first
    would ask the index twice: 0.4 s of a 0.6 s build here), and what it installed is recorded
    as the lock (``uv pip freeze``, plus the input's index options), which names the environment.
    A known input syncs its lock into a fresh environment only when that one was deleted."""
    root = cache_root(cache)
    key = input_digest(requirements, python)
    lock = root / "locks" / f"{key}.txt"
    say = progress if callable(progress) else (lambda _msg: None)
    (root / "envs").mkdir(parents=True, exist_ok=True)
    (root / "locks").mkdir(parents=True, exist_ok=True)
    if lock.exists():
        lock_hash = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
        with _flock(root / "envs" / f".{lock_hash}.lock"):
            env_dir = root / "envs" / lock_hash
            if not (env_dir / COMPLETE).exists():
                say("creating the environment from its lock with uv (shared cache)")
                tmp = _new_venv(root, lock_hash, find_python(python, python_source))
                _run([uv_bin(), "pip", "sync", "--quiet", "--python", str(tmp / "bin" / "python"), str(lock)],
                     "installing the environment (uv pip sync)")
                _finish(tmp, env_dir, lock_hash, root)
                return Environment(env_dir / "bin" / "python", env_dir, lock_hash, lock, reused=False)
        return Environment(env_dir / "bin" / "python", env_dir, lock_hash, lock, reused=True)

    with _flock(root / "locks" / f".{key}.lock"):  # one build per input, however many deploys ask
        if lock.exists():
            return ensure_environment(requirements, python, cache=cache, progress=progress, python_source=python_source)
        say(f"resolving and installing {len(requirements)} requirement(s) with uv (shared cache)")
        req_file = root / "locks" / f"{key}.in"
        write_atomic(req_file, "\n".join(requirements) + "\n")
        tmp = _new_venv(root, key, find_python(python, python_source))
        try:
            tmp_python = str(tmp / "bin" / "python")
            _run([uv_bin(), "pip", "install", "--quiet", "--python", tmp_python, "-r", str(req_file)],
                 "installing the environment (uv pip install)")
            frozen = _run([uv_bin(), "pip", "freeze", "--python", tmp_python], "recording the lock (uv pip freeze)")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        text = f"# python {python}\n" + "".join(o + "\n" for o in index_options(requirements)) + frozen
        lock_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
        env_dir = root / "envs" / lock_hash
        with _flock(root / "envs" / f".{lock_hash}.lock"):
            reused = (env_dir / COMPLETE).exists()  # another input resolved to the same packages
            if reused:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                _finish(tmp, env_dir, lock_hash, root)
            write_atomic(lock, text)  # last: a lock names a finished environment
        return Environment(env_dir / "bin" / "python", env_dir, lock_hash, lock, reused=reused)


def resolve_lock(requirements: list[str], python: str, *, cache: Path | None = None, progress: object = None,
                 python_source: str = "environment.python") -> Path:
    """The lock for ``requirements`` on Python ``python``, without building an environment:
    the one the local target recorded, else resolved now (``uv pip compile`` for this machine's
    interpreter, as the local target's install would resolve it) and kept where
    :func:`ensure_environment` finds it, so a later local deploy installs exactly these pins.
    For builders that need only the pins (a container image installs them for its own platform)."""
    root = cache_root(cache)
    key = input_digest(requirements, python)
    lock = root / "locks" / f"{key}.txt"
    if lock.exists():
        return lock
    say = progress if callable(progress) else (lambda _msg: None)
    (root / "locks").mkdir(parents=True, exist_ok=True)
    with _flock(root / "locks" / f".{key}.lock"):
        if lock.exists():
            return lock
        say(f"resolving {len(requirements)} requirement(s) with uv (no environment built)")
        req_file = root / "locks" / f"{key}.in"
        write_atomic(req_file, "\n".join(requirements) + "\n")
        pins = _run([uv_bin(), "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--python",
                     str(find_python(python, python_source)), str(req_file)], "resolving the requirements (uv pip compile)")
        pins = "".join(x.strip() + "\n" for x in pins.splitlines()
                       if x.strip() and not x.strip().startswith("#") and not _INDEX_OPTION.match(x.strip()))
        write_atomic(lock, f"# python {python}\n" + "".join(o + "\n" for o in index_options(requirements)) + pins)
    return lock


_INDEX_OPTION = re.compile(r"^(-i|--index-url|--extra-index-url|-f|--find-links|--no-index)\b")


def index_options(requirements: list[str]) -> list[str]:
    """The requirements' index options (``--extra-index-url ...``): a lock re-synced later must
    reach the same indexes.  Pure."""
    return [r.strip() for r in requirements if _INDEX_OPTION.match(r.strip())]


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _new_venv(root: Path, name: str, interpreter: Path) -> Path:
    tmp = root / "envs" / f".{name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    _run([uv_bin(), "venv", "--quiet", "--python", str(interpreter), str(tmp)], "creating the virtual environment")
    return tmp


def _finish(tmp: Path, env_dir: Path, lock_hash: str, root: Path) -> None:
    """Move a built venv to its final name (venvs record absolute paths: fix them), give it the
    bytecode the store already has, mark it complete, and start compiling the rest (and filling
    the store) in the background."""
    shutil.rmtree(env_dir, ignore_errors=True)
    os.replace(tmp, env_dir)
    _fix_venv_paths(tmp, env_dir)
    link_bytecode(env_dir, root)
    (env_dir / COMPLETE).write_text(lock_hash)
    compile_in_background(env_dir, root)


_compiling: list[subprocess.Popen[bytes]] = []

# The background compile, run by the environment's own interpreter (its magic number, its cache
# tag).  Idle priority (SCHED_IDLE where Linux has it, else nice 19): it runs on CPU nobody else
# wants, so the first version's start and the zygote's imports are not slowed by it.  For each
# .py of site-packages: the store entry named by the sha256 of the bytes it reads is used when it
# verifies, else those same bytes are compiled into a new entry (temp file + os.replace); then
# the entry is hardlinked into place (a copy where links fail), replacing what the first start
# wrote.  Entries are CHECKED_HASH pycs (optimization level 0 whatever PYTHONOPTIMIZE says: the
# runtime runs without -O) followed by an 8-byte trailer, b"dctl" + the CRC-32 of everything
# before it, which importlib never reads (marshal.loads ignores what follows the code object).
# The summary goes to ``.deployctl-bytecode`` in the environment once everything is in place.
_COMPILE = """\
import hashlib, importlib.util, json, marshal, os, struct, sys, time, zlib
try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    os.nice(19)
site, store, marker = sys.argv[1:4]
tag = sys.implementation.cache_tag
store = os.path.join(store, tag)
os.makedirs(store, exist_ok=True)
MAGIC = importlib.util.MAGIC_NUMBER


def valid(data):
    return (len(data) > 24 and data[:4] == MAGIC and data[-8:-4] == b"dctl"
            and zlib.crc32(memoryview(data)[:-8]) == struct.unpack("<I", data[-4:])[0])


def write_new(path, data):
    tmp = f"{os.path.dirname(path)}/.tmp-{os.getpid()}-{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def one(src):
    try:
        return place(src)
    except OSError:  # unreadable, a full disk, a store we may not write to: this file only
        return "failed"


def place(src):
    with open(src, "rb") as f:
        source = f.read()
    key = hashlib.sha256(source).hexdigest()
    entry = os.path.join(store, key + ".pyc")
    folder, name = os.path.split(src)
    pyc = os.path.join(folder, "__pycache__", f"{name[:-3]}.{tag}.pyc")
    try:
        with open(entry, "rb") as f:
            data = f.read()
    except OSError:
        data = b""
    if valid(data):
        try:
            if os.path.samefile(entry, pyc):
                return "in_place"
        except OSError:
            pass
        status = "linked"
    else:
        try:
            code = compile(source, src, "exec", dont_inherit=True, optimize=0)
        except Exception:
            return "failed"
        body = MAGIC + struct.pack("<I", 0b11) + importlib.util.source_hash(source) + marshal.dumps(code)
        data = body + struct.pack("<4sI", b"dctl", zlib.crc32(body))
        write_new(entry, data)
        status = "compiled"
    os.makedirs(os.path.dirname(pyc), exist_ok=True)
    tmp = f"{pyc}.{os.getpid()}-{os.urandom(6).hex()}"
    try:
        os.link(entry, tmp)
        os.replace(tmp, pyc)
    except OSError:  # another device, too many links, the entry replaced meanwhile
        try:
            os.unlink(tmp)
        except OSError:
            pass
        write_new(pyc, data)
    return status


t0 = time.monotonic()
files = []
for folder, dirs, names in os.walk(site):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    files += [os.path.join(folder, n) for n in names if n.endswith(".py")]
counts = dict.fromkeys(("compiled", "linked", "in_place", "failed"), 0)
try:
    import concurrent.futures, multiprocessing
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(one, files, chunksize=32))
except (ImportError, ValueError, OSError, NotImplementedError):
    results = [one(f) for f in files]
for r in results:
    counts[r] += 1
counts["seconds"] = round(time.monotonic() - t0, 3)
write_new(marker, json.dumps(counts).encode())
sys.exit(1 if counts["failed"] else 0)
"""


def compile_in_background(env_dir: Path, root: Path | None = None) -> None:
    """Compile the environment's bytecode in a detached, idle-priority process, into the shared
    store under ``root`` (the environment's cache root) and linked from there into place (.pyc
    files are replaced atomically, so a server importing at the same moment is safe)."""
    site = _site_packages(env_dir)
    if site is None:
        return
    root = root or env_dir.parent.parent
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    _compiling[:] = [p for p in _compiling if p.poll() is None]
    _compiling.append(subprocess.Popen(
        [str(env_dir / "bin" / "python"), "-c", _COMPILE, str(site), str(root / BYTECODE), str(env_dir / BYTECODE_DONE)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env))


def wait_for_bytecode(timeout: float | None = None) -> None:
    """Wait for the background compiles this process started (benchmarks: measure the next
    thing on a quiet machine; tests: leave no process behind)."""
    for proc in _compiling:
        proc.wait(timeout)
    _compiling.clear()


def _site_packages(env_dir: Path) -> Path | None:
    return next((env_dir / "lib").glob("python3*/site-packages"), None)


def _cache_tag(site: Path) -> str | None:
    """The cache tag of the environment's interpreter (``cpython-311``), read from its layout
    without starting it: ``lib/python3.11`` and pyvenv.cfg's implementation.  CPython only (uv
    finds only CPython here); None for anything else, which then gets no bytecode linked."""
    m = re.fullmatch(r"python(\d+)\.(\d+)t?", site.parent.name)
    try:
        cfg = (site.parents[2] / "pyvenv.cfg").read_text()
    except OSError:
        cfg = ""
    impl = re.search(r"^implementation\s*=\s*(\S+)", cfg, re.M)
    if m is None or (impl is not None and impl.group(1).lower() != "cpython"):
        return None
    return f"cpython-{m.group(1)}{m.group(2)}"


def _record_keys(site: Path) -> Iterator[tuple[str, str]]:
    """(path under site-packages, sha256 hex of its content) for each .py the installed
    distributions' RECORD files list: their hashes, read instead of the sources (measured on the
    quickstart's 2,376 files: 6-10 ms, against 85-105 ms to hash the files).  A RECORD can be
    wrong (uv installs a wheel whose RECORD lies): a wrong key links a pyc whose embedded source
    hash does not match, which Python then ignores (CHECKED_HASH; see :func:`link_bytecode`).  A
    line without a sha256 hash falls back to hashing the file; a distribution without a RECORD,
    and files no RECORD lists, are left to the background compile."""
    for info in site.glob("*.dist-info"):
        try:
            text = (info / "RECORD").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for row in csv.reader(io.StringIO(text)):
            if len(row) < 2 or not row[0].endswith(".py") or row[0].startswith("/") or ".." in row[0].split("/"):
                continue
            algo, _, b64 = row[1].partition("=")
            if algo == "sha256" and b64:
                try:
                    yield row[0], base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
                    continue
                except ValueError:
                    pass
            try:
                yield row[0], hashlib.sha256((site / row[0]).read_bytes()).hexdigest()
            except OSError:
                continue


def _valid_entry(data: bytes) -> bool:
    """A store entry is whole: a pyc header, and the trailer's CRC-32 matches what precedes it."""
    return (len(data) > 24 and data[-8:-4] == b"dctl"
            and zlib.crc32(memoryview(data)[:-8]) == struct.unpack("<I", data[-4:])[0])


def link_bytecode(env_dir: Path, root: Path) -> int:
    """Give a new environment the bytecode the store under ``root`` already has, before its first
    start: each .py a RECORD lists whose content has an entry gets it hardlinked (copied where
    links fail) at ``__pycache__/<name>.<cache tag>.pyc``.  Returns how many were placed.

    Entries are read and checked whole before use (CRC-32 trailer): importlib falls back to the
    source only when a pyc's header is wrong; a truncated or damaged body fails the import
    itself (``EOFError: marshal data too short``).  A bad entry is not linked and is removed from
    the store, so the background compile writes it anew.  Measured on the quickstart's
    environment (2,376 .py files, 64 MB of pycs; ``bench/coldstart.py``): 90-200 ms (medians of
    7: 121 and 198 ms at load averages 2.4 and 3.5 on 2 cores), of which reading and checking
    the entries is ~45 ms; what it saves is compiling ~1,200 imported modules from source,
    2.7-3.7x slower than loading them (4.3-5.9 s against 1.6 s there)."""
    site = _site_packages(env_dir)
    tag = _cache_tag(site) if site is not None else None
    if site is None or tag is None:
        return 0
    store = root / BYTECODE / tag
    if not store.is_dir():
        return 0
    placed = 0
    made: dict[str, bool] = {}  # __pycache__ folders: usable or not
    for rel, key in _record_keys(site):
        entry = os.path.join(store, key + ".pyc")
        try:
            fd = os.open(entry, os.O_RDONLY)
        except OSError:
            continue
        try:
            ident = os.fstat(fd)
            data = os.read(fd, ident.st_size + 1)
        except OSError:
            continue
        finally:
            os.close(fd)
        if not _valid_entry(data):
            with contextlib.suppress(OSError):
                now = os.stat(entry)
                if (now.st_dev, now.st_ino) == (ident.st_dev, ident.st_ino):  # not one written meanwhile
                    os.unlink(entry)
            continue
        folder, name = os.path.split(os.path.join(site, rel))
        cache = os.path.join(folder, "__pycache__")
        if cache not in made:
            try:
                os.mkdir(cache)  # not makedirs: a folder a RECORD names but that is gone stays gone
                made[cache] = True
            except FileExistsError:
                made[cache] = True
            except OSError:
                made[cache] = False
        if not made[cache]:
            continue
        pyc = os.path.join(cache, f"{name[:-3]}.{tag}.pyc")
        try:
            os.link(entry, pyc)
        except FileExistsError:
            continue
        except OSError:  # another device, too many links to one inode, the entry replaced meanwhile
            try:
                write_atomic(Path(pyc), data)
            except OSError:  # (the background compile will try again; never a reason to fail a build)
                continue
        placed += 1
    return placed


def _fix_venv_paths(old: Path, new: Path) -> None:
    """Point a moved venv's activation scripts and pyvenv.cfg at its new place.  The interpreter
    itself resolves its prefix from its own location, so only text files mention the old path."""
    for f in [new / "pyvenv.cfg", *(new / "bin").iterdir()]:
        if f.is_file() and not f.is_symlink() and f.stat().st_size < 1 << 20:
            try:
                text = f.read_text()
            except UnicodeDecodeError:
                continue
            if str(old) in text:
                f.write_text(text.replace(str(old), str(new)))


def build_environment(*, requirements: str | None = None, conda: str | None = None, python: str = "3.11",
                      cache_root: Path | None = None) -> Path:
    """Build (or reuse) an environment from requirements text or conda.yaml text; returns its
    interpreter.  Used by the Azure simulator to really score uploaded models."""
    if conda is not None:
        reqs, pinned = conda_to_requirements(conda)
        python = pinned or python
    else:
        reqs = [r.strip() for r in (requirements or "").splitlines() if r.strip() and not r.strip().startswith("#")]
    return ensure_environment(reqs, python, cache=cache_root).python
