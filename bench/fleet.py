"""Fleet scale of the Azure simulator: one manifest with N online-endpoint targets, applied with
``--simulate`` against a cloud that takes wall-clock time, through the real CLI.

    python bench/fleet.py [--sizes 1,10] [--factor 0.02] [--invokes 5]

Latency (``--simulate-latency``): every ARM call 100–300 ms (uniform), and long-running
operations at Azure's typical durations (endpoint create 90 s, deployment create 300 s, delete
60 s) multiplied by ``--factor``, all on a wall clock (``realtime=1``), so concurrent targets
wait side by side as they do against Azure; ARM's request limits (token buckets) are divided by
the same factor, so the compressed run meets the throttling the real one would.  Each target has its own workspace (one workspace per
target: the targets share the model, code and environment files).

Prints, each with its bar:
- apply of N targets vs the slowest single target (apply of 1): ≤ 1.2x;
- peak memory (max RSS) of the CLI process;
- a no-op ``plan --simulate`` of N targets, without latency (the simulator's own cost): ≤ 2 s for 100;
- a simulated ``invoke`` (warm scorer) vs a local-target ``invoke`` of the same model: ≤ 1.5x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
_SCRIPT = Path(sys.executable).with_name("deployctl")
DEPLOYCTL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
AZURE_S = {"endpoint": 90, "deployment": 300, "delete": 60, "default": 20}


def manifest(n: int, folder: Path) -> Path:
    targets = "\n".join(
        f"  - {{ name: t{i:03d}, kind: online-endpoint, subscription: {SUBSCRIPTION}, "
        f"resource_group: fleet-rg, workspace: fleet-ws-{i:03d}, instance_count: 1, "
        f"rollout: {{ steps: [100], health_checks: 1 }} }}" for i in range(n))
    path = folder / f"fleet-{n}.yaml"
    path.write_text(f"""apiVersion: deployctl/v1
name: fleet
model: {{ path: {QUICKSTART / 'model'} }}
environment: {{ python: "3.11", requirements: {QUICKSTART / 'requirements.txt'} }}
code: {{ path: {QUICKSTART / 'src'}, entry: score.py }}
scoring: {{ type: real-time, sample_request: {QUICKSTART / 'sample-request.json'} }}
resources: {{ memory_gb: auto, cpu: auto }}
targets:
{targets}
""")
    return path


def run_ok(*args: str, latency: str | None = None) -> tuple[float, int, float]:
    """(wall seconds, peak RSS in MB, CPU seconds) of one CLI run; exits on failure.  CPU seconds
    are what to compare on a loaded machine: wall time there is mostly waiting for a core."""
    env = dict(os.environ)
    env.pop("DEPLOYCTL_SIMULATE_LATENCY", None)
    if latency:
        env["DEPLOYCTL_SIMULATE_LATENCY"] = latency
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([*DEPLOYCTL, *args], env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this process's own peak memory and CPU
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            err.seek(0)
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}\n{out.read()[-3000:]}\n{err.read()[-3000:]}")
    return seconds, usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime


def seed_quota(state_file: Path) -> None:
    """Room for the whole fleet (the default is 100 vCPUs per family: 25 targets of 4)."""
    subprocess.run([sys.executable, "-m", "orchestrator.azure.simulator", "quota", str(state_file), SUBSCRIPTION,
                    "eastus", "*", "100000"], capture_output=True, check=True, cwd=REPO)


def reset(state_file: Path) -> None:
    subprocess.run([sys.executable, "-m", "orchestrator.azure.simulator", "reset", str(state_file)],
                   capture_output=True, check=False, cwd=REPO)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,10", help="fleet sizes, comma-separated (the first should be 1)")
    ap.add_argument("--factor", type=float, default=0.02, help="scale of Azure's typical LRO durations")
    ap.add_argument("--invokes", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    lro = ",".join(f"{k}={v * args.factor:g}" for k, v in AZURE_S.items())
    # ARM's request limits are compressed by the same factor as the durations (refill x 1/factor):
    # otherwise 100 targets' polls, squeezed into 1/50th of the time, would meet a throttle the real
    # durations never meet (the figure with Azure's own limits is the README's "on paper" one).
    latency = f"realtime=1,call=0.1-0.3,{lro},arm={1 / args.factor:g}"
    print(f"latency: {latency}  (Azure's typical LRO durations x {args.factor:g}, ARM's request limits x "
          f"{1 / args.factor:g}; ARM calls 100-300 ms)")
    work = Path(tempfile.mkdtemp(prefix="deployctl-fleet-"))
    applied: dict[int, float] = {}
    try:
        for n in sizes:
            state = work / f"state-{n}"
            m = manifest(n, work)
            sim = ("--simulate", "--state-dir", str(state))
            seed_quota(state / "simulated-azure.json")
            t, peak, cpu = run_ok("apply", str(m), "--yes", *sim, latency=latency)  # the default parallelism
            applied[n] = t
            plans = [run_ok("plan", str(m), *sim) for _ in range(3)]
            plan_t = statistics.median(p[0] for p in plans)
            plan_cpu = statistics.median(p[2] for p in plans)
            line = f"N={n:>3}: apply {t:6.1f} s ({cpu:.1f} s CPU)"
            if n != sizes[0]:
                ratio = t / applied[sizes[0]]
                line += f" = {ratio:.2f}x the single target ({applied[sizes[0]]:.1f} s; bar <= 1.2x: " \
                        f"{'met' if ratio <= 1.2 else 'NOT met'})"
            line += f"; peak RSS of the CLI {peak} MB; no-op plan {plan_t:.2f} s ({plan_cpu:.2f} s CPU; median of 3, no latency"
            line += f"; bar for 100: <= 2 s: {'met' if plan_t <= 2 else 'NOT met'})" if n >= 100 else ")"
            print(line, flush=True)
            if n == sizes[0]:
                sample = str(QUICKSTART / "sample-request.json")
                local_dir = work / "local-state"
                run_ok("apply", str(QUICKSTART / "deployctl.yaml"), "--yes", "--state-dir", str(local_dir))
                sim_args = ("invoke", str(m), "--file", sample, *sim)
                loc_args = ("invoke", str(QUICKSTART / "deployctl.yaml"), "--file", sample, "--state-dir", str(local_dir))
                run_ok(*sim_args), run_ok(*loc_args)  # warm: the simulated scorer starts on the first call
                pairs = [(run_ok(*sim_args), run_ok(*loc_args)) for _ in range(args.invokes)]  # interleaved
                run_ok("destroy", str(QUICKSTART / "deployctl.yaml"), "--yes", "--state-dir", str(local_dir))
                sim_cpu, loc_cpu = (statistics.median(p[i][2] for p in pairs) for i in (0, 1))
                s, lo = (statistics.median(p[i][0] for p in pairs) for i in (0, 1))
                print(f"invoke (median of {args.invokes}, interleaved): simulated {s:.2f} s ({sim_cpu:.2f} s CPU) vs local {lo:.2f} s "
                      f"({loc_cpu:.2f} s CPU) = {s / lo:.2f}x (bar <= 1.5x: {'met' if s / lo <= 1.5 else 'NOT met'})",
                      flush=True)
            reset(state / "simulated-azure.json")
    finally:
        for n in sizes:
            reset(work / f"state-{n}" / "simulated-azure.json")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
