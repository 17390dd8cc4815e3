"""Where a cold apply's time goes, and how fast the CLI starts (issue 15), side by side in one run.

    python bench/coldstart.py [--runs 9] [--startup-only]

Prints, each with its share or ratio and its bar:
- a cold apply of the quickstart (fresh deployctl cache, warm uv cache) through the real CLI,
  split into phases by watching its progress lines and the files the target and its processes
  write (the zygote's socket, a version's process.json and status.json): CLI start-up and plan,
  environment, zygote start, score.py imports + init(), smoke test, going public and recording,
  report and exit;
- the environment's uv steps alone (venv, install, freeze; warm uv cache), and what importing
  score.py's packages costs in the new environment with and without bytecode (the first
  version compiles what it imports);
- the bytecode store (``targets.local.bytecode``), side by side in each round: a cold apply of the
  quickstart with a fresh deployctl cache vs a cold apply of a new environment (the quickstart's
  requirements + one small pin, another project) once the store is warm from the first; then
  what linking the store's pycs into a new environment costs, and a warm ``import
  sklearn.ensemble`` with CHECKED_HASH vs timestamp pycs (interleaved);
- start-up: ``deployctl --help`` and a no-op apply vs ``python -c pass``, medians of interleaved
  runs, plus module counts and summed self import times from ``-X importtime`` (less sensitive to
  the load than wall times).  The project's own bytecode is compiled into a private
  PYTHONPYCACHEPREFIX first, as an installed (non-editable) deployctl has it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
_SCRIPT = Path(sys.executable).with_name("deployctl")
DEPLOYCTL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]
COLD_BAR_S, HELP_BAR_S, NOOP_BAR_S = 3.0, 0.12, 0.3
EXTRA_PIN = "six==1.17.0"  # the user's change: one small package added to requirements.txt


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min: {five:.1f}) on {os.cpu_count()} cores"


class Watch:
    """Polls files a cold apply writes and notes when each first appears (or reads ready)."""

    def __init__(self, state: Path) -> None:
        self.state, self.seen, self._stop = state, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _mark(self, name: str) -> None:
        self.seen.setdefault(name, time.perf_counter())

    def _run(self) -> None:
        while not self._stop.is_set():
            if (self.state / "zygote.sock").exists():
                self._mark("zygote listening")
            for vdir in (self.state / "versions").glob("*") if (self.state / "versions").is_dir() else []:
                if (vdir / "process.json").exists():
                    self._mark("server process up")
                try:
                    if json.loads((vdir / "status.json").read_text()).get("state") == "ready":
                        self._mark("server ready")
                except (OSError, ValueError):
                    pass
            time.sleep(0.003)


def cold_apply(manifest: Path, env: dict[str, str]) -> tuple[list[tuple[str, float]], float, str]:
    """Run a cold apply; return its phases (name, seconds), the total and the server's own line."""
    state = manifest.parent / ".deployctl" / "iris-quickstart" / "dev"
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    with Watch(state) as watch:
        proc = subprocess.Popen([*DEPLOYCTL, "apply", str(manifest), "--yes"], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            now = time.perf_counter()
            for key, name in (("create local.environment", "first event"), ("built environment", "environment built"),
                              ("reused environment", "environment built"), ("starting version", "starting version"),
                              ("smoke test passed", "smoke test passed"), ("serving version", "serving")):
                if key in line:
                    marks.setdefault(name, now)
        proc.stdout.read()
        if proc.wait() != 0:
            raise SystemExit(f"the cold apply failed (exit {proc.returncode})")
    total = time.perf_counter() - t0
    marks.update(watch.seen)
    order = [("CLI start-up, imports, plan", "first event"), ("environment: uv venv + install + freeze", "environment built"),
             ("state writes, snapshot, key", "starting version"), ("zygote: interpreter start + runtime", "zygote listening"),
             ("server forked, records itself", "server process up"), ("score.py imports + init()", "server ready"),
             ("smoke test (sample request)", "smoke test passed"), ("go public, record, stop nothing", "serving")]
    phases, last = [], t0
    for name, mark in order:
        if mark in marks:
            phases.append((name, marks[mark] - last))
            last = marks[mark]
    phases.append(("report, exit", t0 + total - last))
    log = (state / "server.log").read_text() if (state / "server.log").exists() else ""
    said = next((x.split(": ", 1)[1] for x in log.splitlines() if "worker ready" in x), "")
    return phases, total, said


def uv_steps(tmp: Path, requirements: Path) -> list[tuple[str, float]]:
    """The environment's uv commands one by one (warm uv cache), as targets.local.envs runs them."""
    sys.path.insert(0, str(REPO))
    from orchestrator.pythons import PythonChoice, find_python
    from targets.local.envs import uv_bin

    python = find_python(PythonChoice("3.11", "bench"))
    venv = tmp / "uv-steps"
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    steps = [("uv venv", [uv_bin(), "venv", "--quiet", "--python", str(python), str(venv)]),
             ("uv pip install", [uv_bin(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
                                 "-r", str(requirements)]),
             ("uv pip freeze", [uv_bin(), "pip", "freeze", "--python", str(venv / "bin" / "python")])]
    out = []
    for name, cmd in steps:
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        out.append((name, time.perf_counter() - t))
    return out


_IMPORT = "import joblib, sys; joblib.load(sys.argv[1]); print(len(sys.modules))"


def import_costs(python: Path, model: Path, tmp: Path) -> tuple[float, float, int]:
    """Seconds to import score.py's packages and load the model in the environment: compiling
    from source (an empty pycache prefix, nothing written) vs with bytecode (median of 3 each)."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX",)}

    def once(extra: dict[str, str]) -> tuple[float, int]:
        t = time.perf_counter()
        r = subprocess.run([str(python), "-c", _IMPORT, str(model)], env={**base, **extra}, check=True,
                           capture_output=True, text=True)
        return time.perf_counter() - t, int(r.stdout.split()[-1])

    source = [once({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp / f"empty-{i}")}) for i in range(3)]
    compiled_env = {"PYTHONPYCACHEPREFIX": str(tmp / "env-pyc")}
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    once(compiled_env)  # writes the bytecode
    compiled = [once(compiled_env)[0] for _ in range(3)]
    return statistics.median(t for t, _ in source), statistics.median(compiled), source[0][1]


def copy_project(dst: Path, extra: str | None = None) -> Path:
    """A copy of the quickstart (its manifest's path), with ``extra`` added to its requirements."""
    shutil.copytree(QUICKSTART, dst, ignore=shutil.ignore_patterns(".deployctl"))
    if extra:
        with open(dst / "requirements.txt", "a") as f:
            f.write(f"{extra}\n")
    return dst / "deployctl.yaml"


def env_dir_of(manifest: Path) -> Path:
    record = json.loads((manifest.parent / ".deployctl" / "iris-quickstart" / "dev" / "environment.json").read_text())
    return Path(record["python"]).parents[1]


def wait_for_store(env_dir: Path, timeout: float = 600) -> dict[str, float]:
    """Wait for an environment's background compile (started by another process: the CLI) to
    be over, and return its summary."""
    done = env_dir / ".deployctl-bytecode"
    deadline = time.monotonic() + timeout
    while not done.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the background compile of {env_dir} did not finish in {timeout:.0f}s")
        time.sleep(0.2)
    return json.loads(done.read_text())


def store_rounds(tmp: Path, base_env: dict[str, str], rounds: int) -> list[tuple[float, float, list[tuple[str, float]]]]:
    """Each round, in a fresh deployctl cache: a cold apply of the quickstart, its background
    compile awaited (the store is warm), the server destroyed, then a cold apply of another
    project whose requirements add one pin: a new environment, most of its files in the store."""
    out = []
    for i in range(rounds):
        env = dict(base_env, DEPLOYCTL_CACHE_DIR=str(tmp / f"store-cache-{i}"))
        first = copy_project(tmp / f"store-{i}-first")
        second = copy_project(tmp / f"store-{i}-new", EXTRA_PIN)
        try:
            _, fresh, _ = cold_apply(first, env)
            summary = wait_for_store(env_dir_of(first))
            print(f"  round {i + 1}: the first environment's background compile: {summary}")
            subprocess.run([*DEPLOYCTL, "destroy", str(first), "--yes"], env=env, capture_output=True, check=True)
            phases, warm, _ = cold_apply(second, env)
            wait_for_store(env_dir_of(second))  # (not measured: the next round starts on a quiet machine)
        finally:
            for m in (first, second):
                subprocess.run([*DEPLOYCTL, "destroy", str(m), "--yes"], env=env, capture_output=True)
        out.append((fresh, warm, phases))
        print(f"  round {i + 1}: fresh cache {fresh:.2f}s vs new environment, store warm {warm:.2f}s "
              f"({fresh / warm:.1f}x; bar {COLD_BAR_S} s: {'met' if warm <= COLD_BAR_S else 'not met'}); {load_note()}")
    return out


def link_cost(venv: Path, cache: Path, runs: int = 7) -> tuple[float, float, int]:
    """Seconds to link the store's pycs into an environment without bytecode (the uv steps'
    venv: the quickstart's packages), median and min of ``runs``, and how many were placed."""
    sys.path.insert(0, str(REPO))
    from targets.local.bytecode import link_bytecode

    times, placed = [], 0
    for _ in range(runs):
        for d in list(venv.rglob("__pycache__")):
            shutil.rmtree(d)
        t = time.perf_counter()
        placed = link_bytecode(venv, cache)
        times.append(time.perf_counter() - t)
    for d in list(venv.rglob("__pycache__")):
        shutil.rmtree(d)
    return statistics.median(times), min(times), placed


def hash_vs_timestamp(python: Path, tmp: Path, runs: int) -> dict[str, tuple[float, float]]:
    """Warm ``import sklearn.ensemble`` with CHECKED_HASH pycs (the store's) vs timestamp pycs
    (compileall's default), each compiled into its own pycache prefix: (median wall, median
    CPU) seconds of ``runs`` interleaved runs, nothing written."""
    import resource

    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")}
    site = next((python.parents[1] / "lib").glob("python3*/site-packages"))
    prefixes = {"checked-hash": tmp / "pyc-checked-hash", "timestamp": tmp / "pyc-timestamp"}
    for mode, prefix in prefixes.items():
        subprocess.run([str(python), "-m", "compileall", "-q", "-j0", "--invalidation-mode", mode, str(site)],
                       env=dict(base, PYTHONPYCACHEPREFIX=str(prefix)), check=False, capture_output=True)
    wall: dict[str, list[float]] = {k: [] for k in prefixes}
    cpu: dict[str, list[float]] = {k: [] for k in prefixes}
    order = list(prefixes)
    for i in range(runs + 1):
        for mode in order if i % 2 else order[::-1]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([str(python), "-c", "import sklearn.ensemble"], check=True, capture_output=True,
                           env=dict(base, PYTHONPYCACHEPREFIX=str(prefixes[mode]), PYTHONDONTWRITEBYTECODE="1"))
            elapsed = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i:  # the first round warms the page cache
                wall[mode].append(elapsed)
                cpu[mode].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {m: (statistics.median(wall[m]), statistics.median(cpu[m])) for m in prefixes}


def importtime(cmd: list[str], env: dict[str, str]) -> tuple[int, float]:
    """Modules imported and their summed self time (ms) under ``-X importtime``."""
    exe = [sys.executable, "-X", "importtime"] + (cmd[1:] if cmd[0] == sys.executable else [cmd[0]] + cmd[1:])
    r = subprocess.run(exe, env=env, capture_output=True, text=True)
    rows = [line.split("|") for line in r.stderr.splitlines() if line.startswith("import time:") and "self [us]" not in line]
    return len(rows), sum(int(row[0].split(":")[1]) for row in rows) / 1000


def startup(manifest: Path, env: dict[str, str], tmp: Path, runs: int) -> list[tuple[str, str, str]]:
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "project-pyc")  # the project's bytecode, as installed
    # The same no-op apply through main(), as the command ran before console(): the interpreter's
    # teardown at exit and the default collector thresholds (orchestrator.cli.console).
    with_teardown = ("import sys\nfrom orchestrator.cli import main\n"
                     f"sys.argv = ['deployctl', 'apply', {str(manifest)!r}, '--yes']\nmain()\n")
    cmds = {"python -c pass": [sys.executable, "-c", "pass"],
            "deployctl --help": [*DEPLOYCTL, "--help"],
            "no-op apply": [*DEPLOYCTL, "apply", str(manifest), "--yes"],
            "no-op apply through main()": [sys.executable, "-c", with_teardown]}
    for cmd in cmds.values():  # warm-up: bytecode written, files in the page cache
        subprocess.run(cmd, env=env, capture_output=True)
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(runs):  # interleaved: the load moves all three alike
        for name, cmd in cmds.items():
            t = time.perf_counter()
            r = subprocess.run(cmd, env=env, capture_output=True)
            times[name].append(time.perf_counter() - t)
            if r.returncode != 0:
                raise SystemExit(f"{name} failed: {r.stderr.decode()[-500:]}")
    med = {k: statistics.median(v) for k, v in times.items()}
    imp = {k: importtime(cmd, env) for k, cmd in cmds.items()}
    base, (base_mods, base_ms) = med["python -c pass"], imp["python -c pass"]
    rows = [("python -c pass", f"{base:.3f}s", f"{base_mods} modules, {base_ms:.0f} ms self import time")]
    for name, bar in (("deployctl --help", HELP_BAR_S), ("no-op apply", NOOP_BAR_S)):
        mods, ms = imp[name]
        rows.append((name, f"{med[name]:.3f}s = {med[name] / base:.1f}x pass",
                     f"min {min(times[name]):.3f}s; {mods} modules, {ms:.0f} ms self import time "
                     f"({ms / base_ms:.1f}x pass's); bar {bar} s on a quiet machine: "
                     f"{'met' if med[name] <= bar else 'not met'}"))
    name = "no-op apply through main()"
    saved = statistics.median(a - b for a, b in zip(times[name], times["no-op apply"], strict=True))
    rows.append((name, f"{med[name]:.3f}s", f"min {min(times[name]):.3f}s; with teardown and the default collector: "
                 f"the command saves {1000 * saved:.0f} ms (median of the per-run differences)"))
    return rows


def print_startup(manifest: Path, env: dict[str, str], tmp: Path, runs: int) -> None:
    print(f"\nstart-up, medians of {runs} interleaved runs: {load_note()}")
    rows = startup(manifest, env, tmp, runs)
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:<22} {note}")


def startup_only(runs: int) -> None:
    """The start-up rows alone, against a quickstart applied once in this machine's deployctl
    cache (its environment is reused when it is there)."""
    print(f"at start: {load_note()}")
    with tempfile.TemporaryDirectory(prefix="deployctl-startup-") as tmp_:
        tmp = Path(tmp_)
        proj = tmp / "quickstart"
        shutil.copytree(QUICKSTART, proj, ignore=shutil.ignore_patterns(".deployctl"))
        manifest, env = proj / "deployctl.yaml", dict(os.environ)
        try:
            subprocess.run([*DEPLOYCTL, "apply", str(manifest), "--yes"], env=env, capture_output=True, check=True)
            print_startup(manifest, env, tmp, runs)
        finally:
            subprocess.run([*DEPLOYCTL, "destroy", str(manifest), "--yes"], env=env, capture_output=True)
    print(f"\nat end: {load_note()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9, help="interleaved runs of each start-up command")
    ap.add_argument("--store-rounds", type=int, default=2, help="rounds of the bytecode store's pair of cold applies")
    ap.add_argument("--startup-only", action="store_true", help="only the start-up part (one apply first, not measured)")
    args = ap.parse_args()
    if args.startup_only:
        return startup_only(args.runs)
    print(f"at start: {load_note()}")
    with tempfile.TemporaryDirectory(prefix="deployctl-cold-") as tmp_:
        tmp = Path(tmp_)
        env = dict(os.environ, DEPLOYCTL_CACHE_DIR=str(tmp / "cache"))  # no deployctl environment yet
        proj = tmp / "quickstart"
        shutil.copytree(QUICKSTART, proj, ignore=shutil.ignore_patterns(".deployctl"))
        manifest = proj / "deployctl.yaml"
        try:
            # warm uv's cache with these packages (a cache of its own: the cold apply must build)
            warm_env = dict(env, DEPLOYCTL_CACHE_DIR=str(tmp / "warm"))
            subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path;"
                            "from orchestrator.requirements import parse_requirements;"
                            "from targets.local.envs import ensure_environment; from targets.local.bytecode import wait_for_bytecode;"
                            "reqs = parse_requirements(Path(sys.argv[2]), None)[0];"
                            "ensure_environment(reqs, '3.11'); ensure_environment(reqs + [sys.argv[3]], '3.11');"
                            "wait_for_bytecode()",
                            str(REPO), str(QUICKSTART / "requirements.txt"), EXTRA_PIN], env=warm_env, check=True)
            phases, total, said = cold_apply(manifest, env)
            print(f"\ncold apply of the quickstart (warm uv cache, fresh deployctl cache): {total:.2f}s "
                  f"(bar {COLD_BAR_S} s: {'met' if total <= COLD_BAR_S else 'not met'}); {load_note()}")
            for name, secs in phases:
                print(f"  {name:<42} {secs:6.2f}s  {100 * secs / total:5.1f}%")
            if said:
                print(f"  (the server: {said})")

            print(f"\nthe environment's uv steps alone (warm uv cache): {load_note()}")
            for name, secs in uv_steps(tmp, QUICKSTART / "requirements.txt"):
                print(f"  {name:<42} {secs:6.2f}s")
            record = json.loads((proj / ".deployctl" / "iris-quickstart" / "dev" / "environment.json").read_text())
            source, compiled, modules = import_costs(Path(record["python"]), proj / "model" / "model.pkl", tmp)
            print(f"  import score.py's packages + load the model ({modules} modules): from source {source:.2f}s, "
                  f"with bytecode {compiled:.2f}s ({source / compiled:.1f}x)")

            print(f"\ncold apply, side by side: fresh deployctl cache vs a new environment (+ {EXTRA_PIN}, another "
                  f"project) once the bytecode store is warm; {load_note()}")
            wait_for_store(env_dir_of(manifest))  # the first apply's compile: not beside the rounds
            rounds = store_rounds(tmp, env, args.store_rounds)
            print(f"  where the new environment's cold apply goes (round {len(rounds)}):")
            for name, secs in rounds[-1][2]:
                print(f"    {name:<42} {secs:6.2f}s  {100 * secs / rounds[-1][1]:5.1f}%")
            median, best, placed = link_cost(tmp / "uv-steps", tmp / "store-cache-0")
            print(f"  linking the store's pycs into the quickstart's environment: {placed} files, "
                  f"median {1000 * median:.0f} ms (min {1000 * best:.0f} ms) of 7")
            costs = hash_vs_timestamp(tmp / "uv-steps" / "bin" / "python", tmp, 9)
            (hw, hc), (tw, tc) = costs["checked-hash"], costs["timestamp"]
            print(f"  warm `import sklearn.ensemble`, medians of 9 interleaved: CHECKED_HASH pycs {hw:.3f}s wall / "
                  f"{hc:.3f}s CPU vs timestamp pycs {tw:.3f}s / {tc:.3f}s ({hw / tw:.2f}x wall, {hc / tc:.2f}x CPU)")

            print_startup(manifest, env, tmp, args.runs)
        finally:  # never leave the server or its zygote behind
            subprocess.run([*DEPLOYCTL, "destroy", str(manifest), "--yes"], env=env, capture_output=True)
    print(f"\nat end: {load_note()}")


if __name__ == "__main__":
    main()
