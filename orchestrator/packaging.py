"""Content hashes and archives for models and code: the only copies deploys make.

- :func:`tree_digest` — a sha256 over a file or folder's relative paths, modes and contents,
  stable across machines and checkouts (mtime-free), so unchanged work is skipped everywhere
  (environments, uploads, registrations).
- :func:`archive_tree` — stream a folder into a ``.tar.zst`` without a staging copy: zstd level 3
  on every core compresses many times faster than gzip at a similar ratio, and a repack copies
  the top-level entries whose files did not change from the previous archive (see
  ``bench/packaging.py``).
- :func:`extract_archive` — the reverse, refusing paths that escape the destination.

Files that never belong in a deployment (``__pycache__``, ``.git``, ``.deployctl`` state,
editor droppings) are skipped by both.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

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


_SCANDIR_FD = os.scandir in os.supports_fd
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_by_name = operator.attrgetter("name")


def walk_files(root: Path) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative posix path, absolute path, stat) of every file below ``root``, sorted (each
    folder's files, then its sub-folders), ignoring the usual junk; one ``stat`` each and no
    ``Path`` objects (this runs for every file of a venv, where pathlib's parsing costs more than
    the system calls).  A single file yields itself under its own name.

    Entries are classified without being opened: a FIFO, socket or device (or a symlink to one,
    or into /proc, /sys or /dev) raises :class:`UnsupportedFileError` instead of hanging whoever
    reads it.  A symlink to a regular file counts as that file (its stat is the target's); a
    symlinked folder is not descended into (no loops, as os.walk)."""
    base = os.fspath(root)
    try:
        st = os.stat(base)
    except OSError as e:
        raise UnsupportedFileError(f"{base}: {e.strerror or e}") from None
    if _special(base):
        raise _refuse(base, "is on a special filesystem (/proc, /sys or /dev)")
    if stat.S_ISREG(st.st_mode):
        yield os.path.basename(base), base, st
        return
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(base, f"is {_kind(st.st_mode)}")
    stack = [(base, "")]
    while stack:
        dirpath, prefix = stack.pop()
        # Through the folder's descriptor where the platform allows: each file's stat is then an
        # fstatat() of its name, not a lookup of its whole path (15-25% of an unchanged repack).
        fd = None
        try:
            try:
                if _SCANDIR_FD:
                    fd = os.open(dirpath, _DIR_FLAGS)
                with os.scandir(dirpath if fd is None else fd) as it:
                    entries = sorted(it, key=_by_name)
            except OSError as e:
                raise UnsupportedFileError(f"{dirpath}: cannot read the folder: {e.strerror or e}") from None
            subdirs: list[tuple[str, str]] = []
            for entry in entries:
                name = entry.name
                rel = f"{prefix}/{name}" if prefix else name  # string joins: this runs for every file of a venv
                path = f"{dirpath}/{name}"
                if entry.is_dir(follow_symlinks=False):
                    if name not in IGNORED_DIRS:
                        subdirs.append((path, rel))
                    continue
                if name.endswith(IGNORED_SUFFIXES) or name == ".DS_Store":
                    continue
                if entry.is_file(follow_symlinks=False):
                    yield rel, path, entry.stat()
                    continue
                if not entry.is_symlink():
                    raise _refuse(path, f"is {_kind(entry.stat(follow_symlinks=False).st_mode)}")
                try:
                    target = os.stat(path)
                except OSError:
                    raise _refuse(path, "is a broken symlink") from None
                if stat.S_ISDIR(target.st_mode):
                    continue  # as os.walk does: a symlinked folder is not followed
                if not stat.S_ISREG(target.st_mode):
                    raise _refuse(path, f"is a symlink to {_kind(target.st_mode)}")
                if _special(path):
                    raise _refuse(path, "is a symlink into /proc, /sys or /dev")
                yield rel, path, target
        finally:
            if fd is not None:
                os.close(fd)
        stack.extend(reversed(subdirs))


def iter_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, absolute path) of every file below ``root``: :func:`walk_files`."""
    for rel, path, _ in walk_files(root):
        yield rel, Path(path)


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
            h.update(f"{rel}\0{int(executable)}\0".encode("utf-8", "surrogateescape"))
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def tree_size(root: Path) -> int:
    """Bytes of content below ``root`` (what a model needs in memory, at least)."""
    return sum(st.st_size for _, _, st in walk_files(root))


@dataclass(frozen=True)
class ArchiveInfo:
    path: Path
    files: int
    raw_bytes: int
    compressed_bytes: int
    digest: str | None  # tree_digest of what was archived, when asked for
    segments: int = 0  # top-level entries, each stored as its own run of zstd frames
    reused: int = 0  # segments copied from the previous archive at ``path`` without reading them


# An archive is a run of zstd frames (concatenated frames are one valid zstd stream: ``tar --zstd
# -x`` and :func:`extract_archive` read straight through).  Each top-level entry of the tree (a
# package of a venv, a folder of code) belongs to a *segment* (a few entries, see _segments): one
# frame, streamed through zstd's own worker threads and ended with FLUSH_FRAME, so a repack can
# copy the frames of what did not change.
_PIECE = 4 << 20  # bytes read or copied at a time
# A file modified within this long before the previous archive was started may have changed in
# the same timestamp tick as its stat was taken ("racy git"): it is read again, never trusted.
RACY_MARGIN_NS = 1_000_000_000
_INDEX_VERSION = 2  # 2: a stamp per segment instead of every file's signature
# Top-level entries per segment on average.  48 rather than 16: a 207 MB venv (9,069 files, 2
# cores) packs in 0.66 s (min of 4, interleaved) as 6 frames against 0.84 s as 17 frames, as fast
# as one frame (0.67 s), while a changed package is still repacked with about a sixth of the tree.
SEGMENT_GROUP = 48


class _Entry(NamedTuple):  # a tuple, not a frozen dataclass: built once per file of a venv
    rel: str
    path: str
    size: int
    executable: bool
    signature: tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, device

    @property
    def changed_ns(self) -> int:
        return max(self.signature[1], self.signature[2])


def _segments(root: Path, group: int = SEGMENT_GROUP) -> list[tuple[str, list[_Entry]]]:
    """The tree's files in archive order, grouped into segments of whole top-level entries.

    A segment ends after a top-level entry whose name hashes to 0 mod ``group`` (names, not
    sizes: a package that changes, comes or goes moves no boundary but its own), so a venv's two
    hundred packages make a handful of frames: each frame flush drains zstd's worker threads
    (measured on a 200 MB venv: one frame 0.94 s, 8 frames 1.05 s, 24 frames 1.09 s, one per
    package, 206 frames, 1.31 s; see SEGMENT_GROUP for the default)."""
    import zlib

    out: list[tuple[str, list[_Entry]]] = []
    current: list[_Entry] = []
    tops: list[str] = []

    def close() -> None:
        if current:
            out.append(("|".join(tops), list(current)))
            current.clear()
            tops.clear()

    new = tuple.__new__  # _Entry's own __new__ is a Python function: a third of this loop
    for rel, path, st in walk_files(root):
        e = new(_Entry, (rel, path, st.st_size, bool(st.st_mode & 0o100),
                         (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)))
        top = rel.partition("/")[0]
        if not tops or tops[-1] != top:
            if tops and zlib.crc32(os.fsencode(tops[-1])) % group == 0:
                close()
            tops.append(top)
        current.append(e)
    close()
    return out


def _index_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.index.json")


def _reusable(dest: Path, root: Path, level: int) -> dict[str, Any] | None:
    """The previous archive's index when it describes the archive now at ``dest`` (same size,
    inode and mtime), made from the same folder at the same level; else None."""
    import json

    try:
        index = json.loads(_index_path(dest).read_text())
        st = dest.stat()
    except (OSError, ValueError):
        return None
    if (index.get("version") != _INDEX_VERSION or index.get("root") != str(root.resolve())
            or index.get("level") != level
            or index.get("archive") != [st.st_size, st.st_mtime_ns, st.st_ino]):
        return None
    return index


_MTIME_NS, _CTIME_NS = operator.itemgetter(1), operator.itemgetter(2)
_SIGNATURE = operator.attrgetter("signature")


def _stamp(seg: list[_Entry]) -> str:
    """One digest of a segment's names, executable bits and stat signatures (the index keeps
    this, not every file's signature: a venv's index was 1 MB of JSON to parse on every repack).
    marshal format 2 has no back-references, so equal listings give equal bytes; it runs in C
    (4x faster than repr here)."""
    import marshal

    return hashlib.sha256(marshal.dumps([(e.rel, e.executable, e.signature) for e in seg], 2)).hexdigest()


def _unchanged(seg: list[_Entry], old: dict[str, Any] | None, started_ns: int) -> bool:
    """Every file of ``seg`` has the stat signature it had when ``old`` was written, and none
    changed within the racy margin before that archive was started."""
    if old is None or old["count"] != len(seg) or old["stamp"] != _stamp(seg):
        return False
    newest = max(max(map(_MTIME_NS, map(_SIGNATURE, seg))), max(map(_CTIME_NS, map(_SIGNATURE, seg))))
    return newest < started_ns - RACY_MARGIN_NS


# The constant part of a GNU tar header for a regular file: after the checksum, the type flag
# ('0'), an empty link name, the GNU magic, empty owner names, empty device fields (as tarfile
# writes them for files), an empty prefix and the block's padding.
_HEADER_TAIL = b"0" + b"\0" * 100 + b"ustar  \0" + b"\0" * (32 + 32 + 8 + 8 + 155 + 12)
_HEADER_TAIL_SUM = sum(_HEADER_TAIL) + 8 * ord(" ")  # the checksum counts its own field as spaces
_OWNERS = b"0000000\0" * 2  # uid, gid: root
_MTIME = b"%011o\0" % 0


def _tar_header(rel: str, size: int, executable: bool) -> bytes:
    """The GNU tar header of a normalised regular file: the bytes ``tarfile`` writes for it
    (tested), built directly because ``TarInfo.tobuf`` costs 18 µs a file, a third of reading a
    venv's 9,000 files.  Names over 100 bytes and sizes over 8 GiB go through ``tarfile`` (GNU
    long-name records, base-256 sizes)."""
    name = os.fsencode(rel)
    if len(name) > 100 or size >= 8 ** 11:
        import tarfile

        info = tarfile.TarInfo(rel)
        info.size, info.mtime, info.mode = size, 0, 0o755 if executable else 0o644
        return info.tobuf(tarfile.GNU_FORMAT)
    head = name.ljust(100, b"\0") + (b"0000755\0" if executable else b"0000644\0") + _OWNERS + b"%011o\0" % size + _MTIME
    return head + b"%06o\0 " % (sum(head) + _HEADER_TAIL_SUM) + _HEADER_TAIL


_BATCH = 1 << 20  # small files are handed to the compressor in batches of about this much


def _write_tar(seg: list[_Entry], write: Any, h: Any) -> None:
    """Write the tar blocks of ``seg`` (normalised headers: no owners, mtime 0) through ``write``;
    ``h`` (a sha256 or None) is fed what :func:`tree_digest` reads.

    Files are read with plain ``os.read`` (no file objects: a venv is mostly small files, where
    Python's per-file overhead, not the bytes, is the cost) and small ones are passed on in
    batches, so the compressor sees few large writes."""
    batch: list[bytes] = []
    pending = 0
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)  # never block on a FIFO swapped in after the walk
    for e in seg:
        fd = os.open(e.path, flags)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise _refuse(e.path, f"is {_kind(mode)}")
            batch.append(_tar_header(e.rel, e.size, e.executable))
            if h:
                h.update(f"{e.rel}\0{int(e.executable)}\0".encode("utf-8", "surrogateescape"))
            left = e.size
            while left > 0:
                chunk = os.read(fd, min(left, _PIECE))
                if not chunk:
                    raise OSError(f"{e.path} shrank while being archived")
                batch.append(chunk)
                pending += len(chunk)
                if h:
                    h.update(chunk)
                left -= len(chunk)
                if pending >= _BATCH:
                    write(b"".join(batch))
                    batch.clear()
                    pending = 0
            if h:
                h.update(b"\0")
        finally:
            os.close(fd)
        if e.size % 512:
            batch.append(b"\0" * (512 - e.size % 512))
        pending += 512
    if batch:
        write(b"".join(batch))


def archive_tree(root: Path, dest: Path, *, level: int = 3, threads: int = -1, digest: bool = False,
                 incremental: bool = True, group: int = SEGMENT_GROUP) -> ArchiveInfo:
    """Write ``root`` as a zstd-compressed tar at ``dest`` (atomically).

    Entries are normalised (no owners, mtime 0) and pieces are compressed independently, so equal
    content gives byte-equal archives, whether made in one go or incrementally.  Tar headers are
    written directly rather than through ``tarfile``'s stream layer, whose small Python-level
    reads cost more than the compression itself on a venv's ten thousand files.

    ``incremental``: when ``dest`` holds this function's previous archive of the same folder, a
    segment whose files all have the stat signature they had then (size, mtime, ctime, inode,
    device: ctime cannot be set back by a user, so an overwrite under the same path is seen) is
    copied from it unread and uncompressed.  The index beside the archive is checked against the
    archive itself, so a stale or foreign index only costs a full repack.
    With ``digest=True`` the :func:`tree_digest` is computed from the same reads (no second
    pass); an incremental repack reads reused segments only to hash them, and a fully unchanged
    tree takes the digest recorded with the archive.
    ``threads``: zstd's worker threads (-1: one per core; 0: compress in this thread).  ``group``:
    top-level entries per segment on average (1: one each; the index records which, so a repack
    with another ``group`` simply packs in full).
    """
    import json
    import time

    import zstandard

    root = Path(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    started_ns = time.time_ns()
    segments = _segments(root, group)
    previous = _reusable(dest, root, level) if incremental else None
    reuse: set[str] = set()
    old_segments: dict[str, Any] = {}
    if previous is not None:
        old_segments = {s["name"]: s for s in previous["segments"]}
        reuse = {name for name, seg in segments if _unchanged(seg, old_segments.get(name), previous["started_ns"])}
        if len(reuse) == len(segments) == len(old_segments) and (not digest or previous.get("digest")):
            return ArchiveInfo(dest, previous["files"], previous["raw_bytes"], dest.stat().st_size,
                               previous["digest"] if digest else None, len(segments), len(segments))

    cctx = zstandard.ZstdCompressor(level=level, threads=threads)
    tmp = dest.with_name(f".{dest.name}.tmp")
    h = hashlib.sha256() if digest else None
    files = raw = 0
    index_segments: list[dict[str, Any]] = []
    try:
        with open(tmp, "wb") as out, (open(dest, "rb") if reuse else contextlib.nullcontext()) as old:
            z = cctx.stream_writer(out, closefd=False, write_size=_CHUNK)
            for name, seg in segments:
                start = out.tell()  # the previous frame was flushed whole into ``out``
                if name in reuse and old is not None:
                    src = old_segments[name]
                    old.seek(src["offset"])
                    left = src["length"]
                    while left > 0:
                        chunk = old.read(min(left, _PIECE))
                        if not chunk:
                            raise OSError(f"{dest} shrank while being repacked")
                        out.write(chunk)
                        left -= len(chunk)
                    if h:
                        _write_tar(seg, lambda _b: None, h)  # hashed, not compressed
                else:
                    _write_tar(seg, z.write, h)
                    z.flush(zstandard.FLUSH_FRAME)
                index_segments.append({"name": name, "offset": start, "length": out.tell() - start,
                                       "count": len(seg), "stamp": _stamp(seg)})
                files += len(seg)
                raw += sum(e.size for e in seg)
            z.write(b"\0" * 1024)  # tar's end-of-archive marker, a frame of its own
            z.flush(zstandard.FLUSH_FRAME)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = dest.stat()
    tree_sha = h.hexdigest() if h else None
    index = {"version": _INDEX_VERSION, "root": str(root.resolve()), "level": level, "started_ns": started_ns,
             "archive": [st.st_size, st.st_mtime_ns, st.st_ino], "files": files, "raw_bytes": raw,
             "digest": tree_sha, "segments": index_segments}
    from orchestrator.state import write_atomic

    write_atomic(_index_path(dest), json.dumps(index, separators=(",", ":")))
    return ArchiveInfo(dest, files, raw, st.st_size, tree_sha, len(segments), len(reuse))


def extract_archive(archive: Path, dest: Path) -> int:
    """Extract a ``.tar.zst`` made by :func:`archive_tree` into ``dest``; returns the file count."""
    import tarfile

    import zstandard

    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(archive, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True) as zin:
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
