"""Content digests and zstd archives."""

from __future__ import annotations

import os
import tarfile
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import packaging
from orchestrator.packaging import (
    archive_tree,
    extract_archive,
    file_digest,
    iter_files,
    tree_digest,
    tree_size,
)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "score.py").write_text("def init(): pass\n")
    (root / "pkg" / "data.bin").write_bytes(os.urandom(50_000))
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"junk")
    return root


def test_digest_ignores_junk_and_mtimes_but_not_content_or_modes(tree):
    d = tree_digest(tree)
    (tree / "__pycache__" / "other.pyc").write_bytes(b"more junk")
    os.utime(tree / "score.py", (0, 0))
    assert tree_digest(tree) == d
    (tree / "run.sh").chmod(0o644)
    assert tree_digest(tree) != d
    (tree / "run.sh").chmod(0o755)
    (tree / "score.py").write_text("def init(): return 1\n")
    assert tree_digest(tree) != d


def test_single_file_digest_and_size(tree):
    f = tree / "score.py"
    assert tree_digest(f) != file_digest(f)  # the tree digest includes the name
    assert tree_size(tree) == sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def test_archive_round_trip_is_deterministic(tree, tmp_path):
    a = archive_tree(tree, tmp_path / "a.tar.zst", digest=True)
    b = archive_tree(tree, tmp_path / "b.tar.zst")
    assert a.digest == tree_digest(tree)
    assert b.digest is None
    assert (tmp_path / "a.tar.zst").read_bytes() == (tmp_path / "b.tar.zst").read_bytes()
    assert a.files == 3 and a.raw_bytes > 50_000
    out = tmp_path / "out"
    assert extract_archive(a.path, out) == 3
    assert tree_digest(out) == tree_digest(tree)
    assert os.access(out / "run.sh", os.X_OK)


@pytest.fixture
def venv_like(tmp_path):
    """Several top-level packages (segments), one file bigger than a compression piece."""
    root = tmp_path / "site-packages"
    for pkg in ("alpha", "beta", "gamma"):
        (root / pkg).mkdir(parents=True)
        for i in range(20):
            (root / pkg / f"m{i}.py").write_text(f"# {pkg} {i}\n" + "x = 1\n" * (i * 50))
    (root / "beta" / "big.so").write_bytes(os.urandom(3 << 20) + b"\0" * (3 << 20))  # > one 4 MiB piece
    (root / "top.pth").write_text("alpha\n")
    past = time.time() - 10  # older than the racy margin, so a repack may trust the stat
    for p in root.rglob("*"):
        os.utime(p, (past, past))
    time.sleep(packaging.RACY_MARGIN_NS / 1e9 + 0.05)  # ctime is now: wait it out once
    return root


def test_an_unchanged_tree_is_repacked_without_reading_and_equals_a_full_pack(venv_like, tmp_path):
    dest = tmp_path / "venv.tar.zst"
    first = archive_tree(venv_like, dest, digest=True, group=1)
    assert first.segments == 4 and first.reused == 0
    full_bytes = dest.read_bytes()
    again = archive_tree(venv_like, dest, digest=True, group=1)
    assert again.reused == again.segments == 4
    assert again.digest == first.digest == tree_digest(venv_like)
    assert dest.read_bytes() == full_bytes
    out = tmp_path / "out"
    assert extract_archive(dest, out) == first.files
    assert tree_digest(out) == tree_digest(venv_like)


def test_an_overwrite_under_the_same_path_size_and_mtime_is_seen(venv_like, tmp_path):
    dest = tmp_path / "venv.tar.zst"
    archive_tree(venv_like, dest, group=1)
    f = venv_like / "beta" / "m3.py"
    st = f.stat()
    f.write_text(f.read_text().replace("x = 1", "x = 2"))  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; ctime cannot be
    repacked = archive_tree(venv_like, dest, digest=True, group=1)
    assert repacked.reused == 3  # alpha, gamma, top.pth
    assert repacked.digest == tree_digest(venv_like)
    fresh = archive_tree(venv_like, tmp_path / "fresh.tar.zst", group=1)
    assert dest.read_bytes() == fresh.path.read_bytes()  # incremental == full, byte for byte
    out = tmp_path / "out"
    extract_archive(dest, out)
    assert (out / "beta" / "m3.py").read_text() == f.read_text()


def test_racy_files_are_never_trusted(tree, tmp_path):
    dest = tmp_path / "a.tar.zst"
    archive_tree(tree, dest)
    # written just now, within the racy margin of the first pack: they are read again
    assert archive_tree(tree, dest).reused == 0


def test_an_archive_replaced_behind_its_index_is_repacked_in_full(venv_like, tmp_path):
    dest = tmp_path / "a.tar.zst"
    archive_tree(venv_like, dest, group=1)
    assert archive_tree(venv_like, dest, group=1).reused == 4
    archive_tree(venv_like / "alpha", tmp_path / "other.tar.zst")
    os.replace(tmp_path / "other.tar.zst", dest)
    again = archive_tree(venv_like, dest, group=1)
    assert again.reused == 0
    out = tmp_path / "out"
    extract_archive(dest, out)
    assert tree_digest(out) == tree_digest(venv_like)


def test_walk_matches_os_walk_order_and_skips_linked_folders(tree, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not part of the tree")
    (tree / "linked").symlink_to(outside, target_is_directory=True)
    (tree / "pkg" / "sub").mkdir()
    (tree / "pkg" / "sub" / "z.py").write_text("")
    (tree / "pkg" / "a.py").write_text("")
    expected = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = os.path.relpath(dirpath, tree)
        expected += [name if rel == "." else f"{rel}/{name}" for name in sorted(filenames)]
    assert [rel for rel, _ in iter_files(tree)] == expected
    assert not any("secret" in rel for rel in expected)


def test_segments_group_entries_by_name_so_a_change_moves_no_other_boundary(venv_like, tmp_path):
    from orchestrator.packaging import _segments

    before = [name for name, _ in _segments(venv_like, 2)]
    assert len(before) < 4 or all("|" not in n for n in before)
    (venv_like / "beta" / "new.py").write_text("x = 2\n" * 1000)  # a package grows: no boundary moves
    assert [name for name, _ in _segments(venv_like, 2)] == before
    a = archive_tree(venv_like, tmp_path / "a.tar.zst", group=2)
    out = tmp_path / "out"
    assert extract_archive(a.path, out) == a.files
    assert tree_digest(out) == tree_digest(venv_like)


@settings(max_examples=300, deadline=None)
@given(name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=120),
       size=st.one_of(st.integers(0, 10**6), st.just(8 ** 11 - 1), st.just(8 ** 11)), executable=st.booleans())
def test_tar_headers_are_the_bytes_tarfile_writes(name, size, executable):
    """The direct header builder (a third of a venv's packing time saved) writes what tarfile's
    GNU format writes for the same normalised entry: short and long names, non-ASCII, the
    largest octal size and the first base-256 one."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o755 if executable else 0o644
    assert packaging._tar_header(name, size, executable) == info.tobuf(tarfile.GNU_FORMAT)


def test_archives_read_back_through_gnu_tar(tmp_path):
    """Names at and over the 100-byte field, non-ASCII and undecodable bytes, empty files and
    exact 512-byte multiples: GNU tar lists what was archived, with the modes normalised."""
    import shutil
    import subprocess

    if shutil.which("tar") is None or shutil.which("zstd") is None and not _tar_has_zstd():
        pytest.skip("GNU tar with zstd support is not installed")
    root = tmp_path / "t"
    root.mkdir()
    names = ["a" * 100, "b" * 101, "ünïcødé.txt", "empty", "block"]
    for n in names:
        (root / n).write_bytes(b"" if n == "empty" else b"x" * 512 if n == "block" else n.encode())
    weird = os.fsencode(str(root)) + b"/bad-\xff-name"
    with open(weird, "wb") as f:
        f.write(b"bytes")
    (root / "ünïcødé.txt").chmod(0o700)
    info = archive_tree(root, tmp_path / "t.tar.zst")
    listing = subprocess.run(["tar", "--zstd", "-tvf", str(info.path)], capture_output=True, check=True).stdout
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(info.path), "-C", str(out)], check=True)
    assert tree_digest(out) == tree_digest(root)
    assert b"-rwxr-xr-x" in listing and listing.count(b"-rw-r--r--") == len(names)
    assert os.path.exists(os.fsencode(str(out)) + b"/bad-\xff-name")


def _tar_has_zstd() -> bool:
    import subprocess

    return subprocess.run(["tar", "--zstd", "--help"], capture_output=True).returncode == 0
