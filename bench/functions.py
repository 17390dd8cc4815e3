"""The Functions target's two claims, measured side by side in one run.

    python bench/functions.py [--requests N] [--requirements numpy scikit-learn ...]

1. First answer after deploy, and the cost of each further request: the generated app (score.py
   imported and init() run once per worker, when the worker loads) vs importing per call (a fresh
   worker per request, as a function that loads its libraries on every cold call pays).  The
   scoring script imports a heavy library (azure.ai.ml, present in deployctl's own venv) in init().
2. Building the package's site-packages for the Functions platform: ``uv pip install --target``
   vs ``pip install --target`` (manylinux wheels for Python 3.11, same requirements, each with a
   fresh target folder; both tools keep their own download caches warm after the first round).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from targets.web import package

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "functions-real-time"
HEAVY_SCORE = """
import json
def init():
    global ml
    import azure.ai.ml as ml  # the model's libraries: heavy imports belong here, once
def run(raw):
    return {"rows": len(json.loads(raw)["data"]), "sdk": ml.__name__}
"""
BODY = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]}).encode()


def start_host(pkg: Path, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    cfg, ready = work / "config.json", work / "ready.json"
    cfg.write_text(json.dumps({"settings": {}, "keys": ["k"]}))
    ready.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "targets.web.host", "--package", str(pkg), "--config", str(cfg),
                             "--ready-file", str(ready)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit("the host did not start")
        time.sleep(0.01)
    return proc, int(json.loads(ready.read_text())["port"])


def score(port: int) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/score", data=BODY, method="POST",
                                 headers={"x-functions-key": "k", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 200


def bench_first_answer(tmp: Path, requests: int) -> None:
    code = tmp / "src"
    code.mkdir()
    (code / "score.py").write_text(HEAVY_SCORE)
    pkg = package.stage(tmp / "pkg", code_dir=code, model_path=EXAMPLE / "model",
                        config=package.app_config("score.py", 3, {}), site_packages_dir=None)
    # generated app: one worker, init() once, then every request is a plain call
    t0 = time.perf_counter()
    proc, port = start_host(pkg, tmp)
    score(port)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(requests):
        score(port)
    warm = (time.perf_counter() - t1) / requests
    proc.terminate()
    proc.wait()
    # importing per call: every request starts a worker that imports and inits before answering
    per_call = []
    for _ in range(min(requests, 5)):
        t = time.perf_counter()
        proc, port = start_host(pkg, tmp)
        score(port)
        per_call.append(time.perf_counter() - t)
        proc.terminate()
        proc.wait()
    cold = sum(per_call) / len(per_call)
    print(f"first answer after deploy (worker start + imports + init + 1 call): {first * 1000:.0f} ms")
    print(f"generated app, each further request (imports done once):           {warm * 1000:.1f} ms")
    print(f"importing per call, each request:                                   {cold * 1000:.0f} ms")
    print(f"  ratio per request: importing per call is {cold / warm:.0f}x slower than the generated app")


def bench_build(tmp: Path, requirements: list[str], rounds: int) -> None:
    times: dict[str, float] = {}
    for installer in ("uv", "pip"):
        best = float("inf")
        for r in range(rounds):
            req = tmp / f"req-{installer}.txt"
            req.write_text("\n".join([*package.host_requirements("queue"), *requirements]) + "\n")
            target = tmp / f"sp-{installer}-{r}"
            t = time.perf_counter()
            subprocess.run(package.install_command(target, req, "3.11", installer), check=True,
                           env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
            best = min(best, time.perf_counter() - t)
            shutil.rmtree(target)
        times[installer] = best
        print(f"{installer} --target ({', '.join(requirements) or 'azure-functions only'}): {best:.2f} s (best of {rounds})")
    print(f"  ratio: pip takes {times['pip'] / times['uv']:.1f}x as long as uv")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--requirements", nargs="*", default=["numpy", "scikit-learn"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        bench_first_answer(Path(t), args.requests)
    with tempfile.TemporaryDirectory() as t:
        bench_build(Path(t), args.requirements, args.rounds)


if __name__ == "__main__":
    main()
