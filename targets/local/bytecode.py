"""The bytecode store: compiled modules shared by every environment, keyed by content.

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

    bytecode/<cache tag>/<sha256 of a source>.pyc
                               a CHECKED_HASH pyc of that source + a CRC-32 trailer
    envs/<lock hash>/.deployctl-bytecode
                               the environment's background compile is over (a JSON summary)
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from orchestrator.state import write_atomic
from targets.local.bytecode_worker import valid

BYTECODE = "bytecode"  # the shared store, under the cache root
BYTECODE_DONE = ".deployctl-bytecode"  # in an environment: its background compile is over (a JSON summary)
# The background compile: a stdlib-only script run by the environment's own interpreter.
WORKER = Path(__file__).with_name("bytecode_worker.py")

_compiling: list[subprocess.Popen[bytes]] = []

def compile_in_background(env_dir: Path, root: Path | None = None) -> None:
    """Compile the environment's bytecode in a detached, idle-priority process, into the shared
    store under ``root`` (the environment's cache root) and linked from there into place (.pyc
    files are replaced atomically, so a server importing at the same moment is safe)."""
    site = _site_packages(env_dir)
    if site is None:
        return
    root = root or env_dir.parent.parent
    _compiling[:] = [p for p in _compiling if p.poll() is None]
    _compiling.append(subprocess.Popen(
        [str(env_dir / "bin" / "python"), "-I", str(WORKER), str(site), str(root / BYTECODE), str(env_dir / BYTECODE_DONE)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))  # -I: no PYTHON* variable applies


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
        if not valid(data, magic=None):
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


