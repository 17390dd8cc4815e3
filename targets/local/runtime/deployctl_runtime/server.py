"""The local scoring server: Azure ML online-endpoint routes, several worker processes.

    python -m deployctl_runtime.server --code DIR --entry score.py --status-file F [options]

Routes (as an Azure ML online endpoint / azmlinfsrv): ``POST /score``, and ``GET /score`` with
the input as query parameters (each parsed as JSON when it is, repeated ones as a list);
``OPTIONS /score``; ``GET /`` answers "Healthy" (liveness); ``GET /ready`` (readiness: every
worker ran init()); both carry ``x-deployctl-init-seconds`` (how long the answering worker's init() took); ``GET /swagger.json[?version=2|3]`` (the code folder's own swagger file, else
one generated from inference-schema's schemas, or open objects for an undecorated run()).  Key auth (``Authorization: Bearer <key>``) when a
key file is given.  Near-real-time mode (``--queue DB``): ``POST /score`` queues the request and
answers 202 with its id; ``GET /requests/<id>`` answers its state and result.

Hostile or broken clients (see :class:`Handler`): the key is checked before a body is read; a
body must be framed unambiguously (400 otherwise, unread) and fit ``--max-body-bytes`` (413);
the request head has size limits (414, 431) and, with an idle keep-alive connection, one
``--header-timeout``; a body or an answer one ``--body-timeout`` (408, or the connection is
dropped); each worker holds at most ``--max-connections`` connections (503 beyond).  A client's
doing never leaves a traceback in the log.

Process model: the parent binds a private 127.0.0.1 port and takes the public listening socket,
then forks the workers (each runs init() once, then serves; run() calls are serialised per worker
like azmlinfsrv's sync workers) and supervises them.  Before anything else it writes its own
record (``--pid-file``: pid and start time), so a version is findable from disk before it can take
traffic whatever happens to the process that started it; the workers die with it, even by SIGKILL
(:mod:`deployctl_runtime.lifecycle`).

Zero downtime: the public listening socket is never closed while a version is live.  A new
version receives the running version's socket over that version's unix socket (``--handoff-from``,
SCM_RIGHTS; each version offers it on its own, ``--handoff``),
serves only its private port until smoke-tested, and on SIGUSR1 starts accepting on the shared
public socket too; the previous version is then stopped with SIGTERM (stop accepting, finish
in-flight requests, exit).  Connections waiting in the socket's backlog are accepted by whichever
version is accepting: none is dropped.  The status file (JSON) says where it is.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import http.client
import io
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs

from deployctl_runtime.contract import (
    BadRequest,
    ScriptError,
    UserScript,
    to_json_bytes,
    traceback_tail,
    write_json_atomic,
)
from deployctl_runtime.lifecycle import die_with_parent, register

VERSION = "deployctl-runtime/1"
# Seconds this worker's init() took, on the health answers: what platforms that must wait for the
# start (App Service's WEBSITES_CONTAINER_START_TIME_LIMIT) are sized from.  A header, so the
# Azure ML contract's bodies ("Healthy") stay as they are.
INIT_HEADER = "x-deployctl-init-seconds"


def write_status(path: str, doc: dict[str, Any]) -> None:
    try:
        write_json_atomic(path, doc)
    except FileNotFoundError:
        pass  # a replaced version's folder is removed while it drains; nobody reads it any more


def listen(port: int, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))  # loopback unless a container asks for its own interface (--host)
    s.listen(256)
    return s


def take_public_socket(port: int, handoff: str | None, host: str = "127.0.0.1") -> socket.socket:  # handoff: where to take it from
    """The running version's listening socket when there is one (same socket, same backlog),
    else a new one on ``port``."""
    if handoff and os.path.exists(handoff):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
                u.settimeout(5)
                u.connect(handoff)
                _, fds, _, _ = socket.recv_fds(u, 16, 1)
            if fds:
                sock = socket.socket(fileno=fds[0])
                if sock.getsockname()[1] == port:
                    return sock
                sock.close()
        except OSError:
            pass  # the previous version is gone: bind afresh
    return listen(port, host)


def serve_handoff(path: str, public: socket.socket) -> None:
    """Give the public socket to the next version when it asks."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        u.bind(path)
    except OSError as e:  # serving matters more than a seamless next redeploy
        u.close()
        print(f"cannot offer the public socket at {path}: {e}; the next redeploy restarts briefly",
              file=sys.stderr, flush=True)
        return
    u.listen(4)

    def loop() -> None:
        while True:
            conn, _ = u.accept()
            with conn:
                socket.send_fds(conn, [b"s"], [public.fileno()])

    threading.Thread(target=loop, daemon=True).start()


# Limits on what a client may send before it is answered (hostile or broken clients must not hold
# memory or threads): a request line as long as http.server allows, header lines and a whole head
# as gunicorn bounds them (azmlinfsrv's server), chunk-size lines of a sane length.
MAX_REQUEST_LINE = 65536
MAX_HEADER_LINE = 16384
MAX_HEADERS = 100
MAX_HEAD_BYTES = 65536
MAX_CHUNK_LINE = 1024
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
CHUNKED = -1  # the body's length when it comes in chunks
_NO_HEADERS = http.client.HTTPMessage()
_BUSY_BODY = json.dumps({"message": "too many connections; try again shortly"}).encode()
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
         b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class Reject(Exception):
    """Answer ``status`` with ``message`` and close the connection (its framing is not trusted)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Watchdog:
    """Ends what a client takes too long to send or to read (slowloris: headers or a body a byte at
    a time, or nothing at all on an open connection; a response never read).  One thread for all
    connections of a worker; the hot path only writes a deadline in a dict.  Shutting the socket
    down wakes the handler blocked on it: reading returns what came so far and the handler
    answers 408, or a write fails and the connection is dropped."""

    def __init__(self, tick: float = 0.1) -> None:
        self.deadlines: dict[Handler, tuple[float, int]] = {}
        self.lock = threading.Lock()
        self.tick = tick
        threading.Thread(target=self._loop, name="watchdog", daemon=True).start()

    def arm(self, handler: Handler, seconds: float, how: int = socket.SHUT_RD) -> None:
        with self.lock:
            self.deadlines[handler] = (time.monotonic() + seconds, how)

    def disarm(self, handler: Handler) -> None:
        with self.lock:
            self.deadlines.pop(handler, None)

    def _loop(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self.lock:
                expired = [(h, how) for h, (at, how) in self.deadlines.items() if at <= now]
                for handler, how in expired:
                    del self.deadlines[handler]
                    handler.timed_out = True
                    try:
                        handler.connection.shutdown(how)
                    except OSError:
                        pass  # already closed by the client


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sock: socket.socket, app: App) -> None:
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.app = app
        self.watchdog = Watchdog()
        self.connections = 0
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection, up to ``--max-connections``; beyond that an immediate 503."""
        with self.connections_lock:
            busy = self.connections >= self.app.args.max_connections
            if not busy:
                self.connections += 1
        if busy:
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, never a traceback: a client that goes away mid-request is not an error."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        print(f"connection from {client_address[0]}:{client_address[1]} ended: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)


class App:
    """What a worker serves: the user's script (or the queue) and the settings."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.key = open(args.key_file).read().strip() if args.key_file else None
        self.script: UserScript | None = None
        self.queue: Any = None
        self.run_lock = threading.Lock()
        self.swagger: dict[str, bytes | None] = {}  # by requested version, made on first ask
        self.inflight = 0  # requests being answered (a stopping worker waits for them)
        self.inflight_lock = threading.Lock()
        self.draining = False
        self.init_seconds: float | None = None

    def enter(self) -> None:
        with self.inflight_lock:
            self.inflight += 1

    def leave(self) -> None:
        with self.inflight_lock:
            self.inflight -= 1

    def start(self) -> None:
        if self.args.queue:
            from deployctl_runtime.queue import Queue

            self.queue = Queue(self.args.queue, visibility_timeout=self.args.visibility_timeout,
                               max_attempts=self.args.max_attempts)
            return
        self.script = UserScript(self.args.code, self.args.entry)
        self.script.load()
        started = time.perf_counter()
        self.script.init()
        self.init_seconds = time.perf_counter() - started

    def health_headers(self) -> dict[str, str]:
        return {INIT_HEADER: f"{self.init_seconds:.3f}"} if self.init_seconds is not None else {}

    def swagger_for(self, version: str) -> bytes | None:
        if version not in self.swagger and self.script is not None:
            doc = self.script.swagger(version)
            self.swagger[version] = json.dumps(doc).encode() if doc else None
        return self.swagger.get(version)


class Handler(BaseHTTPRequestHandler):
    """One connection.  The request head is read here with its own limits and deadline, the body
    only once the route and the key are known good (an unauthenticated client cannot make the
    server read, or hold, its body), and only as framed unambiguously: one Content-Length of
    digits, or ``Transfer-Encoding: chunked`` alone (both at once is how requests are smuggled
    past proxies: 400).  A body left unread closes the connection after the answer."""

    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = VERSION
    sys_version = ""
    server: _Server
    timed_out = False
    body_length = 0  # declared: bytes, CHUNKED, or 0 (none)
    body_pending = False  # declared and not read: the connection cannot carry another request
    expect_continue = False

    def setup(self) -> None:
        self.request.setblocking(True)  # accepted from a non-blocking listening socket
        super().setup()
        # Small responses must not wait for Nagle's algorithm (a 40 ms stall per request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        return VERSION

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # per-request logging costs throughput; errors are logged where they happen

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass

    # -- reading a request -----------------------------------------------------------------
    def handle_one_request(self) -> None:
        args = self.server.app.args
        self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""  # for an early answer
        self.body_length, self.body_pending, self.expect_continue = 0, False, False
        self.headers = _NO_HEADERS  # (not the previous request's, in an answer to a broken head)
        # Idle keep-alive time counts as header time: a connection that sends nothing is closed.
        self.server.watchdog.arm(self, args.header_timeout)
        try:
            if not self._read_head():
                return
            self.server.watchdog.disarm(self)  # run() may take its time: only the client's part is bounded
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                raise Reject(501, f"unsupported method ({self.command!r})")
            method()
        except Reject as e:
            self.close_connection = True
            self._error(e.status, str(e))
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            self.server.watchdog.disarm(self)  # whatever ended the request (dict.pop: cheap)
        if self.body_pending:
            self.close_connection = True

    def _read_head(self) -> bool:
        """Read and parse the request line and headers; False when there is nothing to answer."""
        line = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if not line:  # closed, or idle past the header timeout: nothing was asked
            self.close_connection = True
            return False
        if len(line) > MAX_REQUEST_LINE:
            raise Reject(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
        if not line.endswith(b"\n"):
            self._incomplete("request line")
        # The headers are parsed here, within the limits (and 4x faster than http.server's email
        # parser); http.server parses the request line.
        headers, count, size = http.client.HTTPMessage(), 0, 0
        while True:
            h = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(h) > MAX_HEADER_LINE:
                raise Reject(431, f"a header line is longer than {MAX_HEADER_LINE} bytes")
            if not h.endswith(b"\n"):
                self._incomplete("headers")
            if h in (b"\r\n", b"\n"):
                break
            name, colon, value = h.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):  # obs-fold, "Name :", no colon: ambiguous
                raise Reject(400, "malformed header line")
            count += 1
            size += len(h)
            if count > MAX_HEADERS or size > MAX_HEAD_BYTES:
                raise Reject(431, f"more than {MAX_HEADERS} headers or {MAX_HEAD_BYTES} bytes of them")
            headers[name.decode("ascii")] = value.decode("iso-8859-1").lstrip(" \t").rstrip("\r\n")
        self.raw_requestline = line
        rfile, self.rfile = self.rfile, io.BytesIO(b"\r\n")
        try:
            ok = self.parse_request()
        finally:
            self.rfile = rfile
        if not ok:  # parse_request answered (send_error)
            return False
        self.headers = headers
        connection = headers.get("Connection", "").lower()  # what parse_request does with them
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        self.expect_continue = (headers.get("Expect", "").lower() == "100-continue"
                                and self.request_version >= "HTTP/1.1")  # 100 sent when the body is wanted
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"
            raise Reject(400, "HTTP/0.9 requests are not supported")
        self.body_length = self._framing()
        self.body_pending = self.body_length != 0
        return True

    def _framing(self) -> int:
        """The declared body: its length, CHUNKED, or 0; Reject when it is ambiguous or invalid."""
        te = self.headers.get_all("Transfer-Encoding")
        cl = self.headers.get_all("Content-Length")
        if te:
            if cl:
                raise Reject(400, "both Content-Length and Transfer-Encoding: the body's length is ambiguous")
            if ",".join(te).strip().lower() != "chunked":
                raise Reject(501, f"unsupported Transfer-Encoding {','.join(te)!r} (only chunked is)")
            return CHUNKED
        if not cl:
            return 0
        values = {v.strip() for item in cl for v in item.split(",")}
        value = values.pop()
        if values or not _DIGITS.fullmatch(value):
            raise Reject(400, f"invalid Content-Length {', '.join(cl)!r}")
        return int(value) if len(value) <= 18 else 10**18  # (int() of thousands of digits raises)

    def _incomplete(self, what: str) -> None:
        if self.timed_out:
            raise Reject(408, f"the request's {what} did not arrive in time")
        raise ConnectionError(f"the client closed the connection during the {what}")

    def read_body(self) -> bytes:
        """The request body, within ``--max-body-bytes`` and ``--body-timeout``."""
        args = self.server.app.args
        limit, n = args.max_body_bytes, self.body_length
        if n > limit:
            raise Reject(413, f"request body of {n} bytes is over the limit of {limit}")
        if self.expect_continue:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.server.watchdog.arm(self, args.body_timeout)
        try:
            body = self._read_chunked(limit) if n == CHUNKED else self.rfile.read(n)
        finally:
            self.server.watchdog.disarm(self)
        if n != CHUNKED and len(body) < n:
            self._incomplete("body")
        self.body_pending = False
        return body

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(MAX_CHUNK_LINE + 1)
            if len(line) > MAX_CHUNK_LINE:
                raise Reject(400, "chunk size line too long")
            if not line.endswith(b"\n"):
                self._incomplete("body")
            size_text = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
            if not _HEX.fullmatch(size_text):
                raise Reject(400, "invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise Reject(413, f"request body over the limit of {limit} bytes")
            data = self.rfile.read(size + 2)
            if len(data) < size + 2:
                self._incomplete("body")
            if data[-2:] != b"\r\n":
                raise Reject(400, "a chunk is not followed by CRLF")
            parts.append(data[:-2])
        for _ in range(MAX_HEADERS + 1):  # trailers: read and ignored
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                raise Reject(431, "trailer line too long")
            if not line.endswith(b"\n"):
                self._incomplete("body")
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)
        raise Reject(431, f"more than {MAX_HEADERS} trailers")

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        if self.body_pending:
            self._linger()

    def _linger(self) -> None:
        """Closing a socket with unread data sends a reset, which can destroy the answer before
        the client reads it: say we are done writing, then discard what still arrives for a
        moment (bounded in time and bytes, never kept), then close."""
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 1.0
            left = 16 * 1024 * 1024
            while left > 0 and (remaining := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    # -- answering -------------------------------------------------------------------------
    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a bad request line...), as JSON like every other answer."""
        if not self.request_version.startswith("HTTP/1."):
            self.request_version = "HTTP/1.1"
        self.close_connection = True
        self._error(code, message or self.responses.get(code, ("error",))[0])

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-ms-request-id", self.headers.get("x-ms-client-request-id") or uuid.uuid4().hex)
        self.send_header("x-ms-server-version", VERSION)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        # A stopping version (the client reconnects to the next), a body left unread, a request
        # that was rejected: the connection ends after this answer.
        if self.server.app.draining or self.body_pending or self.close_connection:
            self.send_header("Connection", "close")
            self.close_connection = True
        # Headers and body in one write (end_headers() would flush the headers on their own).
        self._headers_buffer.append(b"\r\n" + body)  # type: ignore[attr-defined]
        self.server.watchdog.arm(self, self.server.app.args.body_timeout, socket.SHUT_RDWR)  # a client not reading
        try:
            self.flush_headers()
        finally:
            self.server.watchdog.disarm(self)

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps({"message": message}).encode(), extra)

    def _authorized(self) -> bool:
        key = self.server.app.key
        if key is None:
            return True
        given = self.headers.get("Authorization", "")
        token = given[7:] if given.startswith("Bearer ") else ""
        return hmac.compare_digest(token.encode(), key.encode())

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.server.app.enter()
        try:
            self._get()
        finally:
            self.server.app.leave()

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.server.app.enter()
        try:
            self._post()
        finally:
            self.server.app.leave()

    def do_OPTIONS(self) -> None:  # noqa: N802 - stdlib naming; a CORS preflight, as azmlinfsrv answers it
        if self.path.split("?", 1)[0] in ("/", "/score", "/swagger.json", "/ready"):
            self._send(200, b"", {"Allow": "GET, POST, OPTIONS"}, content_type="text/plain; charset=utf-8")
        else:
            self._error(404, f"no route {self.path}")

    def _get(self) -> None:
        app = self.server.app
        path, _, query = self.path.partition("?")
        if path == "/":
            self._send(200, b"Healthy", app.health_headers(), content_type="text/plain; charset=utf-8")
        elif path == "/ready":
            self._send(200, b'{"ready": true}', app.health_headers())
        elif path == "/swagger.json" and app.script is not None:
            version = (parse_qs(query).get("version") or ["2"])[0]
            doc = app.swagger_for(version)
            if doc is None:
                self._error(404, f"Swagger version [{version}] is not valid. Supported versions: [2, 3].")
            else:
                self._send(200, doc)
        elif path == "/score" and app.script is not None:
            if self._authorized():
                self._score(json.dumps(query_input(query)).encode())
            else:
                self._error(401, "missing or invalid key (Authorization: Bearer <key>)")
        elif path.startswith("/requests/") and app.queue is not None:
            if not self._authorized():
                self._error(401, "missing or invalid key (Authorization: Bearer <key>)")
                return
            doc = app.queue.get(path.rsplit("/", 1)[-1])
            if doc is None:
                self._error(404, "no such request")
            else:
                self._send(200, json.dumps(doc).encode())
        else:
            self._error(404, f"no route {path}")

    def _post(self) -> None:
        app = self.server.app
        if self.path.split("?", 1)[0] != "/score":
            self._error(404, f"no route {self.path}")
            return
        if not self._authorized():  # before the body: an unauthenticated body is never read
            self._error(401, "missing or invalid key (Authorization: Bearer <key>)")
            return
        if self.body_length == 0 and "Content-Length" not in self.headers:
            self._error(411, "Content-Length is required")
            return
        body = self.read_body()
        if app.queue is not None:
            key = self.headers.get("Idempotency-Key") or self.headers.get("x-ms-idempotency-key")
            mid, created = app.queue.submit(body, key)
            self._send(202, json.dumps({"request_id": mid, "state": "queued", "duplicate": not created}).encode())
            return
        self._score(body)

    def _score(self, body: bytes) -> None:
        app = self.server.app
        assert app.script is not None
        started = time.perf_counter()
        try:
            with app.run_lock:
                out = app.script.run_online(body, dict(self.headers.items()))
            payload = to_json_bytes(out)
        except BadRequest as e:
            self._error(400, str(e))
            return
        except Exception as e:
            print(f"run() failed:\n{traceback_tail(e)}", file=sys.stderr, flush=True)
            self._error(500, f"run() raised {type(e).__name__}: {e}", {"x-ms-run-function-failed": "True"})
            return
        ms = (time.perf_counter() - started) * 1000
        self._send(200, payload, {"x-ms-run-function-failed": "False", "x-ms-run-fn-exec-ms": f"{ms:.3f}"})


def query_input(query: str) -> dict[str, Any]:
    """``GET /score`` input, as azmlinfsrv reads it: each parameter parsed as JSON when it is
    (``?a=1&b=[1,2]&c=x`` -> ``{"a": 1, "b": [1, 2], "c": "x"}``), a repeated one as a list."""
    def value(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            return text

    return {k: value(v[0]) if len(v) == 1 else [value(x) for x in v]
            for k, v in parse_qs(query, keep_blank_values=True).items()}


def serve(sock: socket.socket, app: App) -> _Server:
    # Several workers (and, during a redeploy, two versions) accept on one socket and all wake up
    # for each connection: the losers must not block in accept(), or shutdown() would wait for
    # the next connection to arrive.
    sock.setblocking(False)
    srv = _Server(sock, app)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def say(args: argparse.Namespace, message: str) -> None:
    """One lifecycle line in the server log (requests are not logged: it costs throughput)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    print(f"{stamp}Z version {args.version} pid {os.getpid()}: {message}", file=sys.stderr, flush=True)


def worker(args: argparse.Namespace, private: socket.socket, public_sock: socket.socket, ready_w: int,
           public_now: bool) -> int:
    app = App(args)
    started = time.perf_counter()
    try:
        app.start()
    except ScriptError as e:
        with open(args.status_file + ".error", "w") as f:
            f.write(f"{e}\n{e.tail}")
        say(args, f"{e}\n{e.tail}")
        return 3
    say(args, "HTTP front of the queue ready" if args.queue else
        f"worker ready (score.py loaded and init() done in {time.perf_counter() - started:.2f} s)")
    servers = [serve(private, app)]
    # The handlers only note the signal.  A handler runs in the main thread between two bytecodes,
    # wherever it is: one that takes a lock (Event.set()) while the loop below holds that lock
    # (inside Event.wait()) deadlocks the worker for good, and it then ignores every SIGTERM.  The
    # loop wakes up through the wakeup fd instead, to which the interpreter writes a byte at once,
    # so a redeploy's handoff is not held up by a poll.
    got: set[int] = set()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGUSR1, lambda signum, _: got.add(signum))
    signal.signal(signal.SIGTERM, lambda signum, _: got.add(signum))
    os.write(ready_w, b"r")
    if public_now:
        got.add(signal.SIGUSR1)
    published = False
    while signal.SIGTERM not in got:
        if signal.SIGUSR1 in got and not published:
            servers.append(serve(public_sock, app))
            published = True
            os.write(ready_w, b"p")
            say(args, f"serving on 127.0.0.1:{public_sock.getsockname()[1]}")
        select.select([wake_r], [], [], 0.5)
        with contextlib.suppress(BlockingIOError):
            os.read(wake_r, 4096)
    # Stop accepting, finish what is in flight (answered with Connection: close), then exit; idle
    # keep-alive connections close with the process.
    app.draining = True
    closing = [threading.Thread(target=srv.shutdown) for srv in servers]  # each waits out a poll:
    for t in closing:                                                      # in parallel, not in turn
        t.start()
    for t in closing:
        t.join()
    for srv in servers:
        srv.server_close()
    time.sleep(0.02)  # a request whose headers were being read as accepting stopped
    deadline = time.monotonic() + args.drain_seconds
    while app.inflight and time.monotonic() < deadline:
        time.sleep(0.01)
    say(args, "stopped" + (f" with {app.inflight} request(s) still running after the drain" if app.inflight else ""))
    return 0


def queue_worker(args: argparse.Namespace, ready_w: int) -> int:
    from deployctl_runtime.nrt_worker import run_worker

    def init_error(e: ScriptError) -> None:
        with open(args.status_file + ".error", "w") as f:
            f.write(f"{e}\n{e.tail}")

    return run_worker(args.code, args.entry, args.queue, visibility_timeout=args.visibility_timeout,
                      max_attempts=args.max_attempts, on_ready=lambda: os.write(ready_w, b"r"),
                      on_init_error=init_error)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", default="")
    ap.add_argument("--entry", default="score.py")
    ap.add_argument("--status-file", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--private-port", type=int, default=0)
    ap.add_argument("--public-port", type=int, default=0)
    ap.add_argument("--public-now", action="store_true", help="bind the public port at once (first version)")
    ap.add_argument("--key-file")
    ap.add_argument("--host", default="127.0.0.1", help="the public socket's address (a container: 0.0.0.0)")
    ap.add_argument("--max-body-bytes", type=int, default=100 * 1024 * 1024)
    ap.add_argument("--header-timeout", type=float, default=20,
                    help="longest time for a request's line and headers (and an idle keep-alive connection)")
    ap.add_argument("--body-timeout", type=float, default=60, help="longest time to receive a body or send an answer")
    ap.add_argument("--max-connections", type=int, default=128, help="open connections per worker; more get a 503")
    ap.add_argument("--queue", help="near-real-time mode: the SQLite queue")
    ap.add_argument("--queue-workers", type=int, default=0, help="near-real-time: processes scoring the queue")
    ap.add_argument("--visibility-timeout", type=float, default=60)
    ap.add_argument("--max-attempts", type=int, default=5)
    ap.add_argument("--version", default="")
    ap.add_argument("--drain-seconds", type=float, default=30, help="longest wait for in-flight requests when stopping")
    ap.add_argument("--handoff", help="unix socket through which this version passes the public socket on")
    ap.add_argument("--handoff-from", help="the running version's handoff socket (default: --handoff)")
    ap.add_argument("--pid-file", help="this process's record (pid, start time), written before anything else: "
                    "the version is findable from disk before it can take traffic")
    ap.add_argument("--exit-with-parent", action="store_true",
                    help="stop when the process that started this one exits (embedded use: the Scorer)")
    ap.add_argument("--exit-without", metavar="PATH",
                    help="stop once PATH no longer exists (a simulated cloud's warm scorer: its state file is gone)")
    args = ap.parse_args(argv)
    if args.pid_file:
        register(args.pid_file)

    private = listen(args.private_port)
    try:
        public_sock = take_public_socket(args.public_port, args.handoff_from or args.handoff, args.host)
    except OSError as e:
        status: dict[str, Any] = {"state": "failed", "pid": os.getpid(), "error": f"cannot listen on port {args.public_port}: {e}"}
        with open(args.status_file + ".error", "w") as f:
            f.write(status["error"])
        write_status(args.status_file, status)
        return 4
    private_port = private.getsockname()[1]
    ready_r, ready_w = os.pipe()
    children: dict[int, int] = {}  # pid -> slot
    public = args.public_now
    stopping = False
    supervisor = os.getpid()

    def spawn(slot: int) -> int:
        """Slots 0..workers-1 serve HTTP; the rest (near-real-time) score the queue."""
        # Signals wait while we fork: a SIGTERM landing in the child before it resets the handlers
        # would run the supervisor's on_term there (and be lost: the worker would never stop),
        # and one landing in the parent before the child is in ``children`` would miss it.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1})
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the supervisor turns it into SIGTERM
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the worker installs its handler
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            die_with_parent(supervisor)  # a worker never serves unsupervised (nor holds the port)
            os.close(ready_r)
            code = 1
            try:
                if slot < args.workers:
                    code = worker(args, private, public_sock, ready_w, public)
                else:
                    code = queue_worker(args, ready_w)
            except BaseException:  # os._exit skips the interpreter's report: print it, or it is lost
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = slot
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return pid

    def on_usr1(*_: object) -> None:
        nonlocal public
        public = True
        for pid in list(children):
            os.kill(pid, signal.SIGUSR1)

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    status = {"state": "starting", "pid": os.getpid(), "private_port": private_port,
              "public_port": public_sock.getsockname()[1], "public": False, "workers": [], "version": args.version}
    write_status(args.status_file, status)
    for slot in range(args.workers + args.queue_workers):
        spawn(slot)

    ready = published = 0
    os.set_blocking(ready_r, False)
    owner = os.getppid()
    while children:
        if args.exit_with_parent and not stopping and os.getppid() != owner:
            print("the process that started this server exited; stopping", file=sys.stderr, flush=True)
            on_term()
        if args.exit_without and not stopping and not os.path.exists(args.exit_without):
            print(f"{args.exit_without} is gone; stopping", file=sys.stderr, flush=True)
            on_term()
        try:
            data = os.read(ready_r, 64)
        except BlockingIOError:
            data = b""
        ready += data.count(b"r")
        published += data.count(b"p")
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            slot = children.pop(pid)
            exit_code = os.waitstatus_to_exitcode(code)
            if status["state"] == "starting" or exit_code == 3:
                # init() failed: this version cannot serve; stop the others and say why.
                on_term()
                for other in list(children):
                    os.waitpid(other, 0)
                status.update(state="failed", exit_code=exit_code)
                write_status(args.status_file, status)
                return 3
            if not stopping:  # a worker died while serving: replace it (it runs init() again)
                print(f"worker {pid} exited with {exit_code}; restarting", file=sys.stderr, flush=True)
                ready -= 1
                if public and slot < args.workers:
                    published -= 1
                spawn(slot)
        changed = False
        if status["state"] == "starting" and ready >= args.workers + args.queue_workers:
            status["state"] = "ready"
            changed = True
        if not status["public"] and public and published >= args.workers:
            status["public"] = True
            changed = True
            if args.handoff:
                serve_handoff(args.handoff, public_sock)
        if changed or sorted(status["workers"]) != sorted(children):
            status["workers"] = sorted(children)
            write_status(args.status_file, status)
        time.sleep(0.02)
    status.update(state="stopped", workers=[])
    write_status(args.status_file, status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
