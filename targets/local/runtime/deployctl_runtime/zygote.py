"""The zygote: a warm process that starts server versions by forking, not by a fresh interpreter.

    python -m deployctl_runtime.zygote --socket PATH --modules FILE

Importing a model's libraries is most of a version's start (scikit-learn: 0.7 s of 0.9 s here).
The zygote imports the installed modules the running version's ``score.py`` and ``init()``
imported (listed in ``--modules``, in the order their imports ended, by
:class:`deployctl_runtime.contract.ModuleReporter`), and starts each new version as a fork of
itself: a code-only redeploy then starts in milliseconds.  The list is written while the first
version is still initialising and read here every 50 ms, so on a new environment the zygote
imports alongside the first version (another core) instead of after it: a redeploy right after
the first deploy finds it warm too.  The user's own code is never imported here, so every
version runs its own ``score.py``.

Protocol (one JSON line each way on the unix socket)::

    {"argv": [...server args...], "env": {...}, "cwd": DIR, "log": FILE}  ->  {"pid": N}

The child leaves the zygote's session (it outlives the zygote, like a cold start), takes the
given environment, working directory and log, and runs :func:`deployctl_runtime.server.main`.
A package that fails to import is skipped (the version imports it itself).  SIGTERM stops the
zygote only; the versions it started keep serving.  It records itself (``--pid-file``: pid and
start time) before anything else, so one whose starter was killed is still found and stopped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import sys
import time
import traceback


def preload(path: str, done: set[str]) -> list[str]:
    try:
        with open(path) as f:
            names = [n for n in json.load(f) if isinstance(n, str)]
    except (OSError, ValueError):
        return []
    loaded = []
    for name in names:
        if name in done:
            continue
        done.add(name)
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001 - optional: the version imports it itself
            pass
    return loaded


def child(request: dict, inherited: list[socket.socket]) -> None:
    """In the forked child: become a detached server process.  Never returns."""
    code = 1
    try:
        for s in inherited:  # the zygote's sockets are not the server's business
            s.close()
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = [p for p in sys.path if p not in ("", ZYGOTE_CWD)]
        from deployctl_runtime import server

        code = server.main(list(request["argv"]))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


ZYGOTE_CWD = os.getcwd()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--modules", required=True)
    ap.add_argument("--pid-file", help="this process's record (pid, start time), written first")
    args = ap.parse_args(argv)
    if args.pid_file:
        from deployctl_runtime.lifecycle import register

        register(args.pid_file)

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the versions we start
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket)
    listener.listen(8)
    listener.settimeout(0.05)  # also how often the module list is checked for news
    done: set[str] = set()
    modules_mtime = 0.0
    print(f"zygote {os.getpid()} listening on {args.socket}", file=sys.stderr, flush=True)
    while not stop:
        try:  # new packages reported since: import them now, while idle
            mtime = os.stat(args.modules).st_mtime
        except OSError:
            mtime = modules_mtime
        if mtime != modules_mtime:
            modules_mtime = mtime
            started = time.perf_counter()
            loaded = preload(args.modules, done)
            if loaded:
                packages = ", ".join(sorted({name.split(".")[0] for name in loaded}))
                print(f"preloaded {len(loaded)} modules ({packages}) in {time.perf_counter() - started:.2f}s",
                      file=sys.stderr, flush=True)
        try:
            conn, _ = listener.accept()
        except (TimeoutError, socket.timeout):  # noqa: UP041 - distinct before Python 3.10
            continue
        except InterruptedError:
            continue
        with conn:
            try:
                conn.settimeout(10)
                with conn.makefile("rb") as lines:
                    request = json.loads(lines.readline())
                pid = os.fork()
                if pid == 0:
                    child(request, [listener, conn])
                reply: dict[str, object] = {"pid": pid}
            except Exception as e:  # noqa: BLE001 - a bad request must not stop the zygote
                reply = {"error": f"{type(e).__name__}: {e}"}
            try:
                conn.sendall((json.dumps(reply) + "\n").encode())
            except OSError:
                pass
    listener.close()
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
