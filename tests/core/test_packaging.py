"""Content digests and zstd archives."""

from __future__ import annotations

import os

import pytest

from orchestrator.packaging import archive_tree, extract_archive, file_digest, tree_digest, tree_size


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
