"""Scoring processes of a persisted simulated cloud that stay warm across CLI runs.

Starting a scorer (environment, interpreter, the model's imports, ``init()``) takes seconds; a
simulated ``invoke`` is one CLI run, so a scorer that died with each run made every invoke pay it.
Here a scorer is a detached process recorded beside the cloud's state file, keyed by the content
digest of what it serves (code, model, environment, entry script, variables: see
``providers.scoring.served_digest``), reused by the next run whose deployment has that digest, and
stopped once no deployment of the cloud serves it any more (deleted, updated to other content, the
cloud reset); a scorer also stops by itself when the state file is deleted.  Layout of ``<state file's stem>-scorers/``::

    <digest>.json   {"digest", "workdir", "pid", "start_time", "port", "state"}
    <digest>.lock   held while one process checks or starts that scorer
    <digest>/       its work folder: code/, model/, status.json, server.log

The record is written before the process is started (intent), and again with its pid as soon as
it exists, so a run killed at any point leaves nothing a later run cannot find and stop: a process
is ours when its pid is alive, started at the recorded time, and runs with this folder's status
file on its command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Prepared = tuple[Path, Path, str, Path, dict[str, str]]  # python, code dir, entry, model dir, variables


def home_of(state_file: Path) -> Path:
    """Where the warm scorers of the cloud persisted at ``state_file`` are recorded."""
    return Path(state_file).with_name(Path(state_file).stem + "-scorers")


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): tells a recycled pid from ours."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pids_running(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (a scorer whose pid was never recorded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


class ScorerRegistry:
    """``watch``: the cloud's state file; a scorer stops by itself once it is deleted."""

    def __init__(self, home: Path, watch: Path | None = None) -> None:
        self.home = Path(home)
        self.watch = watch

    def _record(self, digest: str) -> Path:
        return self.home / f"{digest}.json"

    def _status_file(self, digest: str) -> Path:
        return self.home / digest / "status.json"

    def read(self, digest: str) -> dict[str, Any] | None:
        try:
            rec = json.loads(self._record(digest).read_text())
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    def _write(self, digest: str, rec: dict[str, Any]) -> None:
        from orchestrator.state import write_atomic

        write_atomic(self._record(digest), json.dumps(rec))

    def digests(self) -> set[str]:
        return {p.stem for p in self.home.glob("*.json")} if self.home.is_dir() else set()

    @contextlib.contextmanager
    def locked(self, digest: str) -> Iterator[None]:
        import fcntl

        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _ours(self, digest: str, rec: dict[str, Any] | None) -> int | None:
        """The recorded process's pid when it is still the one recorded."""
        from targets.local import processes

        pid = (rec or {}).get("pid")
        if not pid or start_time(pid) != rec.get("start_time"):  # type: ignore[union-attr]
            return None
        return pid if processes.alive(pid, marker=str(self._status_file(digest))) else None

    def running(self, digest: str) -> Any:
        """The warm scorer serving ``digest``, or None."""
        from targets.local.scorer import Scorer

        rec = self.read(digest)
        pid = self._ours(digest, rec)
        if pid is None or rec is None or rec.get("state") != "ready":
            return None
        return Scorer.attach(pid, int(rec["port"]))

    def get_or_start(self, digest: str, prepare: Callable[[Path], Prepared]) -> Any:
        """The warm scorer for ``digest``; started (``prepare(workdir)`` stages its files) when none runs."""
        from targets.local.scorer import Scorer

        if (warm := self.running(digest)) is not None:
            return warm
        with self.locked(digest):
            if (warm := self.running(digest)) is not None:  # another run started it meanwhile
                return warm
            self._stop(digest)  # a dead or half-started one
            workdir = self.home / digest
            rec: dict[str, Any] = {"digest": digest, "workdir": str(workdir), "pid": None, "start_time": None,
                                   "port": None, "state": "starting"}
            self._write(digest, rec)  # intent first: a kill from here on leaves a record to reap

            def spawned(pid: int) -> None:
                self._write(digest, {**rec, "pid": pid, "start_time": start_time(pid)})

            try:
                python, code_dir, entry, model_dir, env = prepare(workdir)
                scorer = Scorer(python, code_dir, entry, model_dir, env=env).start(
                    workdir, exit_with_parent=False, exit_without=self.watch, on_spawn=spawned)
            except BaseException:
                self._stop(digest)
                raise
            self._write(digest, {**rec, "pid": scorer.pid, "start_time": start_time(scorer.pid or 0), "port": scorer.port,
                                 "state": "ready"})
            return scorer

    def _stop(self, digest: str) -> None:
        from targets.local import processes

        rec = self.read(digest)
        pid = self._ours(digest, rec)
        pids = [pid] if pid else _pids_running(str(self._status_file(digest))) if rec else []
        for p in pids:
            processes.stop(p)
        shutil.rmtree(self.home / digest, ignore_errors=True)
        self._record(digest).unlink(missing_ok=True)

    def stop(self, digest: str) -> None:
        with self.locked(digest):
            self._stop(digest)
        (self.home / f"{digest}.lock").unlink(missing_ok=True)

    def reap(self, keep: set[str]) -> list[str]:
        """Stop every scorer whose digest no deployment serves; returns their digests."""
        gone = sorted(self.digests() - keep)
        for digest in gone:
            self.stop(digest)
        return gone
