"""The function app deployctl generates around an unmodified Azure ML ``score.py`` (Python v2
programming model).  Copied as-is into every package, beside ``deployctl_function.json`` (its
settings), ``deployctl_runtime/`` (the scoring contract, shared with the local target), ``code/``
(the user's scoring code) and ``model/``.

- ``init()`` runs once per worker, when the worker loads this module: heavy imports and the model
  load happen there, never per call.  A failing init() is reported by every call, not hidden.
- real-time: ``POST /api/score`` (function key), Azure ML's request and response shapes.
- near-real-time: a Storage queue trigger on ``%DEPLOYCTL_QUEUE%``; a message is
  ``{"id": <request id>, "body": <request>}``.  The result goes to the blob
  ``%DEPLOYCTL_RESULTS%/<id>.json``; a request whose result exists is not scored again
  (idempotent under at-least-once delivery).  A failing run() is retried by redelivery; on the
  ``max_attempts``-th delivery the message goes to ``%DEPLOYCTL_QUEUE%-poison`` with the error.
- near-real-time, ``mode: durable`` (Durable Functions, the async HTTP pattern):
  ``POST /api/requests`` (function key; ``?id=`` makes it idempotent) starts an orchestration and
  answers 202 with the status URL in ``Location`` and ``Retry-After``; the orchestrator calls the
  scoring activity with ``max_attempts`` attempts.
- ``GET /api/health`` (anonymous): whether init() succeeded and how long loading took.
"""

from __future__ import annotations

import json
import logging
import os
import time

import azure.functions as func
from deployctl_runtime.contract import BadRequest, ScriptError, UserScript, to_json_bytes, traceback_tail

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "deployctl_function.json"), encoding="utf-8") as _f:
    CONFIG = json.load(_f)
os.environ.setdefault("AZUREML_MODEL_DIR", os.path.join(HERE, "model"))
for _k, _v in CONFIG.get("variables", {}).items():
    os.environ.setdefault(_k, _v)
MAX_ATTEMPTS = int(CONFIG.get("max_attempts", 5))
MODE = CONFIG.get("mode", "queue")
log = logging.getLogger("deployctl")


def _load() -> tuple[UserScript | None, str | None, float]:
    """score.py imported and init() run, once per worker; (script, error, seconds)."""
    t0 = time.perf_counter()
    script = UserScript(os.path.join(HERE, "code"), CONFIG["entry"])
    try:
        script.load()
        script.init()
    except ScriptError as e:
        log.error("loading %s failed: %s\n%s", CONFIG["entry"], e, e.tail)
        return None, f"{e}\n{e.tail}".strip(), time.perf_counter() - t0
    log.info("%s: init() done in %.3fs", CONFIG["entry"], time.perf_counter() - t0)
    return script, None, time.perf_counter() - t0


SCRIPT, LOAD_ERROR, LOAD_SECONDS = _load()
if MODE == "durable":
    import azure.durable_functions as df

    app = df.DFApp()
else:
    app = func.FunctionApp()


class NotSerialisable(Exception):
    """run() returned something JSON cannot represent."""


def score(body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """run() for one request, as JSON bytes.  Raises ScriptError when init() failed, BadRequest,
    NotSerialisable, or whatever run() raises."""
    if SCRIPT is None:
        raise ScriptError(f"the scoring script did not load: {LOAD_ERROR}")
    out = SCRIPT.run_online(body, headers)
    try:
        return to_json_bytes(out)
    except (TypeError, ValueError) as e:
        raise NotSerialisable(f"run() returned a value that is not JSON-serialisable: {e}") from None


def _json(status: int, doc: object) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(doc), status_code=status, mimetype="application/json")


@app.route(route="score", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def score_http(req: func.HttpRequest) -> func.HttpResponse:
    t0 = time.perf_counter()
    try:
        body = score(req.get_body(), dict(req.headers))
    except BadRequest as e:
        return _json(400, {"message": str(e)})
    except ScriptError as e:
        return _json(503, {"message": str(e)})
    except NotSerialisable as e:
        log.error("%s", e)
        return _json(500, {"message": str(e)})
    except Exception as e:
        log.error("run() failed:\n%s", traceback_tail(e))
        return _json(500, {"message": f"run() failed: {type(e).__name__}: {e}"})
    ms = f"{(time.perf_counter() - t0) * 1000:.1f}"
    return func.HttpResponse(body, status_code=200, mimetype="application/json",
                             headers={"x-ms-run-fn-exec-ms": ms})


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    doc = {"ready": SCRIPT is not None, "load_seconds": round(LOAD_SECONDS, 3), "error": LOAD_ERROR,
           "pid": os.getpid()}
    return _json(200 if SCRIPT is not None else 503, doc)


if MODE == "durable":
    @app.route(route="requests", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
    @app.durable_client_input(client_name="client")
    async def submit(req: func.HttpRequest, client) -> func.HttpResponse:  # noqa: ANN001 - the library's client
        """Start scoring one request; 202 + status URL.  The same ``?id=`` twice starts it once."""
        try:
            body = req.get_body().decode()
            json.loads(body)
        except ValueError as e:
            return _json(400, {"message": f"the request is not JSON: {e}"})
        rid = req.params.get("id")
        if rid:
            status = await client.get_status(rid)
            if status and getattr(status, "runtime_status", None) is not None:
                return client.create_check_status_response(req, rid)
        instance_id = await client.start_new("score_orchestration", rid, body)
        return client.create_check_status_response(req, instance_id)

    @app.orchestration_trigger(context_name="context")
    def score_orchestration(context):  # noqa: ANN001, ANN201 - the library's context; a generator
        retry = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=MAX_ATTEMPTS)
        result = yield context.call_activity_with_retry("score_activity", retry, context.get_input())
        return result

    @app.activity_trigger(input_name="body")
    def score_activity(body: str) -> object:
        """run() for one request; a failure raises, so the orchestrator retries then fails with it."""
        return json.loads(score(body.encode()))
elif MODE == "queue":  # real-time apps (mode "http") have no queue to poll
    @app.queue_trigger(arg_name="msg", queue_name="%DEPLOYCTL_QUEUE%", connection="AzureWebJobsStorage")
    @app.blob_input(arg_name="existing", path="%DEPLOYCTL_RESULTS%/{id}.json", connection="AzureWebJobsStorage")
    @app.blob_output(arg_name="result", path="%DEPLOYCTL_RESULTS%/{id}.json", connection="AzureWebJobsStorage")
    @app.queue_output(arg_name="poison", queue_name="%DEPLOYCTL_QUEUE%-poison", connection="AzureWebJobsStorage")
    def score_queue(msg: func.QueueMessage, existing: str | None, result: func.Out[str],
                    poison: func.Out[str]) -> None:
        request = parse_message(msg.get_body())  # not JSON: raises, the host keeps it on its poison queue
        rid = request["id"]
        if existing:
            log.info("request %s already has a result: not scored again", rid)
            return
        attempts = int(msg.dequeue_count or 1)
        try:
            out = score(json.dumps(request.get("body")).encode())
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            if attempts < MAX_ATTEMPTS:
                log.warning("request %s attempt %d of %d failed: %s", rid, attempts, MAX_ATTEMPTS, error)
                raise  # redelivered after the visibility timeout
            log.error("request %s failed %d times, moved to the poison queue: %s", rid, attempts, error)
            result.set(json.dumps({"request_id": rid, "state": "dead", "attempts": attempts, "error": error}))
            poison.set(json.dumps({"id": rid, "body": request.get("body"), "error": error, "attempts": attempts}))
            return
        result.set(json.dumps({"request_id": rid, "state": "done", "attempts": attempts,
                               "result": json.loads(out)}))


def parse_message(raw: bytes) -> dict:
    """A queue message as deployctl writes it; anything else is a clear error."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"queue message is not JSON ({e}); expected {{\"id\": ..., \"body\": ...}}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
        raise ValueError('queue message must be a JSON object {"id": "<request id>", "body": <request>}')
    return doc
