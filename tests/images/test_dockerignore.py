"""``.dockerignore`` applied to a Dockerfile's build context as Docker applies it: what is sent,
and that a change in an ignored file leaves the context's tag (so the image) as it was."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from orchestrator.images.acrtasks import build_context, context_tag


def _context(tmp: Path, ignore: str | None) -> Path:
    ctx = tmp / "ctx"
    for rel in ("Dockerfile", "app.py", "notes.md", "data/big.bin", "data/keep.bin", "sub/data/x.bin",
                "sub/y.log", "a/b/c/deep.log", "secrets.env"):
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(rel)
    if ignore is not None:
        (ctx / ".dockerignore").write_text(ignore)
    return ctx


def _sent(ctx: Path) -> list[str]:
    archive = build_context(ctx, "Dockerfile").archive
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())


ALL = ["Dockerfile", "a/b/c/deep.log", "app.py", "data/big.bin", "data/keep.bin", "notes.md", "secrets.env",
       "sub/data/x.bin", "sub/y.log"]


@pytest.mark.parametrize(("ignore", "sent"), [
    (None, ALL),
    # a folder excludes what is below it; "!" re-includes; patterns are anchored at the root
    ("# comment\ndata\n!data/keep.bin\n*.md\n", [".dockerignore", "Dockerfile", "a/b/c/deep.log", "app.py",
                                                 "data/keep.bin", "secrets.env", "sub/data/x.bin", "sub/y.log"]),
    # "*" stays in one segment, "**" crosses them; a leading "/" or "./" means the root
    ("*.log\n**/*.log\n/secrets.env\n./notes.md\n", [".dockerignore", "Dockerfile", "app.py", "data/big.bin",
                                                    "data/keep.bin", "sub/data/x.bin"]),
    ("*/data\n", [".dockerignore", *[x for x in ALL if not x.startswith("sub/data/")]]),
    # the Dockerfile and .dockerignore are always sent
    ("*\n", [".dockerignore", "Dockerfile"]),
])
def test_dockerignore_decides_what_the_context_holds(tmp_path, ignore, sent):
    assert _sent(_context(tmp_path, ignore)) == sorted(sent)


def test_a_change_in_an_ignored_file_keeps_the_tag_and_a_sent_one_changes_it(tmp_path):
    ctx = _context(tmp_path, "data\n")
    before = context_tag(ctx, "Dockerfile")
    assert before == build_context(ctx, "Dockerfile").tag  # the plan's key is the registry's tag
    (ctx / "data" / "big.bin").write_text("changed")
    assert context_tag(ctx, "Dockerfile") == before
    (ctx / "app.py").write_text("changed")
    assert context_tag(ctx, "Dockerfile") != before
