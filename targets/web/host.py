"""A stand-in for the Azure Functions host, for the generated app (no Core Tools, no .NET).

It indexes a package's ``function_app.py`` through azure-functions' own objects
(``app.get_functions()``, each function's bindings) and calls the user functions with the
library's ``HttpRequest`` / ``QueueMessage``, as the Python worker does:

- HTTP triggers at ``/api/<route>``; ``authLevel: function`` needs a key (``?code=`` or
  ``x-functions-key``), else 401.
- Queue triggers, with the Storage extension's rules: base64 messages, ``%SETTING%`` names from
  the app settings, binding data from a JSON message's properties (``{id}``), blob input/output
  and queue output bindings, a failed invocation made visible again, and a message dequeued
  ``maxDequeueCount`` times (host.json) moved to ``<queue>-poison``.

Used by the Azure simulator (which runs deployed apps with it, in a process of their own:
``python -m targets.web.host``) and by the tests (against Azurite).  Storage is reached through
azure-storage-queue / -blob clients, so it is whatever those clients point at.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from targets.web.durable import RPC, TERMINAL, WEBHOOK, DurableExtension, InstanceStore, hub_name

log = logging.getLogger("deployctl.functions.host")
SETTING = re.compile(r"%([A-Za-z0-9_]+)%")
BINDING_EXPR = re.compile(r"\{([A-Za-z0-9_]+)\}")


class BindingError(Exception):
    """A binding expression the message cannot fill (the host fails the invocation)."""


def resolve(template: str, settings: Mapping[str, str], data: Mapping[str, Any] | None = None) -> str:
    """``%NAME%`` from the app settings, ``{prop}`` from the trigger's binding data."""
    out = SETTING.sub(lambda m: settings[m.group(1)] if m.group(1) in settings else m.group(0), template)
    if SETTING.search(out):
        raise BindingError(f"app setting {SETTING.search(out).group(1)!r} is not set")  # type: ignore[union-attr]

    def prop(m: re.Match[str]) -> str:
        if data is None:
            raise BindingError(f"the message is not a JSON object: binding expression {{{m.group(1)}}} has no value")
        if m.group(1) not in data:
            raise BindingError(f"binding expression {{{m.group(1)}}} has no value in the trigger data")
        return str(data[m.group(1)])

    return BINDING_EXPR.sub(prop, out)


class Storage:
    """The queue and blob data planes the bindings use (azure-storage clients)."""

    def __init__(self, queues: Any, blobs: Any) -> None:
        self.queues, self.blobs = queues, blobs

    @classmethod
    def from_connection_string(cls, conn: str, **kw: Any) -> Storage:
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueServiceClient

        return cls(QueueServiceClient.from_connection_string(conn, **kw),
                   BlobServiceClient.from_connection_string(conn, **kw))

    def queue(self, name: str) -> Any:
        from azure.core.exceptions import ResourceExistsError

        q = self.queues.get_queue_client(name)
        try:
            q.create_queue()
        except ResourceExistsError:
            pass
        return q

    def get_blob(self, path: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        container, _, name = path.partition("/")
        try:
            return str(self.blobs.get_blob_client(container, name).download_blob().readall().decode())
        except ResourceNotFoundError:
            return None

    def put_blob(self, path: str, data: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        container, _, name = path.partition("/")
        try:
            self.blobs.create_container(container)
        except ResourceExistsError:
            pass
        self.blobs.get_blob_client(container, name).upload_blob(data.encode(), overwrite=True)

    def send(self, queue: str, text: str) -> None:
        self.queue(queue).send_message(base64.b64encode(text.encode()).decode())


def queue_message(body: bytes, dequeue_count: int, **kw: Any) -> Any:
    """The QueueMessage the worker passes (azure.functions.queue's, which carries the dequeue count)."""
    from azure.functions.queue import QueueMessage

    return QueueMessage(body=body, dequeue_count=dequeue_count, **kw)


class Out:
    """An output binding's value (the worker's ``func.Out``)."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


class FunctionHost:
    def __init__(self, package: Path, settings: Mapping[str, str] | None = None, keys: tuple[str, ...] = (),
                 *, storage: Storage | None = None, system_keys: Mapping[str, str] | None = None) -> None:
        import azure.functions as func

        self.func = func
        self.package = Path(package)
        self.settings = dict(settings or {})
        self.keys = tuple(keys)
        host_json = json.loads((self.package / "host.json").read_text())
        ext = host_json.get("extensions", {})
        self.route_prefix = ext.get("http", {}).get("routePrefix", "api").strip("/")
        self.max_dequeue = int(ext.get("queues", {}).get("maxDequeueCount", 5))
        os.environ.update(self.settings)  # app settings are the worker's environment variables
        for p in (self.package / ".python_packages" / "lib" / "site-packages", self.package):
            if p.is_dir() and str(p) not in sys.path:
                sys.path.insert(0, str(p))
        t0 = time.perf_counter()
        spec = importlib.util.spec_from_file_location("function_app", self.package / "function_app.py")
        assert spec is not None and spec.loader is not None
        self.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)
        self.load_seconds = time.perf_counter() - t0
        self.functions = list(self.module.app.get_functions())
        self.system_keys = dict(system_keys or {})
        self.rpc_base = "http://127.0.0.1"  # where the worker reaches the host (serve() sets the port)
        self.durable: DurableExtension | None = None
        if any(self._trigger(fn)["type"] == "orchestrationTrigger" for fn in self.functions):
            hub = hub_name(self.settings, host_json)
            self.durable = DurableExtension(self.functions, self._trigger, self.call, InstanceStore(storage, hub), hub)
        self.lock = threading.Lock()  # one invocation at a time, as one Python worker thread
        self._loop: asyncio.AbstractEventLoop | None = None  # async functions: one loop, as the worker has
        log.info("Worker process started and initialized: function_app.py loaded in %.3fs", self.load_seconds)
        log.info("Found the following functions: %s",
                 ", ".join(f"Host.Functions.{fn.get_function_name()}" for fn in self.functions))
        for fn in self.functions:
            if self.disabled(fn):
                log.info("Function 'Functions.%s' is disabled (AzureWebJobs.%s.Disabled)", fn.get_function_name(),
                         fn.get_function_name())

    def call(self, fn: Any, reason: str, *args: Any, **kwargs: Any) -> Any:
        """Invoke a user function as the worker does (an async one on the worker's event loop),
        logging the host's 'Executing' / 'Executed' lines with the invocation id and duration."""
        name, iid = f"Functions.{fn.get_function_name()}", str(uuid.uuid4())
        log.info("Executing '%s' (Reason='%s', Id=%s)", name, reason, iid)
        t0 = time.perf_counter()
        try:
            if asyncio.iscoroutinefunction(fn.get_user_function()):
                out = asyncio.run_coroutine_threadsafe(fn.get_user_function()(*args, **kwargs), self.loop()).result()
            else:
                with self.lock:
                    out = fn.get_user_function()(*args, **kwargs)
        except Exception as e:
            log.error("Executed '%s' (Failed, Id=%s, Duration=%.0fms): %s: %s", name, iid,
                      (time.perf_counter() - t0) * 1000, type(e).__name__, e)
            raise
        log.info("Executed '%s' (Succeeded, Id=%s, Duration=%.0fms)", name, iid, (time.perf_counter() - t0) * 1000)
        return out

    def loop(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, daemon=True, name="worker-loop").start()
            return self._loop

    def disabled(self, fn: Any) -> bool:
        """``AzureWebJobs.<function>.Disabled`` set to true or 1: the host does not run the function
        (a queue trigger does not poll, an HTTP route answers 404)."""
        flag = self.settings.get(f"AzureWebJobs.{fn.get_function_name()}.Disabled", "")
        return flag.strip().lower() in ("true", "1")

    def _trigger(self, fn: Any) -> dict[str, Any]:
        return next(b.get_dict_repr() for b in fn.get_bindings() if b.type.endswith("Trigger"))

    # -- HTTP --------------------------------------------------------------------------------------
    def http(self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
             params: Mapping[str, str] | None = None) -> HttpAnswer:
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        params = dict(params or {})
        route = path.strip("/")
        public = f"{headers.get('x-forwarded-proto', 'http')}://{headers.get('host', 'localhost')}"
        if self.durable is not None and (route.startswith((WEBHOOK + "/", RPC + "/"))):
            return self._durable_api(method.upper(), route, body, params, headers, public)
        prefix = self.route_prefix + "/" if self.route_prefix else ""
        for fn in self.functions:
            t = self._trigger(fn)
            if t["type"] != "httpTrigger" or prefix + t.get("route", fn.get_function_name()) != route:
                continue
            if self.disabled(fn):
                return HttpAnswer(404, {}, b"")
            methods = [str(getattr(m, "value", m)).upper() for m in t.get("methods") or []]
            if methods and method.upper() not in methods:
                return HttpAnswer(405, {}, b"")
            level = str(getattr(t.get("authLevel"), "value", t.get("authLevel") or "function")).lower()
            given = params.pop("code", None) or headers.get("x-functions-key")
            if level != "anonymous" and given not in self.keys:
                return HttpAnswer(401, {}, b"")
            req = self.func.HttpRequest(method.upper(), f"{public}/{route}", headers=headers,
                                        params=params, route_params={}, body=body)
            inputs: dict[str, Any] = {t["name"]: req}
            for b in fn.get_bindings():  # the starter's durable client: the extension's binding context
                d = b.get_dict_repr()
                if d["type"] == "durableClient" and self.durable is not None:
                    inputs[d["name"]] = self.durable.client_context(public, self.rpc_base, self._system_key())
            resp = self.call(fn, f"This function was programmatically called via the host APIs ({method.upper()} "
                             f"/{route})", **inputs)
            return HttpAnswer(resp.status_code, dict(resp.headers), resp.get_body())
        return HttpAnswer(404, {}, b"")

    def _system_key(self) -> str:
        return self.system_keys.get("durabletask_extension") or (self.keys[-1] if self.keys else "")

    def _durable_api(self, method: str, route: str, body: bytes, params: dict[str, str], headers: dict[str, str],
                     public: str) -> HttpAnswer:
        """The Durable extension's HTTP API: the public webhooks (system or master key) and the
        worker's RPC endpoint (``rpcBaseUrl``, local to the worker: no key)."""
        assert self.durable is not None
        if route.startswith(WEBHOOK + "/"):
            given = params.get("code") or headers.get("x-functions-key")
            if not given or given not in (self._system_key(), *self.keys[1:]):
                return HttpAnswer(401, {}, b"")
            rest = route[len(WEBHOOK) + 1:]
        else:
            rest = route[len(RPC) + 1:]
        parts = rest.split("/")
        if method == "POST" and parts[0] == "orchestrators" and len(parts) in (2, 3):
            status, doc = self.durable.start(parts[1], parts[2] if len(parts) == 3 else None, body)
            if status == 202 and route.startswith(WEBHOOK + "/"):  # the webhook answers the management URLs
                links = json.loads(self.durable.client_context(public, self.rpc_base, self._system_key()))
                doc = {k: v.replace("INSTANCEID", doc["id"]) for k, v in links["managementUrls"].items()}
            return _json_answer(status, doc)
        if method == "GET" and parts[0] == "instances" and len(parts) == 2:
            instance = self.durable.status(parts[1])
            if instance is None:
                return _json_answer(404, {})
            if instance["runtimeStatus"] in TERMINAL:
                return _json_answer(200, instance)
            url = f"{public}/{route}" + (f"?{urlencode(params)}" if params else "")
            return _json_answer(202, instance, {"Location": url, "Retry-After": "10"})
        return HttpAnswer(404, {}, b"")

    # -- queues ------------------------------------------------------------------------------------
    def queue_functions(self) -> list[tuple[Any, str]]:
        return [(fn, resolve(self._trigger(fn)["queueName"], self.settings)) for fn in self.functions
                if self._trigger(fn)["type"] == "queueTrigger" and not self.disabled(fn)]

    def poll_once(self, storage: Storage, visibility_timeout: float = 30) -> int:
        """Receive and process at most one message per queue trigger; how many were processed."""
        done = 0
        for fn, qname in self.queue_functions():
            q = storage.queue(qname)
            msg = next(iter(q.receive_messages(max_messages=1, visibility_timeout=int(visibility_timeout))), None)
            if msg is None:
                continue
            done += 1
            ok = self._invoke_queue(fn, storage, msg)
            if ok:
                q.delete_message(msg)
            elif msg.dequeue_count >= self.max_dequeue:
                log.error("message %s failed %d times: moved to %s-poison", msg.id, msg.dequeue_count, qname)
                storage.queue(f"{qname}-poison").send_message(msg.content)
                q.delete_message(msg)
            else:  # visible again at once (the queues extension's default visibilityTimeout is 0)
                q.update_message(msg, visibility_timeout=0)
        return done

    def _invoke_queue(self, fn: Any, storage: Storage, msg: Any) -> bool:
        try:
            body = base64.b64decode(msg.content, validate=True)
        except (binascii.Error, ValueError):
            log.error("message %s is not base64 (the queues extension's encoding)", msg.id)
            return False
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else None
        kwargs: dict[str, Any] = {}
        outs: list[tuple[dict[str, Any], Out]] = []
        try:
            for b in fn.get_bindings():
                d = b.get_dict_repr()
                if d["type"] == "queueTrigger":
                    kwargs[d["name"]] = queue_message(body, msg.dequeue_count, id=msg.id, pop_receipt=msg.pop_receipt)
                elif d["type"] == "blob" and str(getattr(d["direction"], "name", d["direction"])) == "IN":
                    kwargs[d["name"]] = storage.get_blob(resolve(d["path"], self.settings, data))
                elif d["type"] in ("blob", "queue"):
                    out = Out()
                    kwargs[d["name"]] = out
                    outs.append((d, out))
            self.call(fn, f"New queue message detected on '{self._trigger(fn)['queueName']}' (id {msg.id}, "
                      f"delivery {msg.dequeue_count})", **kwargs)
        except BindingError as e:
            log.error("Function %s cannot bind message %s (delivery %d): %s", fn.get_function_name(), msg.id,
                      msg.dequeue_count, e)
            return False
        except Exception:  # noqa: BLE001 - logged by call(); the message is made visible again
            return False
        for d, out in outs:  # outputs are written only when the function succeeded, as the host does
            if out.value is None:
                continue
            if d["type"] == "blob":
                storage.put_blob(resolve(d["path"], self.settings, data), str(out.value))
            else:
                storage.send(resolve(d["queueName"], self.settings, data), str(out.value))
        return True


def _json_answer(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> HttpAnswer:
    return HttpAnswer(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(doc).encode())


def serve(host: FunctionHost, port: int, storage: Storage | None, ready_file: Path | None) -> None:
    """Answer HTTP on 127.0.0.1:port and poll the queues until killed."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qsl, urlsplit

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            url = urlsplit(self.path)
            try:
                ans = host.http(self.command, url.path, body, dict(self.headers.items()), dict(parse_qsl(url.query)))
            except Exception as e:  # noqa: BLE001 - the host answers 500 and keeps serving
                ans = HttpAnswer(500, {}, f"host error: {type(e).__name__}: {e}".encode())
            self.send_response(ans.status)
            for k, v in ans.headers.items():
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(ans.body)))
            self.end_headers()
            self.wfile.write(ans.body)

        do_GET = do_POST = do_PUT = do_DELETE = _any

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    host.rpc_base = f"http://127.0.0.1:{httpd.server_address[1]}"
    if host.durable is not None:  # what a stopped host process left unfinished
        threading.Thread(target=host.durable.resume_unfinished, daemon=True).start()
    if storage is not None and host.queue_functions():
        def poll() -> None:
            while True:
                try:
                    if not host.poll_once(storage):
                        time.sleep(0.1)
                except Exception as e:  # noqa: BLE001 - storage hiccups: try again
                    log.warning("queue poll failed: %s", e)
                    time.sleep(1)

        threading.Thread(target=poll, daemon=True).start()
    if ready_file:  # atomically: the starter polls for the file and reads it at once
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"port": httpd.server_address[1], "pid": os.getpid(),
                                   "load_seconds": host.load_seconds}))
        os.replace(tmp, ready_file)
    httpd.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m targets.web.host")
    ap.add_argument("--package", required=True, type=Path)
    ap.add_argument("--config", required=True, type=Path, help="JSON: {settings: {...}, keys: [...]}")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready-file", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the host's storage calls are not the app's log
    cfg = json.loads(args.config.read_text())
    conn = cfg.get("settings", {}).get("AzureWebJobsStorage", "")
    storage = Storage.from_connection_string(conn) if "AccountKey=" in conn or "UseDevelopmentStorage" in conn else None
    host = FunctionHost(args.package, cfg.get("settings", {}), tuple(cfg.get("keys", ())), storage=storage,
                        system_keys=cfg.get("system_keys", {}))
    serve(host, args.port, storage, args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
