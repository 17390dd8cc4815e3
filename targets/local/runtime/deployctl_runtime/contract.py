"""The Azure ML scoring contract, as azureml-inference-server-http implements it.

- ``init()`` runs once per worker process, before any request; ``AZUREML_MODEL_DIR`` points at
  the model folder.
- ``run(raw_data)``: the request body as a string (the body is not parsed), unless ``run`` is
  decorated with inference-schema's ``@input_schema``: then the JSON body's keys are passed as
  keyword arguments (``{"data": ...}`` -> ``run(data=...)``), which the decorator deserialises.
- A ``request_headers`` parameter, when declared, receives the request headers.
- The return value is sent back as JSON (a string return value becomes a JSON string).
- Batch: ``run(mini_batch)`` with a list of file paths, returning a list or a DataFrame.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Any


class ScriptError(Exception):
    """The user's script could not be loaded or its init() failed; ``tail`` is for the user."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


class BadRequest(Exception):
    """The request does not fit run()'s signature (HTTP 400)."""


_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))


def traceback_tail(exc: BaseException, lines: int = 12) -> str:
    """The last lines of the traceback, without this runtime's own frames: the user's script
    and the libraries it called are what the user can act on."""
    tb = traceback.TracebackException.from_exception(exc)
    tb.stack = traceback.StackSummary.from_list(
        [f for f in tb.stack if not os.path.abspath(f.filename).startswith(_RUNTIME_DIR + os.sep)])
    text = "".join(tb.format())
    return "\n".join(text.rstrip().splitlines()[-lines:])


LOG_FORMAT = "%(asctime)s %(levelname).1s [%(process)d] %(name)s - %(message)s"  # azmlinfsrv's


def configure_logging(code_dir: str) -> None:
    """Make the scoring script's ``logging`` calls reach the deployment's log (stderr).

    A ``logging.json`` in the code folder is applied as azmlinfsrv applies it (``dictConfig``).
    Otherwise the root logger writes INFO and above in azmlinfsrv's format.  (azmlinfsrv itself
    leaves the root logger at WARNING, so a script's ``logging.info`` is lost there: a local
    deployment shows it, as the scoring script's author expects.)"""
    import logging

    config = os.path.join(code_dir, "logging.json")
    if os.path.isfile(config):
        import logging.config

        try:
            with open(config, encoding="utf-8") as f:
                logging.config.dictConfig(json.load(f))
        except (OSError, ValueError, TypeError, AttributeError, ImportError) as e:
            raise ScriptError(f"{config} is not a valid logging configuration: {e}") from e
        return
    root = logging.getLogger()
    if root.handlers:  # configured already (this process, or a library at import)
        return
    formatter = logging.Formatter(LOG_FORMAT)
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _is_schema_decorated(fn: Any) -> bool:
    try:
        from inference_schema.schema_util import is_schema_decorated
    except Exception:  # inference-schema not installed: nothing can be decorated with it
        return False
    try:
        return bool(is_schema_decorated(fn))
    except Exception:
        return False


class UserScript:
    def __init__(self, code_dir: str, entry: str) -> None:
        self.code_dir = str(Path(code_dir).resolve())
        self.entry = entry
        self.module: Any = None
        self.run_fn: Any = None
        self.schema_decorated = False
        self.wants_headers = False
        self.params: list[inspect.Parameter] = []
        self.reporter = ModuleReporter(os.environ.get("DEPLOYCTL_REPORT_MODULES"))

    def load(self) -> None:
        """Import score.py (its folder first on sys.path, like Azure ML) and check the contract."""
        self.reporter.start()  # until init() returns: score.py's imports and the model's
        try:
            self._load()
        except BaseException:
            self.reporter.stop(final=False)
            raise

    def _load(self) -> None:
        configure_logging(self.code_dir)
        path = os.path.join(self.code_dir, self.entry)
        if self.code_dir not in sys.path:
            sys.path.insert(0, self.code_dir)
        try:
            spec = importlib.util.spec_from_file_location("entry_module", path)
            if spec is None or spec.loader is None:
                raise ScriptError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules["entry_module"] = module
            spec.loader.exec_module(module)
        except ScriptError:
            raise
        except BaseException as e:
            raise ScriptError(f"importing {self.entry} failed: {type(e).__name__}: {e}", traceback_tail(e)) from e
        for name in ("init", "run"):
            if not callable(getattr(module, name, None)):
                raise ScriptError(f"{self.entry} does not define {name}()")
        self.module = module
        driver = getattr(module, "driver_module", None)  # Azure ML's generated proxy scripts
        self.run_fn = driver.run if driver is not None and hasattr(driver, "run") else module.run
        params = list(inspect.signature(self.run_fn).parameters.values())
        self.wants_headers = any(p.name == "request_headers" for p in params)
        self.params = [p for p in params if p.name != "request_headers"]
        if not self.params:
            raise ScriptError("run() needs to accept an argument for input data")
        self.schema_decorated = _is_schema_decorated(self.run_fn)

    def init(self) -> None:
        try:
            self.module.init()
        except BaseException as e:
            self.reporter.stop(final=False)
            raise ScriptError(f"init() failed: {type(e).__name__}: {e}", traceback_tail(e)) from e
        self.reporter.stop()

    def run_online(self, body: bytes, headers: dict[str, str] | None = None) -> Any:
        """Call run() for one request; raises BadRequest, or whatever run() raises."""
        if self.schema_decorated:
            try:
                payload = json.loads(body or b"null")
            except ValueError as e:
                raise BadRequest(f"POST body could not be decoded as JSON: {e}") from None
            if not isinstance(payload, dict):
                raise BadRequest("POST body should be a JSON dictionary.")
            kwargs: dict[str, Any] = {}
            for p in self.params:
                value = payload.get(p.name, p.default)
                if value is inspect.Parameter.empty:
                    raise BadRequest(f"A value is not provided for the {p.name!r} parameter.")
                kwargs[p.name] = value
        else:
            kwargs = {self.params[0].name: body.decode("utf-8", errors="replace")}
        if self.wants_headers:
            kwargs["request_headers"] = dict(headers or {})
        return self.run_fn(**kwargs)

    def run_batch(self, files: list[str]) -> list[str]:
        """Call run(mini_batch); return the rows to append (Azure ML's append_row output)."""
        result = self.run_fn(files)
        return rows_of(result)

    def swagger(self, version: str = "2") -> dict[str, Any] | None:
        """The API document, as azmlinfsrv serves it: the user's own file from the code folder
        (``swagger.json`` or ``swagger2.json`` for version 2, ``swagger3.json`` for 3) when there
        is one, else one generated with inference-schema's input and output schemas when run()
        is decorated, or open objects when it is not.  None for a version other than 2 or 3."""
        major = {"2": "2", "2.0": "2", "3": "3", "3.0": "3"}.get(version)
        if major is None:
            return None
        for name in (("swagger.json", "swagger2.json") if major == "2" else ("swagger3.json",)):
            try:
                with open(os.path.join(self.code_dir, name), encoding="utf-8") as f:
                    doc: dict[str, Any] = json.load(f)
                return doc
            except (OSError, ValueError):
                continue
        schema_in: Any = {"type": "object", "example": {}}
        schema_out: Any = {"type": "object", "example": {}}
        if self.schema_decorated:
            try:
                from inference_schema.schema_util import get_input_schema, get_output_schema

                schema_in, schema_out = get_input_schema(self.run_fn), get_output_schema(self.run_fn)
            except Exception:  # noqa: BLE001 - the open schemas then, as for an undecorated run()
                pass
        return _swagger_document(major, schema_in, schema_out)


def _swagger_document(major: str, schema_in: Any, schema_out: Any) -> dict[str, Any]:
    """Routes and schemas of the scoring API in Swagger 2.0 or OpenAPI 3.0 (what azmlinfsrv's
    templates describe: ``GET /`` health, ``POST /score`` with Bearer auth)."""
    info = {"title": "ML service", "description": "API specification for the Azure Machine Learning service ML service",
            "version": "1.0"}
    error = {"type": "object", "properties": {"message": {"type": "string"}}}
    if major == "2":
        return {
            "swagger": "2.0", "info": info, "schemes": ["https"], "consumes": ["application/json"],
            "produces": ["application/json"],
            "securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header",
                                               "description": "For example: Bearer abc123"}},
            "paths": {
                "/": {"get": {"operationId": "ServiceHealthCheck", "responses": {
                    "200": {"description": "Healthy", "schema": {"type": "string"}}}}},
                "/swagger.json": {"get": {"operationId": "GetSwaggerSpec", "parameters": [
                    {"name": "version", "in": "query", "required": False, "type": "integer", "enum": [2, 3]}],
                    "responses": {"200": {"description": "The Swagger specification.", "schema": {"type": "string"}}}}},
                "/score": {"post": {
                    "operationId": "RunMLService", "security": [{"Bearer": []}],
                    "parameters": [{"name": "serviceInputPayload", "in": "body", "required": True,
                                    "schema": {"$ref": "#/definitions/ServiceInput"}}],
                    "responses": {"200": {"description": "The prediction", "schema": {"$ref": "#/definitions/ServiceOutput"}},
                                  "default": {"description": "An error", "schema": {"$ref": "#/definitions/ErrorResponse"}}}}},
            },
            "definitions": {"ServiceInput": schema_in, "ServiceOutput": schema_out, "ErrorResponse": error},
        }
    return {
        "openapi": "3.0.1", "info": info,
        "components": {
            "securitySchemes": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}},
            "schemas": {"ServiceInput": schema_in, "ServiceOutput": schema_out, "ErrorResponse": error}},
        "paths": {
            "/": {"get": {"operationId": "ServiceHealthCheck", "responses": {
                "200": {"description": "Healthy", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/swagger.json": {"get": {"operationId": "GetSwaggerSpec", "parameters": [
                {"name": "version", "in": "query", "required": False, "schema": {"type": "integer", "enum": [2, 3]}}],
                "responses": {"200": {"description": "The Swagger specification.",
                                      "content": {"application/json": {"schema": {"type": "string"}}}}}}},
            "/score": {"post": {
                "operationId": "RunMLService", "security": [{"Bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ServiceInput"}}}},
                "responses": {"200": {"description": "The prediction", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ServiceOutput"}}}},
                              "default": {"description": "An error", "content": {"application/json": {
                                  "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}}}},
        },
    }


_MODULE_DICT = types.ModuleType.__getattribute__


def installed_modules() -> list[str]:
    """The installed (site-packages) modules imported so far, in the order their imports ended
    (sys.modules' order: a package after the submodules its ``__init__`` imports).  The user's
    own modules are never listed: they change with every version.

    A module still being imported is left out until it is done (and its bytecode written), and
    so is any module inside a package still being imported: the zygote importing it would run
    the rest of the package's ``__init__`` too, compiling from source what the first version has
    not reached yet, twice the work, on the core the background compile needs."""
    names = []
    initializing: set[str] = set()
    for name, mod in list(sys.modules.items()):  # a copy: another thread may be importing
        # By type, not isinstance (which asks the object's __class__): sys.modules also holds
        # objects posing as modules (cffi's Lib).  The module's own __dict__ is read past any
        # __getattr__ a lazy module class defines: that could import from this thread.
        if not issubclass(type(mod), types.ModuleType):
            continue
        try:
            attrs = _MODULE_DICT(mod, "__dict__")
            if getattr(attrs.get("__spec__"), "_initializing", False):
                initializing.add(name)
                continue
            if "site-packages" not in (attrs.get("__file__") or ""):
                continue
        except Exception:  # noqa: BLE001 - an odd module is left out, never fatal
            continue
        names.append(name)
    if not initializing:
        return names
    return [n for n in names if not any(p in initializing for p in _packages_of(n))]


def _packages_of(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class ModuleReporter:
    """Writes :func:`installed_modules` to ``path`` for the zygote (see
    :mod:`deployctl_runtime.zygote`): every 50 ms while the script loads and initialises, so the
    zygote imports the same packages alongside the first version rather than after it, and once
    more when init() has returned.  Only an optimisation: write errors are ignored."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written = -1

    def start(self) -> None:
        if self.path and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="module-reporter", daemon=True)
            self._thread.start()

    def stop(self, final: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if final and self.path:
            self._write()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self._write()

    def _write(self) -> None:
        try:
            names = installed_modules()
            if len(names) == self._written or self.path is None:
                return
            write_json_atomic(self.path, names)
            self._written = len(names)
        except Exception:  # noqa: BLE001 - an optimisation must never take the version down
            pass


def rows_of(result: Any) -> list[str]:
    """Rows for the output file: a DataFrame's rows as CSV lines, a list's items as lines."""
    if hasattr(result, "to_csv"):
        text = result.to_csv(index=False, header=False)
        return [line for line in text.splitlines() if line]
    if isinstance(result, (list, tuple)):
        return [item if isinstance(item, str) else json.dumps(item, default=str) for item in result]
    raise TypeError(f"run(mini_batch) must return a list or a DataFrame, not {type(result).__name__}")


def to_json_bytes(value: Any) -> bytes:
    """run()'s return value as the response body (numpy values included)."""
    return json.dumps(value, default=_default).encode()


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def write_json_atomic(path: str, doc: Any) -> None:
    """Write JSON so readers never see half a file (temporary file, then rename)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
