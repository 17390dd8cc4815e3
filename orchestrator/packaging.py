"""Content hashes and archives for models and code: the only copies deploys make.

- :func:`tree_digest` — a sha256 over a file or folder's relative paths, modes and contents,
  stable across machines and checkouts (mtime-free), so unchanged work is skipped everywhere
  (environments, uploads, registrations).
- :func:`archive_tree` — stream a folder into a ``.tar.zst`` without a staging copy: zstd level 3
  with all cores compresses many times faster than gzip at a similar ratio (see
  ``bench/packaging.py``).
- :func:`extract_archive` — the reverse, refusing paths that escape the destination.

Files that never belong in a deployment (``__pycache__``, ``.git``, ``.deployctl`` state,
editor droppings) are skipped by both.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from orchestrator.errors import UserError

IGNORED_DIRS = frozenset({"__pycache__", ".git", ".deployctl", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                          ".ipynb_checkpoints", ".venv", "node_modules"})
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")
_CHUNK = 1 << 20


# Where a model or code tree may never lead: reading these blocks, never ends or is not content.
SPECIAL_ROOTS = ("/proc", "/sys", "/dev")


class UnsupportedFileError(UserError):
    """A model or code tree holds something that is not a regular file or folder (a FIFO, a
    device, a socket, a broken symlink): reading it could block forever or never end."""


def _special(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r + "/") for r in SPECIAL_ROOTS)


def _refuse(path: str, what: str) -> UnsupportedFileError:
    return UnsupportedFileError(
        f"{path}: {what}; models and code may hold only regular files and folders",
        hint="copy the real file in place of it, or move it out of the folder")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def iter_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, absolute path) of every file below ``root``, sorted (each folder's
    files, then its sub-folders), ignoring the usual junk.  A single file yields itself under its
    own name.

    Entries are classified with lstat, never opened: a FIFO, socket or device (or a symlink to
    one, or into /proc, /sys or /dev) raises :class:`UnsupportedFileError` instead of hanging
    whoever reads it.  A symlink to a regular file counts as that file; a symlinked folder is not
    descended into (no loops)."""
    root = Path(root)
    base = str(root)
    try:
        st = os.stat(base)
    except OSError as e:
        raise UnsupportedFileError(f"{base}: {e.strerror or e}") from None
    if _special(base):
        raise _refuse(base, "is on a special filesystem (/proc, /sys or /dev)")
    if stat.S_ISREG(st.st_mode):
        yield root.name, root
        return
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(base, f"is {_kind(st.st_mode)}")
    stack = [(base, "")]
    while stack:
        dirpath, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(dirpath), key=lambda e: e.name)
        except OSError as e:
            raise UnsupportedFileError(f"{dirpath}: cannot read the folder: {e.strerror or e}") from None
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            name = entry.name
            rel = f"{prefix}/{name}" if prefix else name  # string joins: this runs for every file of a venv
            if entry.is_dir(follow_symlinks=False):
                if name not in IGNORED_DIRS:
                    subdirs.append((entry.path, rel))
                continue
            if name.endswith(IGNORED_SUFFIXES) or name == ".DS_Store":
                continue
            if entry.is_file(follow_symlinks=False):
                yield rel, Path(entry.path)
                continue
            if not entry.is_symlink():
                raise _refuse(entry.path, f"is {_kind(entry.stat(follow_symlinks=False).st_mode)}")
            try:
                target = os.stat(entry.path)
            except OSError:
                raise _refuse(entry.path, "is a broken symlink") from None
            if stat.S_ISDIR(target.st_mode):
                continue  # as os.walk does: a symlinked folder is not followed
            if not stat.S_ISREG(target.st_mode):
                raise _refuse(entry.path, f"is a symlink to {_kind(target.st_mode)}")
            if _special(entry.path):
                raise _refuse(entry.path, "is a symlink into /proc, /sys or /dev")
            yield rel, Path(entry.path)
        stack.extend(reversed(subdirs))


def check_tree(root: Path) -> int:
    """Walk ``root`` as :func:`iter_files` does without reading a byte; the number of files.
    Raises :class:`UnsupportedFileError` for anything that is not a regular file or folder."""
    return sum(1 for _ in iter_files(root))


def _open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading without ever blocking on a FIFO swapped in after the walk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refuse(str(path), f"is {_kind(mode)}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with _open_regular(path) as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: Path) -> str:
    """sha256 of a file or folder's content (paths, executable bits and bytes; not mtimes)."""
    h = hashlib.sha256()
    for rel, path in iter_files(root):
        with _open_regular(path) as f:
            executable = bool(os.fstat(f.fileno()).st_mode & stat.S_IXUSR)
            h.update(f"{rel}\0{int(executable)}\0".encode())
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def tree_size(root: Path) -> int:
    """Bytes of content below ``root`` (what a model needs in memory, at least)."""
    return sum(p.stat().st_size for _, p in iter_files(root))


@dataclass(frozen=True)
class ArchiveInfo:
    path: Path
    files: int
    raw_bytes: int
    compressed_bytes: int
    digest: str | None  # tree_digest of what was archived, when asked for


def archive_tree(root: Path, dest: Path, *, level: int = 3, threads: int = -1, digest: bool = False) -> ArchiveInfo:
    """Write ``root`` as a zstd-compressed tar at ``dest`` (atomically).

    Entries are normalised (no owners, mtime 0) so equal content gives equal archives.  Tar
    headers are written directly rather than through ``tarfile``'s stream layer, whose small
    Python-level reads cost more than the compression itself on a venv's ten thousand files.
    With ``digest=True`` the :func:`tree_digest` is computed from the same reads (no second pass).
    """
    import tarfile  # archive-only imports: digests (every plan) do not need them

    import zstandard

    root = Path(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    files = raw = 0
    h = hashlib.sha256() if digest else None
    cctx = zstandard.ZstdCompressor(level=level, threads=threads)
    try:
        with open(tmp, "wb") as out, cctx.stream_writer(out, closefd=False, write_size=_CHUNK) as z:
            for rel, path in iter_files(root):
                with _open_regular(path) as f:
                    st = os.fstat(f.fileno())
                    executable = bool(st.st_mode & stat.S_IXUSR)
                    info = tarfile.TarInfo(rel)
                    info.size, info.mtime, info.mode = st.st_size, 0, 0o755 if executable else 0o644
                    z.write(info.tobuf(tarfile.GNU_FORMAT))
                    if h:
                        h.update(f"{rel}\0{int(executable)}\0".encode())
                    left = st.st_size
                    while left > 0:
                        chunk = f.read(min(left, 8 * _CHUNK))
                        if not chunk:
                            raise OSError(f"{path} shrank while being archived")
                        z.write(chunk)
                        if h:
                            h.update(chunk)
                        left -= len(chunk)
                    if st.st_size % tarfile.BLOCKSIZE:
                        z.write(b"\0" * (tarfile.BLOCKSIZE - st.st_size % tarfile.BLOCKSIZE))
                    if h:
                        h.update(b"\0")
                files += 1
                raw += st.st_size
            z.write(b"\0" * (2 * tarfile.BLOCKSIZE))  # end-of-archive marker
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ArchiveInfo(dest, files, raw, dest.stat().st_size, h.hexdigest() if h else None)


def extract_archive(archive: Path, dest: Path) -> int:
    """Extract a ``.tar.zst`` made by :func:`archive_tree` into ``dest``; returns the file count."""
    import tarfile

    import zstandard

    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(archive, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as zin:
        with tarfile.open(fileobj=zin, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                target = (dest / member.name).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise ValueError(f"archive entry escapes the destination: {member.name}")
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                os.chmod(target, member.mode)
                n += 1
    return n
