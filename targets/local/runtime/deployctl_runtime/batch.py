"""The batch runner: Azure ML's batch deployment contract on this machine.

    python -m deployctl_runtime.batch --code DIR --entry batch_driver.py --inputs LIST --output FILE --work DIR [...]

Input files are split into mini-batches of ``--mini-batch-size``; ``--max-concurrency`` worker
processes each run ``init()`` once, then ``run(mini_batch)`` (a list of file paths) per
mini-batch, which returns a list or a DataFrame.  Each mini-batch's rows are saved under
``--work`` as soon as it finishes, keyed by content: its files' paths and bytes and ``--key`` (the
caller's digest of the model, code and settings).  A rerun after a crash skips the mini-batches
already done, and only those: an input file overwritten with new rows is a new mini-batch and is
scored again.  The output file is then written in input order (Azure ML's ``append_row`` output).  A mini-batch
that fails is retried ``--max-retries`` times and may take at most ``--timeout`` seconds; the job
fails when more than ``--error-threshold`` items failed (-1: never).  Progress goes to stdout as
``progress <done>/<total>`` lines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path
from typing import Any

from deployctl_runtime.contract import ScriptError, UserScript, traceback_tail, write_json_atomic

_script: UserScript | None = None
_init_error: str | None = None
INIT_FAILED = "init() failed"


class MiniBatchTimeout(Exception):
    pass


def _init_worker(code: str, entry: str) -> None:
    # An exception here would make the pool respawn the worker forever: keep it, report it per job.
    global _script, _init_error
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # stdout carries this runner's progress lines: the script's prints go to the log (stderr)
    sys.stdout.flush()
    os.dup2(2, 1)
    try:
        script = UserScript(code, entry)
        script.load()
        script.init()
        _script = script
    except ScriptError as e:
        _init_error = f"{INIT_FAILED}: {e}\n{e.tail}"


def _run(job: tuple[int, list[str], float]) -> tuple[int, list[str] | None, str | None]:
    index, files, timeout = job
    if _script is None:
        return index, None, _init_error or INIT_FAILED

    def on_alarm(*_: object) -> None:
        raise MiniBatchTimeout(f"mini-batch {index} took longer than {timeout:.0f}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return index, _script.run_batch(files), None
    except BaseException as e:
        return index, None, f"{type(e).__name__}: {e}\n{traceback_tail(e, 6)}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def expand(inputs: list[str]) -> list[str]:
    files: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(str(f) for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            files.append(str(p))
        else:
            raise FileNotFoundError(f"input not found: {item}")
    return files


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def batch_keys(batches: list[list[str]], salt: str) -> list[str]:
    """One key per mini-batch: what it scores (each file's path and content) and with what (salt)."""
    digests = {f: file_digest(f) for batch in batches for f in batch}
    keys = []
    for batch in batches:
        h = hashlib.sha256(salt.encode())
        for f in batch:
            h.update(f"\0{f}\0{digests[f]}".encode())
        keys.append(h.hexdigest()[:32])
    return keys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", required=True)
    ap.add_argument("--entry", required=True)
    ap.add_argument("--inputs", required=True, help="a JSON file listing input files and folders")
    ap.add_argument("--output", required=True)
    ap.add_argument("--work", required=True, help="where finished mini-batches are kept (resume)")
    ap.add_argument("--key", default="", help="digest of the model, code and settings: part of each mini-batch's key")
    ap.add_argument("--mini-batch-size", type=int, default=10)
    ap.add_argument("--max-concurrency", type=int, default=1)
    ap.add_argument("--error-threshold", type=int, default=-1)
    ap.add_argument("--max-retries", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args(argv)

    try:
        files = expand(json.loads(Path(args.inputs).read_text()))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not files:
        print("error: no input files", file=sys.stderr)
        return 2
    batches = [files[i:i + args.mini_batch_size] for i in range(0, len(files), args.mini_batch_size)]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    keys = batch_keys(batches, args.key)
    done = {i for i, key in enumerate(keys) if (work / f"{key}.rows").exists()}
    todo = [i for i in range(len(batches)) if i not in done]
    total = len(batches)
    print(f"progress {len(done)}/{total}" + (f" (resuming: {len(done)} done before)" if done else ""), flush=True)

    failures: dict[int, str] = {}
    attempts = dict.fromkeys(todo, 0)
    failed_items = 0
    ctx = mp.get_context("fork")
    try:  # no worker (no init()) when every mini-batch was done before
        pool = ctx.Pool(min(args.max_concurrency, len(todo)), initializer=_init_worker,
                        initargs=(args.code, args.entry)) if todo else None
    except Exception as e:  # pragma: no cover - pool creation itself failing
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        pending = list(todo)
        while pending and pool is not None:
            results = pool.imap_unordered(_run, [(i, batches[i], args.timeout) for i in pending])
            retry: list[int] = []
            for index, rows, error in results:
                attempts[index] += 1
                if error is None:
                    write_json_atomic(str(work / f"{keys[index]}.rows"), rows)  # a crash never leaves half a batch
                    done.add(index)
                    failures.pop(index, None)
                    print(f"progress {len(done)}/{total}", flush=True)
                elif error.startswith(INIT_FAILED):
                    print(f"error: {error}", file=sys.stderr, flush=True)
                    return 3
                elif attempts[index] <= args.max_retries:
                    print(f"mini-batch {index} failed (attempt {attempts[index]}), retrying: {error.splitlines()[0]}",
                          file=sys.stderr, flush=True)
                    retry.append(index)
                else:
                    failures[index] = error
                    failed_items += len(batches[index])
                    print(f"mini-batch {index} failed after {attempts[index]} attempts:\n{error}", file=sys.stderr, flush=True)
                    if 0 <= args.error_threshold < failed_items:
                        print(f"error: {failed_items} failed items exceed error_threshold {args.error_threshold}",
                              file=sys.stderr, flush=True)
                        return 1
            pending = retry
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    with open(tmp_out, "w") as f:
        for i in range(total):
            if i in done:
                for row in json.loads((work / f"{keys[i]}.rows").read_text()):
                    f.write(f"{row}\n")
    os.replace(tmp_out, out)
    summary: dict[str, Any] = {"mini_batches": total, "failed_mini_batches": len(failures),
                               "failed_items": failed_items, "output": str(out)}
    print("summary " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
