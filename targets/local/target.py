"""``kind: local`` — serve, queue and batch-score a model on this machine. No Azure, no Docker.

Resources (see :mod:`orchestrator.target` for the contract):

- ``local.environment`` — the scoring environment, built with uv and shared by lock hash
  (:mod:`targets.local.envs`).  Deleting it only forgets it: the shared environment stays cached.
- ``local.server`` (real-time) / ``local.queue`` (near-real-time) — a supervised background
  process tree on 127.0.0.1 (:mod:`deployctl_runtime.server`).  An update starts the new version
  on a private port, smoke-tests it, has it accept on the public listening socket it received
  from the old one (the socket itself never closes), and only then stops the old one: no
  downtime, no dropped connection, and a failing new version never takes traffic.
  Versions start as forks of the deployment's zygote (:mod:`deployctl_runtime.zygote`), which
  keeps the packages the model needs imported: a code-only redeploy skips the import time.
- ``local.batch`` — the code snapshot and settings that ``invoke`` runs over input files.

State lives under the target's state folder: ``environment.json``, ``deployment.json``, the key,
and one ``versions/<version>/`` folder per running version (code snapshot, model link, status).
The live process is the truth: a deployment whose process died reads as missing.

Surviving ``kill -9`` at any point (of apply, or of a server): intent is written before acting.
A version's folder holds ``version.json`` (what it is for) before its process starts, and the
process writes ``process.json`` (pid and start time: its identity, so a recycled pid is never
signalled) before it can take traffic; the zygote records itself the same way.  ``read()`` finds
every version that runs, not only the recorded one: the others are ``local.process`` strays, which
plans show as deletions and apply stops (a stray of the very version being deployed that is
already public is adopted instead: an interrupted apply got it that far).  Workers die with their
supervisor (``PR_SET_PDEATHSIG``).  ``destroy`` stops every process whose command line names this
target's state folder and checks that the port is closed.  ``DEPLOYCTL_TEST_KILL_AT=<phase>`` is a
test hook (:func:`targets.local.processes.kill_point`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from orchestrator.errors import TargetError, UserError
from orchestrator.manifest.model import ScoringType, TargetConfig, dns_name
from orchestrator.packaging import iter_files, tree_digest
from orchestrator.plan import digest
from orchestrator.pythons import PythonChoice, choose_python
from orchestrator.requirements import parse_requirements
from orchestrator.state import read_json, write_atomic, write_json
from orchestrator.target import (
    TAG_MANIFEST,
    TAG_TARGET,
    InvokeRequest,
    InvokeResult,
    Observed,
    Resource,
    Target,
)
from targets.local import envs, processes

READY_TIMEOUT_S = 180.0


class LocalConfig(TargetConfig):
    """Settings of a ``local`` target."""

    kind: Literal["local"] = "local"
    port: int | None = Field(None, ge=1024, le=65535, description="Port on 127.0.0.1; default: a free one, kept across redeploys.")
    workers: int = Field(1, ge=1, le=32, description="Server worker processes (each runs init() once).")
    auth: bool = Field(True, description="Require 'Authorization: Bearer <key>' (see: deployctl status --show-keys).")
    max_body_mb: float = Field(100, gt=0, description="Largest request body accepted, in MB.")
    warm_start: bool = Field(True, description="Start new versions as forks of a process that already imported the "
                             "model's packages (code-only redeploys in well under a second); false: a fresh "
                             "interpreter each time (for libraries that are not fork-safe).")


class LocalTarget(Target):
    kind = "local"
    scoring_types = frozenset({ScoringType.real_time, ScoringType.near_real_time, ScoringType.batch})
    config_model = LocalConfig
    local_python = True  # builds its environment here: `validate` checks the interpreter is installed
    description = "this machine: a real server, queue or batch runner; no Azure, no Docker"
    # environments build and servers start on this machine's cores
    max_parallel = max(1, os.cpu_count() or 1)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def cfg(self) -> LocalConfig:
        assert isinstance(self.config, LocalConfig)
        return self.config

    @property
    def state(self) -> Path:
        return self.ctx.state_dir

    @property
    def _name(self) -> str:
        return dns_name(self.manifest.name, self.config.name, max_len=63)

    @property
    def _deployment_type(self) -> str:
        return {ScoringType.real_time: "local.server", ScoringType.near_real_time: "local.queue",
                ScoringType.batch: "local.batch"}[self.manifest.scoring.type]

    def _requirements(self) -> tuple[list[str], PythonChoice]:
        env = self.manifest.environment
        reqs, _ = parse_requirements(env.requirements, env.conda_file)
        return reqs, choose_python(env)  # a contradiction was reported when the manifest loaded

    def _model_path(self) -> Path:
        path = self.manifest.model.path
        if path is None:
            raise UserError(
                "the local target needs model.path (a local file or folder); "
                f"{self.manifest.model.uri} is an Azure ML model",
                hint="download it (az ml model download) and point model.path at it, or deploy it to an Azure target",
            )
        return path

    # -- plan --------------------------------------------------------------------------------
    def desired(self) -> list[Resource]:
        reqs, choice = self._requirements()
        python = choice.version
        env_spec = {"python": python, "requirements": envs.input_digest(reqs, python)}
        m = self.manifest
        spec: dict[str, Any] = {
            "environment": env_spec["requirements"],
            "code": tree_digest(m.code.path)[:16],
            "entry": m.code.entry,
            "model": tree_digest(self._model_path())[:16],
            "variables": digest(m.environment.variables, 12),
        }
        if m.scoring.type is ScoringType.batch:
            spec["batch"] = m.scoring.batch.model_dump()
        else:
            spec.update(workers=self.cfg.workers, auth=self.cfg.auth, max_body_mb=self.cfg.max_body_mb)
            if self.cfg.port:
                spec["port"] = self.cfg.port
            if m.scoring.type is ScoringType.near_real_time:
                spec["queue"] = m.scoring.queue.model_dump()
        return [
            Resource(type="local.environment", name=self._name, spec=env_spec),
            Resource(type=self._deployment_type, name=self._name, spec=spec,
                     key=f"local:{self.state}", depends_on=(f"local.environment/{self._name}",)),
        ]

    def read(self) -> list[Observed]:
        out: list[Observed] = []
        env = read_json(self.state / "environment.json")
        if env and Path(env["python"]).exists():
            out.append(Observed(type="local.environment", name=env["name"], spec=env["spec"], tags=env["tags"],
                                on_delete="forgotten; the shared environment stays cached for other deployments"))
        dep = read_json(self.state / "deployment.json")
        serving = None
        if dep and (dep["type"] == "local.batch" or self._healthy(dep)):
            out.append(Observed(type=dep["type"], name=dep["name"], spec=dep["spec"], tags=dep["tags"],
                                key=f"local:{self.state}", version=dep["version"]))
            serving = dep.get("pid")
        return out + self._strays(serving)

    def _strays(self, serving: int | None) -> list[Observed]:
        """Processes of this target that run but are not the recorded deployment: what an
        interrupted apply left (a version started, smoke-tested or even public, but never
        recorded or never stopped), and a zygote that recorded itself but was never recorded as
        this target's (its start was interrupted: it is never used).  Plans show them as
        deletions; apply and destroy stop them."""
        tags = {TAG_MANIFEST: self.manifest.name, TAG_TARGET: self.config.name}
        out = [Observed(type="local.process", name=f"{self._name}-{v['version']}", tags=tags, key=f"local:{self.state}",
                        spec={"version": v["version"], "pid": v["pid"], "start": v["start"], "public": v["public"]},
                        on_delete="stopped: a server an interrupted apply left running")
               for v in self._versions() if v["pid"] != serving]
        zygote = read_json(self.state / "zygote-process.json")
        recorded = read_json(self.state / "zygote.json") or {}
        if processes.same(zygote, marker=str(self.state)) and zygote["pid"] != recorded.get("pid"):
            out.append(Observed(type="local.process", name=f"{self._name}-zygote", tags=tags, key=f"local:{self.state}",
                                spec={"version": "zygote", "pid": zygote["pid"], "start": zygote["start"]},
                                on_delete="stopped: a zygote an interrupted apply started"))
        return out

    def _versions(self) -> list[dict[str, Any]]:
        """Every version whose server process runs, as a deployment record: what was meant
        (``version.json``, written before its start), which process (``process.json``, written by
        the process itself before it can take traffic) and where it stands (``status.json``)."""
        root = self.state / "versions"
        found: list[dict[str, Any]] = []
        for vdir in sorted(root.iterdir()) if root.is_dir() else []:
            proc = read_json(vdir / "process.json")
            if not processes.same(proc):
                continue
            status = processes.read_status(vdir / "status.json")
            found.append({"version": vdir.name, **(read_json(vdir / "version.json") or {}),
                          "pid": proc["pid"], "start": proc.get("start"), "status_file": str(vdir / "status.json"),
                          "public_port": status.get("public_port"), "private_port": status.get("private_port"),
                          "public": bool(status.get("public")), "ready": status.get("state") == "ready"})
        return found

    def _reap(self, records: list[Mapping[str, Any]]) -> None:
        """Stop these servers (SIGTERM: they finish what is in flight), each only if it is still
        the very process recorded; their workers die with them."""
        pids = [int(r["pid"]) for r in records if processes.same(dict(r))]
        processes.stop_all(pids)
        left = [pid for pid in pids if processes.alive(pid)]
        if left:
            raise TargetError(f"process(es) did not stop: {processes.describe(left)}", target=self.config.name)

    def _stop_everything(self) -> None:
        """Stop every process of this target: the recorded server, every version that runs, the
        zygote, then anything else whose command line names this target's state folder (workers
        whose records were lost, processes of an older deployctl).  Raises if one survives."""
        dep = read_json(self.state / "deployment.json") or {}
        known = [dep, *self._versions(), read_json(self.state / "zygote-process.json"),
                 read_json(self.state / "zygote.json")]
        processes.stop_all([r["pid"] for r in known if processes.same(r)])
        self._stop_zygote()
        marker = str(self.state) + os.sep
        processes.stop_all(processes.find(marker), timeout=2)
        left = processes.find(marker)
        if left:
            raise TargetError(f"process(es) of this deployment did not stop: {processes.describe(left)}",
                              target=self.config.name)
        ports = {dep.get("public_port"), *(v.get("public_port") for v in known[1:-2])} - {None}
        for port in ports:
            if not _port_closed(int(port)):
                raise TargetError(f"port {port} still accepts connections after every process of this deployment stopped",
                                  target=self.config.name, hint=f"another program listens on it: `ss -ltnp sport = :{port}`")

    def _healthy(self, dep: Mapping[str, Any]) -> bool:
        if not processes.same(dict(dep)):
            return False
        return _answers_ok(int(dep["public_port"]))

    # -- write -------------------------------------------------------------------------------
    def create(self, resource: Resource, tags: Mapping[str, str]) -> None:
        if resource.type == "local.environment":
            self._create_environment(resource, tags)
        else:
            self._deploy(resource, tags)

    def delete(self, observed: Observed) -> None:
        if observed.type == "local.environment":
            # Destroy's last step (nothing runs without its environment): whatever still runs of
            # this target, recorded or not, goes too.
            self._stop_everything()
            (self.state / "environment.json").unlink(missing_ok=True)  # the shared env stays cached
            return
        dep = read_json(self.state / "deployment.json") or {}
        if observed.type == "local.process":
            if dep.get("type") != "local.batch" and processes.same(dep):
                if observed.spec.get("pid") != dep.get("pid"):  # (else: adopted by the apply that just ran)
                    self._reap([dict(observed.spec)])
                    self._cleanup_versions(keep={dep["version"]})
            else:  # nothing is recorded as serving (destroy, or an interrupted first deploy): leave nothing
                self._stop_everything()
            return
        self._stop_everything()
        for name in ("deployment.json", "key", "handoff.sock", "queue.db", "queue.db-wal", "queue.db-shm"):
            (self.state / name).unlink(missing_ok=True)
        self._handoff_path().unlink(missing_ok=True)
        (self.state / "modules.json").unlink(missing_ok=True)
        self._cleanup_versions(keep=set())
        shutil.rmtree(self.state / "batch", ignore_errors=True)

    def _create_environment(self, resource: Resource, tags: Mapping[str, str]) -> None:
        reqs, python = self._requirements()
        env = envs.ensure_environment(reqs, python.version, progress=self.ctx.progress, python_source=python.source)
        self.ctx.progress(("reused" if env.reused else "built") + f" environment {env.lock_hash} ({len(reqs)} requirements)")
        write_json(self.state / "environment.json", {
            "name": resource.name, "spec": dict(resource.spec), "tags": dict(tags),
            "python": str(env.python), "lock_hash": env.lock_hash, "lock": str(env.lock),
        })

    def _snapshot(self, version: str) -> tuple[Path, Path]:
        """An immutable copy of the code (small) and a link to the model (no copy)."""
        vdir = self.state / "versions" / version
        code = vdir / "code"
        if not code.exists():
            tmp = vdir / ".code.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            for rel, src in iter_files(self.manifest.code.path):
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            os.replace(tmp, code)
        model_src = self._model_path()
        model_dir = vdir / "model"
        link = model_dir / model_src.name
        if not link.exists():
            model_dir.mkdir(parents=True, exist_ok=True)
            link.symlink_to(model_src)
        return code, model_dir

    def _key(self) -> str | None:
        if not self.cfg.auth:
            return None
        path = self.state / "key"
        if not path.exists():
            import secrets

            write_atomic(path, secrets.token_urlsafe(32))  # 0600: mkstemp's mode
        key = path.read_text().strip()
        self.ctx.secret(key)
        return key

    def _handoff_path(self) -> Path:
        """The unix socket versions pass the public socket through."""
        return self._socket_path("handoff.sock")

    def _socket_path(self, name: str) -> Path:
        """Unix socket paths are limited to ~104 bytes: a deep project folder gets a short one in a
        private temp folder."""
        path = self.state / name
        if len(os.fsencode(path)) <= 100:
            return path
        folder = Path(tempfile.gettempdir()) / f"deployctl-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise TargetError(f"{folder} is not private to this user; remove it and apply again",
                              target=self.config.name)
        return folder / f"{digest(str(self.state.resolve()), 16)}-{name}"

    def _port(self, previous: Mapping[str, Any]) -> int:
        if self.cfg.port:
            return self.cfg.port
        if previous.get("public_port"):
            return int(previous["public_port"])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def _deploy(self, resource: Resource, tags: Mapping[str, str]) -> None:
        env = read_json(self.state / "environment.json")
        if not env:
            raise TargetError("the environment is not built", target=self.config.name, resource=resource.address)
        version = digest(dict(resource.spec), 12)
        code, model_dir = self._snapshot(version)
        previous = read_json(self.state / "deployment.json") or {}
        record: dict[str, Any] = {
            "type": resource.type, "name": resource.name, "spec": dict(resource.spec), "tags": dict(tags),
            "version": version, "code": str(code), "model_dir": str(model_dir), "python": env["python"],
        }
        if resource.type == "local.batch":
            if self.manifest.scoring.sample_request:
                self._smoke_batch(record)
            write_json(self.state / "deployment.json", record)
            self._cleanup_versions(keep={version})
            return
        vdir = self.state / "versions" / version
        record["handoff"] = str(self._socket_path(f"handoff-{version}.sock"))
        # Intent first: what this folder's process is for, before the process exists.  Its own
        # process.json follows before it can take traffic (the server writes it first thing).
        write_json(vdir / "version.json", record)
        processes.kill_point("intent")
        live = self._versions()
        # Who hands the public socket over: the recorded version, else one an interrupted apply
        # left public (it serves now); every other running version is a stray and goes.
        source: Mapping[str, Any] | None = previous if processes.same(previous) else None
        if source is None:
            source = max((v for v in live if v["public"]), key=lambda v: v["start"] or 0, default=None)
        key = self._key()
        adopted = self._adoptable(live, version, record, key)
        if adopted is not None:  # an interrupted apply got this very version public: finish its job
            self._reap([v for v in live if v["pid"] not in (adopted["pid"], source and source["pid"])])
            self._record(adopted, source, env["python"])
            return
        self._reap([v for v in live if not source or v["pid"] != source["pid"]])
        Path(record["handoff"]).unlink(missing_ok=True)
        port = self._port(source or previous)
        if source is None:
            # A process that just ended may hold the port a moment longer (its main thread is
            # done, its other threads are still exiting): bind once it is free, not before.
            _port_closed(port)
        status_file = vdir / "status.json"
        cmd = [env["python"], "-m", "deployctl_runtime.server", "--code", str(code), "--entry", self.manifest.code.entry,
               "--status-file", str(status_file), "--workers", str(self.cfg.workers), "--public-port", str(port),
               "--max-body-bytes", str(int(self.cfg.max_body_mb * 1024 * 1024)), "--version", version,
               "--pid-file", str(vdir / "process.json"), "--handoff", record["handoff"]]
        if source:
            cmd += ["--handoff-from", str(source.get("handoff") or self._handoff_path())]  # (older records: one shared path)
        if key:
            cmd += ["--key-file", str(self.state / "key")]
        if resource.type == "local.queue":
            q = self.manifest.scoring.queue
            cmd += ["--queue", str(self.state / "queue.db"), "--queue-workers", str(q.workers),
                    "--visibility-timeout", str(q.visibility_timeout_s), "--max-attempts", str(q.max_attempts)]
        extra = {**self.manifest.environment.variables, "AZUREML_MODEL_DIR": str(model_dir),
                 "DEPLOYCTL_REPORT_MODULES": str(self.state / "modules.json")}
        log = self.state / "server.log"
        self.ctx.progress(f"starting version {version} ({_workers(self.cfg.workers, resource)})")
        # the log is the deployment's, across versions: a failed start shows only what it wrote
        log_start = log.stat().st_size if log.exists() else 0
        pid, status = self._start(cmd, extra, log, status_file)
        if status.get("state") != "ready" and "cannot listen" in status.get("error", "") and source and processes.same(source):
            # The running version cannot hand its socket over (an older deployctl started it, or
            # its handoff socket is gone): stop it first. A brief interruption beats no deploy.
            self.ctx.warn(f"the running version cannot hand port {port} over; restarting it with a brief interruption")
            processes.stop(source["pid"])
            pid, status = self._start(cmd, extra, log, status_file)
        if status.get("state") != "ready":
            why = Path(f"{status_file}.error")
            detail = why.read_text().strip() if why.exists() else _tail(log, 15, start=log_start)
            if not detail.strip():  # nothing in its log: say how it ended (before stop() ends it)
                detail = processes.why_not_ready(pid, status, READY_TIMEOUT_S) + "; its log is empty"
            processes.stop(pid)
            still_serving = bool(source) and processes.same(dict(source or {}))
            if not still_serving:
                self._stop_zygote()  # nothing runs to keep warm for: leave no process behind
            # point at the user's own files, not at this version's snapshot of them
            detail = detail.replace(str(code), str(self.manifest.code.path))
            listen_error = "cannot listen" in detail
            serving = "; the previous one keeps serving" if still_serving else ""
            raise TargetError(f"the new version did not start{serving}.\n{detail}",
                              target=self.config.name, resource=resource.address, operation="start",
                              hint=(f"free port {port} or set another port for this target" if listen_error else
                                    "free memory, or load less in init() (`deployctl logs` has the server's log)"
                                    if "out-of-memory" in detail else
                                    "fix init() in your scoring script (see `deployctl logs`)"))
        record.update(pid=pid, start=processes.start_time(pid), public_port=port, private_port=status["private_port"],
                      status_file=str(status_file), log=str(log), started_at=time.time())
        try:
            self._smoke(record, key)
        except TargetError:
            processes.stop(pid)
            raise
        processes.kill_point("smoked")
        os.kill(pid, signal.SIGUSR1)  # now take traffic on the public port, beside the old version
        status = processes.wait_for(status_file, pid, lambda s: bool(s.get("public")), 30)
        if not status.get("public"):
            processes.stop(pid)
            raise TargetError(f"the new version could not start serving on port {port}",
                              target=self.config.name, resource=resource.address)
        processes.kill_point("public")
        self._record(record, source, env["python"])

    def _adoptable(self, live: list[dict[str, Any]], version: str, record: Mapping[str, Any],
                   key: str | None) -> dict[str, Any] | None:
        """A running, public process of ``version`` (an interrupted apply smoke-tested it and
        put it on the public socket, but was killed before recording it), as this deploy's
        record, if it still passes the smoke test."""
        for v in live:
            if v["version"] == version and v["public"] and v["ready"]:
                adopted = {**record, **{k: v[k] for k in ("pid", "start", "public_port", "private_port", "status_file")},
                           "log": str(self.state / "server.log"), "started_at": time.time()}
                try:
                    self._smoke(adopted, key)
                except TargetError:
                    return None
                self.ctx.progress(f"version {version} already serves (pid {v['pid']}, started by an interrupted apply)")
                return adopted
        return None

    def _record(self, record: Mapping[str, Any], source: Mapping[str, Any] | None, python: str) -> None:
        """Make ``record`` the deployment, then stop the version it replaces."""
        write_json(self.state / "deployment.json", record)
        processes.kill_point("recorded")
        if source and source["pid"] != record["pid"] and processes.same(dict(source)):
            # It stops accepting at once, finishes in-flight requests (up to the server's 30 s
            # drain), then exits.  Waiting here means that once apply returns, every new
            # connection reaches the new version.
            processes.stop(source["pid"], timeout=35)
        processes.kill_point("stopped")
        self._share_modules(python)
        self._cleanup_versions(keep={record["version"]})
        self.ctx.progress(f"serving version {record['version']} at http://127.0.0.1:{record['public_port']}/score")

    def _start(self, cmd: list[str], extra: dict[str, str], log: Path, status_file: Path) -> tuple[int, dict[str, Any]]:
        for stale in (status_file, Path(f"{status_file}.error")):
            stale.unlink(missing_ok=True)
        env = processes.runtime_env(extra)
        cwd = Path(cmd[cmd.index("--code") + 1])
        pid = (self._fork_from_zygote(cmd, env, log, cwd) if self.cfg.warm_start else None) \
            or processes.start_detached(cmd, env, log, cwd=cwd)
        processes.kill_point("starting")
        return pid, processes.wait_for(status_file, pid, lambda s: s.get("state") == "ready", READY_TIMEOUT_S)

    # -- warm starts -------------------------------------------------------------------------
    def _zygote(self, python: str) -> Path:
        """The socket of this deployment's zygote (:mod:`deployctl_runtime.zygote`) for this
        environment and these variables, started when there is none."""
        ident = {"python": python, "variables": digest(self.manifest.environment.variables, 12)}
        sock = self._socket_path("zygote.sock")
        rec = read_json(self.state / "zygote.json") or {}
        if rec.get("ident") == ident and processes.same(rec, marker=str(self.state)) and sock.exists():
            return sock
        self._stop_zygote()
        modules, shared = self.state / "modules.json", self._shared_modules(python)
        if not modules.exists() and shared.exists():  # warm from the first version on
            shutil.copyfile(shared, modules)
        # the zygote records itself (zygote-process.json) before anything else: findable if we die now
        cmd = [python, "-m", "deployctl_runtime.zygote", "--socket", str(sock), "--modules", str(modules),
               "--pid-file", str(self.state / "zygote-process.json")]
        env = processes.runtime_env(dict(self.manifest.environment.variables))
        pid = processes.start_detached(cmd, env, self.state / "zygote.log", cwd=self.state)
        processes.kill_point("zygote")
        deadline = time.monotonic() + 20
        while not sock.exists():
            if not processes.alive(pid) or time.monotonic() > deadline:
                processes.stop(pid)
                raise OSError(f"the zygote did not start (see {self.state / 'zygote.log'})")
            time.sleep(0.01)
        write_json(self.state / "zygote.json", {"pid": pid, "start": processes.start_time(pid), "ident": ident})
        return sock

    def _fork_from_zygote(self, cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> int | None:
        """Start the server as a fork of the zygote; None (start it cold) when that fails."""
        try:
            sock = self._zygote(cmd[0])
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
                u.settimeout(30)
                u.connect(str(sock))
                request = {"argv": cmd[3:], "env": env, "cwd": str(cwd), "log": str(log)}  # cmd[:3]: python -m server
                u.sendall(json.dumps(request).encode() + b"\n")
                with u.makefile("rb") as lines:
                    reply = json.loads(lines.readline())
            if "pid" not in reply:
                raise OSError(reply.get("error", "no pid"))
            return int(reply["pid"])
        except (OSError, ValueError) as e:
            self.ctx.warn(f"warm start unavailable ({e}); starting a fresh interpreter")
            return None

    @staticmethod
    def _shared_modules(python: str) -> Path:
        """What models served from this (shared) environment imported: envs/<lock hash>/..."""
        return Path(python).parent.parent / ".deployctl-modules.json"

    def _share_modules(self, python: str) -> None:
        src, dst = self.state / "modules.json", self._shared_modules(python)
        with contextlib.suppress(OSError):
            if src.exists() and (not dst.exists() or dst.read_bytes() != src.read_bytes()):
                write_atomic(dst, src.read_bytes())

    def _stop_zygote(self) -> None:
        records = [read_json(self.state / name) for name in ("zygote.json", "zygote-process.json")]
        processes.stop_all(list({r["pid"] for r in records if processes.same(r, marker=str(self.state))}))
        for name in ("zygote.json", "zygote-process.json"):
            (self.state / name).unlink(missing_ok=True)
        self._socket_path("zygote.sock").unlink(missing_ok=True)

    def _cleanup_versions(self, keep: set[str]) -> None:
        """Remove the folders of versions that no longer run (one whose process still runs stays:
        it must remain findable until it is stopped), and the finished mini-batches of batch
        versions that are gone."""
        root = self.state / "versions"
        if root.exists():
            for v in root.iterdir():
                if v.name not in keep and not processes.same(read_json(v / "process.json")):
                    self._socket_path(f"handoff-{v.name}.sock").unlink(missing_ok=True)
                    shutil.rmtree(v, ignore_errors=True)
        batch = self.state / "batch"
        if batch.exists():
            for v in batch.iterdir():
                if v.name not in keep:
                    shutil.rmtree(v, ignore_errors=True)

    # -- smoke tests -------------------------------------------------------------------------
    def _smoke(self, record: Mapping[str, Any], key: str | None) -> None:
        sample = self.manifest.scoring.sample_request
        if sample is None:
            return
        body = sample.read_bytes()
        started = time.monotonic()
        status, payload = _post(record["private_port"], "/score", body, key, timeout=60)
        if record["type"] == "local.queue" and status == 202:
            rid = json.loads(payload)["request_id"]
            doc = self._wait_result(record["private_port"], rid, key, timeout=60)
            self.ctx.smoke_tested(doc.get("state") == "done", status=doc.get("state"), detail=str(doc.get("error") or ""),
                                  latency_ms=1000 * (time.monotonic() - started))
            if doc.get("state") == "done":
                return
            raise TargetError(f"smoke test failed: the sample request ended {doc.get('state')}: {doc.get('error')}",
                              target=self.config.name, operation="smoke test")
        self.ctx.smoke_tested(status == 200, status=status, latency_ms=1000 * (time.monotonic() - started),
                              detail="" if status == 200 else payload[:200].decode(errors="replace"))
        if status != 200:
            raise TargetError(
                f"smoke test failed: POST /score with {sample.name} answered {status}: {payload[:500].decode(errors='replace')}",
                target=self.config.name, operation="smoke test",
                hint="the previous version keeps serving; fix run() or the sample request")
        self.ctx.progress(f"smoke test passed: {payload[:120].decode(errors='replace')}")

    def _smoke_batch(self, record: Mapping[str, Any]) -> None:
        sample = self.manifest.scoring.sample_request
        assert sample is not None
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            result = self._run_batch(record, [sample], Path(tmp) / "out.csv", Path(tmp) / "work")
        self.ctx.smoke_tested(result.ok, status=result.state or ("succeeded" if result.ok else "failed"),
                              latency_ms=1000 * (time.monotonic() - started), detail=str(result.details.get("error") or ""))
        if not result.ok:
            raise TargetError(f"smoke test failed: batch over {sample.name}: {result.details.get('error')}",
                              target=self.config.name, operation="smoke test")

    def _wait_result(self, port: int, rid: str, key: str | None, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, payload = _get(port, f"/requests/{rid}", key)
            doc = json.loads(payload) if status == 200 else {}
            if doc.get("state") in ("done", "dead"):
                return doc
            time.sleep(0.02)
        return doc

    # -- use ---------------------------------------------------------------------------------
    def outputs(self, observed: list[Observed]) -> dict[str, Any]:
        dep = read_json(self.state / "deployment.json") or {}
        if not dep:
            return {}
        out: dict[str, Any] = {"version": dep["version"]}
        if dep["type"] == "local.batch":
            out["run"] = "deployctl invoke --input <files or folder> --output-path <file>"
            return out
        healthy = self._healthy(dep)
        out.update(scoring_uri=f"http://127.0.0.1:{dep['public_port']}/score", pid=dep.get("pid"),
                   health="healthy" if healthy else "down", log=dep.get("log"))
        strays = [o.spec["pid"] for o in observed if o.type == "local.process"]
        if strays:  # running, but not the deployment: the next apply stops them
            out["stray_pids"] = strays
        if dep["type"] == "local.queue":
            from targets.local.runtime.deployctl_runtime.queue import Queue  # stdlib-only

            q = Queue(str(self.state / "queue.db"))
            out["queue"] = q.counts()
            q.close()
        return out

    def secrets(self, observed: list[Observed]) -> dict[str, str]:
        path = self.state / "key"
        return {"key": path.read_text().strip()} if path.exists() else {}

    def logs(self, tail: int = 100, deployment: str | None = None) -> str:
        dep = read_json(self.state / "deployment.json") or {}
        log = self.state / ("batch.log" if dep.get("type") == "local.batch" else "server.log")
        if not log.exists():
            why = "no batch has run on this target yet" if dep else "nothing has been deployed to this target"
            raise TargetError(f"no logs yet: {why}", target=self.config.name)
        return _tail(log, tail)

    def invoke(self, request: InvokeRequest) -> InvokeResult:
        dep = read_json(self.state / "deployment.json")
        if not dep:
            raise TargetError("nothing is deployed on this target; run deployctl apply first", target=self.config.name)
        if dep["type"] == "local.batch":
            if not request.inputs:
                raise UserError("batch scoring needs --input FILE_OR_FOLDER (repeatable)")
            # output_file is relative to the manifest, like every path in it (--output-path: to the cwd)
            output = request.output or self.ctx.base_dir / self.manifest.scoring.batch.output_file
            # finished mini-batches are kept by content (see deployctl_runtime.batch), never by path
            return self._run_batch(dep, request.inputs, output, self.state / "batch" / dep["version"])
        if not self._healthy(dep):
            raise TargetError("the server is not running; run deployctl apply to start it", target=self.config.name)
        key = (self.state / "key").read_text().strip() if (self.state / "key").exists() else None
        port = dep["public_port"]
        if request.request_id:
            status, payload = _get(port, f"/requests/{request.request_id}", key)
            doc = _json(payload)
            return InvokeResult(ok=status == 200 and doc.get("state") != "dead", status_code=status,
                                body=doc.get("result") if status == 200 else doc, request_id=request.request_id,
                                state=doc.get("state"), details={"error": doc.get("error")} if doc.get("error") else {})
        body = request.body if isinstance(request.body, bytes | str) else json.dumps(request.body)
        raw = body.encode() if isinstance(body, str) else body
        status, payload = _post(port, "/score", raw, key, timeout=request.timeout_s, idempotency_key=request.idempotency_key)
        if dep["type"] == "local.queue" and status == 202:
            rid = _json(payload)["request_id"]
            if request.run_async:
                return InvokeResult(ok=True, status_code=202, request_id=rid, state="queued")
            doc = self._wait_result(port, rid, key, request.timeout_s)
            return InvokeResult(ok=doc.get("state") == "done", status_code=200, body=doc.get("result"),
                                request_id=rid, state=doc.get("state") or "queued",
                                details={"error": doc.get("error")} if doc.get("error") else {})
        return InvokeResult(ok=status == 200, status_code=status, body=_json(payload))

    def _run_batch(self, dep: Mapping[str, Any], inputs: list[Path], output: Path, work: Path) -> InvokeResult:
        b = self.manifest.scoring.batch
        work.mkdir(parents=True, exist_ok=True)
        listing = Path(tempfile.mkstemp(prefix="inputs-", suffix=".json", dir=work)[1])  # one per run
        listing.write_text(json.dumps([str(Path(p).resolve()) for p in inputs]))
        # What the rows were made with: the deployed version (code, settings) and the model as it
        # is now (the version links to the model folder, which can change after apply).
        key = digest({"version": dep["version"], "model": tree_digest(Path(dep["model_dir"]))}, 16)
        cmd = [dep["python"], "-m", "deployctl_runtime.batch", "--code", dep["code"], "--entry", self.manifest.code.entry,
               "--inputs", str(listing), "--output", str(Path(output).resolve()), "--work", str(work / "done"),
               "--key", key,
               "--mini-batch-size", str(b.mini_batch_size), "--max-concurrency", str(b.max_concurrency),
               "--error-threshold", str(b.error_threshold), "--max-retries", str(b.max_retries), "--timeout", str(b.timeout_s)]
        env = processes.runtime_env({**self.manifest.environment.variables, "AZUREML_MODEL_DIR": dep["model_dir"]})
        # stderr (the script's logging and prints, failures) straight to the log: read through a
        # pipe only after stdout ends, a chatty script would block on a full pipe
        log = self.state / "batch.log"
        log_start = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as err_out:
            proc = subprocess.Popen(cmd, env=env, cwd=dep["code"], stdout=subprocess.PIPE, stderr=err_out, text=True)
        summary: dict[str, Any] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("progress "):
                done, _, total = line.split()[1].partition("/")
                if "resuming" in line:
                    self.ctx.progress(f"resuming: {done} of {total} mini-batches were done by an earlier run")
                self.ctx.advance("mini-batches", int(done), int(total))
            elif line.startswith("summary "):
                summary = json.loads(line[8:])
        code = proc.wait()
        listing.unlink(missing_ok=True)
        if code != 0:
            lines = [x for x in _tail(log, 200, start=log_start).splitlines() if x.strip()]
            message = "\n".join(lines[-12:]) or f"exit code {code}"
            return InvokeResult(ok=False, state="failed", details={"error": message, "exit_code": code})
        return InvokeResult(ok=True, state="done", output=str(output), body=summary, details=summary)


def _workers(http_workers: int, resource: Resource) -> str:
    """What a version runs, as the progress line says it."""
    if resource.type == "local.queue":
        queue_workers = resource.spec["queue"]["workers"]
        return f"{queue_workers} queue worker(s), {http_workers} HTTP worker(s)"
    return f"{http_workers} worker(s)"


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")


def _answers_ok(port: int, timeout: float = 2.0) -> bool:
    """Does the server on 127.0.0.1:``port`` answer ``GET /`` with 200 (its liveness route)?

    A plain socket and the status line rather than http.client, because every no-op apply and
    ``status`` asks this, and importing http.client (with ssl and the email parser) is ~8 ms of
    a no-op apply's ~0.3 s; the answer's headers and body are not needed.  ``timeout`` bounds the
    whole exchange: a listener trickling a byte at a time is unhealthy, not a hang."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head and len(head) < 1024:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                sock.settimeout(left)
                chunk = sock.recv(1024)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return False
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"


def _request(method: str, port: int, path: str, body: bytes | None, key: str | None, timeout: float = 30,
             idempotency_key: str | None = None) -> tuple[int, bytes]:
    import http.client

    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError as e:
        raise TargetError(f"cannot reach the local server on port {port}: {e}") from None
    finally:
        conn.close()


def _post(port: int, path: str, body: bytes, key: str | None, timeout: float = 30,
          idempotency_key: str | None = None) -> tuple[int, bytes]:
    return _request("POST", port, path, body, key, timeout, idempotency_key)


def _get(port: int, path: str, key: str | None) -> tuple[int, bytes]:
    return _request("GET", port, path, None, key)


def _port_closed(port: int, timeout: float = 5.0) -> bool:
    """Does nothing accept on 127.0.0.1:``port`` (waiting up to ``timeout`` for it to close)?"""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            pass  # a timeout: something holds the port but does not answer (yet)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _tail(path: Path, n: int, start: int = 0) -> str:
    """The last ``n`` lines of ``path``, of what follows byte ``start``."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-n:])
