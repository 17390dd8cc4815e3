"""A near-real-time worker: load the model once, then score queued requests until stopped.

    python -m deployctl_runtime.nrt_worker --code DIR --entry score.py --queue DB [...]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable

from deployctl_runtime.contract import ScriptError, UserScript, to_json_bytes, traceback_tail
from deployctl_runtime.queue import Queue


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", required=True)
    ap.add_argument("--entry", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--visibility-timeout", type=float, default=60)
    ap.add_argument("--max-attempts", type=int, default=5)
    ap.add_argument("--poll", type=float, default=0.05)
    ap.add_argument("--ready-file")
    args = ap.parse_args(argv)

    def ready() -> None:
        if args.ready_file:
            with open(args.ready_file, "w") as f:
                f.write(str(os.getpid()))

    return run_worker(args.code, args.entry, args.queue, visibility_timeout=args.visibility_timeout,
                      max_attempts=args.max_attempts, poll=args.poll, on_ready=ready)


def run_worker(code: str, entry: str, queue: str, *, visibility_timeout: float, max_attempts: int,
               poll: float = 0.05, on_ready: Callable[[], None] | None = None,
               on_init_error: Callable[[ScriptError], None] | None = None) -> int:
    """Load the script, init() once, then score messages until SIGTERM (finishing the current one)."""
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    script = UserScript(code, entry)
    try:
        script.load()
        script.init()
    except ScriptError as e:
        print(f"init failed: {e}\n{e.tail}", file=sys.stderr, flush=True)
        if on_init_error:
            on_init_error(e)
        return 3
    if on_ready:
        on_ready()
    q = Queue(queue, visibility_timeout=visibility_timeout, max_attempts=max_attempts)
    me = f"{os.uname().nodename}:{os.getpid()}"
    print(f"worker {me} ready", file=sys.stderr, flush=True)
    while not stop:
        msg = q.claim(me)
        if msg is None:
            time.sleep(poll)
            continue
        try:
            out = script.run_online(msg.body)
            q.complete(msg.id, to_json_bytes(out))
        except Exception as e:
            print(f"request {msg.id} attempt {msg.attempts} failed:\n{traceback_tail(e)}", file=sys.stderr, flush=True)
            q.fail(msg.id, f"{type(e).__name__}: {e}", msg.attempts)
    q.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
