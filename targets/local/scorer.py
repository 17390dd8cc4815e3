"""Score with a model and a scoring script, in-process for the caller, out-of-process for the code.

The Azure simulator uses this to make a simulated endpoint or batch job really score what was
uploaded: the same runtime as the local target (the server on a private 127.0.0.1 port, the
batch runner), without the local target's state or lifecycle.

    with Scorer(python, code_dir, "score.py", model_dir) as s:
        status, body, headers = s.score(b'{"data": [[1, 2, 3, 4]]}')
"""

from __future__ import annotations

import http.client
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.errors import TargetError
from targets.local import processes


class Scorer:
    def __init__(self, python: Path, code_dir: Path, entry: str, model_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.python, self.code_dir, self.entry, self.model_dir = Path(python), Path(code_dir), entry, Path(model_dir)
        self.env = dict(env or {})
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._pid: int | None = None
        self._port: int | None = None

    def _runtime_env(self) -> dict[str, str]:
        return processes.runtime_env({**self.env, "AZUREML_MODEL_DIR": str(self.model_dir)})

    @classmethod
    def attach(cls, pid: int, port: int) -> Scorer:
        """A scorer another process started (``start(workdir=..., exit_with_parent=False)``), still running."""
        s = cls(Path(), Path(), "", Path())
        s._pid, s._port = pid, port
        return s

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def port(self) -> int | None:
        return self._port

    def start(self, workdir: Path | None = None, *, exit_with_parent: bool = True, exit_without: Path | None = None,
              on_spawn: Any = None) -> Scorer:
        """Start the server; raises TargetError with init()'s traceback tail if it cannot start.

        ``workdir`` (kept: the caller owns it) holds its status file and log instead of a temporary
        folder; ``exit_with_parent=False`` lets it outlive this process (the caller records its
        pid and stops it); ``on_spawn(pid)`` is called as soon as the process exists."""
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="deployctl-scorer-")
        tmp = Path(workdir) if workdir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        status_file = tmp / "status.json"
        status_file.unlink(missing_ok=True)
        cmd = [str(self.python), "-m", "deployctl_runtime.server", "--code", str(self.code_dir), "--entry", self.entry,
               "--status-file", str(status_file), "--workers", "1"]
        if exit_with_parent:
            cmd.append("--exit-with-parent")  # never outlive the caller, even if it forgets stop()
        if exit_without is not None:
            cmd += ["--exit-without", str(exit_without)]
        self._pid = processes.start_detached(cmd, self._runtime_env(), tmp / "server.log", cwd=self.code_dir)
        if on_spawn is not None:
            on_spawn(self._pid)
        status = processes.wait_for(status_file, self._pid, lambda s: s.get("state") == "ready", 180)
        if status.get("state") != "ready":
            err = Path(f"{status_file}.error")
            detail = err.read_text() if err.exists() else (tmp / "server.log").read_text()[-2000:]
            if not detail.strip():  # nothing in its log: say how it ended, or that it never got ready
                detail = processes.why_not_ready(self._pid, status, 180) + " (its log is empty)"
            self.stop()
            raise TargetError(f"the scoring script did not start:\n{detail.strip()}")
        self._port = int(status["private_port"])
        return self

    def score(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        if self._port is None:
            raise RuntimeError("Scorer.start() first")
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=120)
        try:
            conn.request("POST", "/score", body=body, headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()

    def run_batch(self, files: list[Path], *, mini_batch_size: int = 10, max_concurrency: int = 1,
                  error_threshold: int = -1, max_retries: int = 3, timeout_s: float = 60) -> list[str]:
        """The batch contract over ``files``; returns the output rows. Raises TargetError on failure."""
        with tempfile.TemporaryDirectory(prefix="deployctl-batch-") as tmp:
            listing = Path(tmp) / "inputs.json"
            listing.write_text(json.dumps([str(f) for f in files]))
            out = Path(tmp) / "out.csv"
            cmd = [str(self.python), "-m", "deployctl_runtime.batch", "--code", str(self.code_dir), "--entry", self.entry,
                   "--inputs", str(listing), "--output", str(out), "--work", str(Path(tmp) / "work"),
                   "--mini-batch-size", str(mini_batch_size), "--max-concurrency", str(max_concurrency),
                   "--error-threshold", str(error_threshold), "--max-retries", str(max_retries),
                   "--timeout", str(timeout_s)]
            proc = subprocess.run(cmd, env=self._runtime_env(), cwd=self.code_dir, capture_output=True, text=True)
            if proc.returncode != 0:
                raise TargetError("batch scoring failed:\n" + "\n".join(proc.stderr.strip().splitlines()[-12:]))
            return out.read_text().splitlines()

    def stop(self) -> None:
        processes.stop(self._pid)
        self._pid = self._port = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Scorer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
