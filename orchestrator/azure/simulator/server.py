"""Optional: serve the simulator on http://127.0.0.1:<port> for clients that cannot take a
transport.  The original host goes in the path: ``http://127.0.0.1:<port>/<host>/<path>`` (or the
``X-Simulated-Host`` header), so one port answers every simulated service."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from orchestrator.azure.simulator.messages import Request


class _Handler(BaseHTTPRequestHandler):
    sim: Any = None

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("X-Simulated-Host")
        path = self.path
        if not host:
            host, _, rest = path.lstrip("/").partition("/")
            path = "/" + rest
        req = Request(self.command, f"https://{host}{path}", {k.lower(): v for k, v in self.headers.items()}, body)
        try:
            resp = self.sim.handle(req)
        except Exception as e:  # injected connection faults and unsupported requests: drop / 501
            self.send_response(501 if type(e).__name__ == "UnsupportedRequest" else 500)
            self.end_headers()
            self.wfile.write(str(e).encode())
            return
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _any

    def log_message(self, *args: Any) -> None:
        pass


class Server:
    def __init__(self, sim: Any, port: int) -> None:
        handler = type("Handler", (_Handler,), {"sim": sim})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(sim: Any, port: int = 0) -> Server:
    return Server(sim, port)
