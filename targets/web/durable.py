"""The part of the Durable Task extension the generated durable app uses, for the simulated
Functions host (:mod:`.host`): the async HTTP pattern run for real, no Core Tools, no .NET.

- The starter's ``durableClient`` binding gets the binding context the extension gives it
  (task hub, management URLs with the system key, ``rpcBaseUrl``), so azure-functions-durable's own
  ``DurableOrchestrationClient`` starts instances and reads their status over HTTP against this
  host, and ``create_check_status_response`` answers 202 with ``Location`` = the status URL and
  ``Retry-After``.
- Orchestrations are driven by replay, as the extension drives an out-of-process worker: the
  host builds the instance's history (``OrchestratorStarted``, ``ExecutionStarted`` with the
  input, ``TaskScheduled`` / ``TaskCompleted`` / ``TaskFailed``, retry ``TimerCreated`` /
  ``TimerFired``) and calls the app's orchestrator function (the library's ``Orchestrator``
  handle) with it; the actions it answers are carried out (an activity called through the host,
  retried per its ``RetryOptions``) and the history grows until the state says done (Completed,
  its output) or carries an error (Failed, the message).
- Instances are records in the app's storage (``AzureWebJobsStorage``; blobs
  ``<hub>-instances/<id>.json`` stand in for the extension's Instances and History tables), so a
  request started by one host process is finished by the next (a host that starts resumes the
  instances still Pending or Running: at-least-once, as on Azure); without storage, in memory.
- Status through the extension's HTTP API: ``GET /runtime/webhooks/durabletask/instances/<id>``
  (system key ``durabletask_extension`` or the master key) answers 202 + ``Location`` +
  ``Retry-After`` while Pending or Running, 200 with the output once Completed or Failed, 404 when
  the instance is unknown.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

log = logging.getLogger("deployctl.functions.durable")

WEBHOOK = "runtime/webhooks/durabletask"
RPC = "durabletask"
TERMINAL = ("Completed", "Failed", "Terminated")
# HistoryEventType (azure.durable_functions.models.history) and ActionType values on the wire
ORCHESTRATOR_STARTED, ORCHESTRATOR_COMPLETED, EXECUTION_STARTED = 12, 13, 0
TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED, TIMER_CREATED, TIMER_FIRED = 4, 5, 6, 10, 11
CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY = 0, 1
OUT_OF_PROC = "$OutOfProcData$:"  # how the library's executor appends its state to an orchestrator error


def _iso(t: datetime | None = None) -> str:
    return (t or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(kind: int, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {"EventType": kind, "EventId": event_id, "IsPlayed": False, "Timestamp": _iso(), **fields}


def hub_name(settings: dict[str, str], host_json: dict[str, Any]) -> str:
    """host.json's ``durableTask.hubName``, else the site's name (alphanumerics), as on Azure."""
    named = ((host_json.get("extensions") or {}).get("durableTask") or {}).get("hubName")
    return str(named or re.sub(r"[^A-Za-z0-9]", "", settings.get("WEBSITE_SITE_NAME", "")) or "TestHubName")


class InstanceStore:
    """Instance records (status, input, output, history): blobs of the app's storage, or memory."""

    def __init__(self, storage: Any, hub: str) -> None:
        self.storage, self.container = storage, f"{hub.lower()}-instances"
        self.memory: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def get(self, iid: str) -> dict[str, Any] | None:
        if self.storage is None:
            with self.lock:
                rec = self.memory.get(iid)
                return json.loads(json.dumps(rec)) if rec else None
        text = self.storage.get_blob(f"{self.container}/{iid}.json")
        return json.loads(text) if text else None

    def put(self, rec: dict[str, Any]) -> None:
        rec["lastUpdatedTime"] = _iso()
        if self.storage is None:
            with self.lock:
                self.memory[rec["instanceId"]] = json.loads(json.dumps(rec))
            return
        self.storage.put_blob(f"{self.container}/{rec['instanceId']}.json", json.dumps(rec))

    def unfinished(self) -> list[str]:
        if self.storage is None:
            with self.lock:
                return [k for k, r in self.memory.items() if r["runtimeStatus"] not in TERMINAL]
        from azure.core.exceptions import ResourceNotFoundError

        try:
            names = [b.name for b in self.storage.blobs.get_container_client(self.container).list_blobs()]
        except ResourceNotFoundError:
            return []
        out = []
        for name in names:
            rec = self.get(name.removesuffix(".json"))
            if rec and rec["runtimeStatus"] not in TERMINAL:
                out.append(rec["instanceId"])
        return out


class DurableExtension:
    """Instances of one app's task hub, driven on a worker thread of the host."""

    def __init__(self, functions: list[Any], trigger_of: Callable[[Any], dict[str, Any]],
                 call: Callable[..., Any], store: InstanceStore, hub: str,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.by_trigger = {(trigger_of(fn)["type"], self._name(fn, trigger_of(fn))): fn for fn in functions}
        self.call, self.store, self.hub, self.sleep = call, store, hub, sleep
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="durable")
        self.running: set[str] = set()
        self.lock = threading.Lock()

    @staticmethod
    def _name(fn: Any, trigger: dict[str, Any]) -> str:
        return str(trigger.get("orchestration") or trigger.get("activity") or fn.get_function_name())

    def has_orchestrations(self) -> bool:
        return any(kind == "orchestrationTrigger" for kind, _ in self.by_trigger)

    # -- what the starter's durableClient binding receives -------------------------------------------
    def client_context(self, public_base: str, rpc_base: str, system_key: str) -> str:
        query = f"taskHub={self.hub}&connection=Storage&code={system_key}"
        inst = f"{public_base}/{WEBHOOK}/instances/INSTANCEID"
        return json.dumps({
            "taskHubName": self.hub,
            "creationUrls": {"createNewInstancePostUri": f"{public_base}/{WEBHOOK}/orchestrators/{{functionName}}"
                                                         f"[/{{instanceId}}]?code={system_key}",
                             "createAndWaitOnNewInstancePostUri": f"{public_base}/{WEBHOOK}/orchestrators/"
                                                                  f"{{functionName}}[/{{instanceId}}]?timeout="
                                                                  f"{{timeoutInSeconds}}&pollingInterval="
                                                                  f"{{intervalInSeconds}}&code={system_key}"},
            "managementUrls": {"id": "INSTANCEID", "statusQueryGetUri": f"{inst}?{query}",
                               "sendEventPostUri": f"{inst}/raiseEvent/{{eventName}}?{query}",
                               "terminatePostUri": f"{inst}/terminate?reason={{text}}&{query}",
                               "rewindPostUri": f"{inst}/rewind?reason={{text}}&{query}",
                               "purgeHistoryDeleteUri": f"{inst}?{query}",
                               "restartPostUri": f"{inst}/restart?{query}",
                               "suspendPostUri": f"{inst}/suspend?reason={{text}}&{query}",
                               "resumePostUri": f"{inst}/resume?reason={{text}}&{query}"},
            "baseUrl": f"{public_base}/{WEBHOOK}", "requiredQueryStringParameters": query,
            "rpcBaseUrl": f"{rpc_base}/{RPC}/",
        })

    # -- the extension's HTTP API ---------------------------------------------------------------------
    def start(self, name: str, instance_id: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        """``POST .../orchestrators/<name>[/<id>]``: the body is the input's JSON; 202 and the id."""
        if ("orchestrationTrigger", name) not in self.by_trigger:
            return 400, {"ExceptionMessage": f"The function '{name}' doesn't exist, is disabled, or is not an "
                                             "orchestrator function."}
        iid = instance_id or uuid.uuid4().hex
        try:
            value = json.loads(body) if body else None
        except ValueError as e:
            return 400, {"ExceptionMessage": f"the input is not JSON: {e}"}
        # the Python client posts its df_dumps() text as a JSON string: that text is the input
        input_text = value if isinstance(value, str) or value is None else json.dumps(value)
        now = _iso()
        self.store.put({"name": name, "instanceId": iid, "runtimeStatus": "Pending", "input": input_text,
                        "output": None, "customStatus": None, "createdTime": now, "history": [], "actionsDone": 0,
                        "nextEventId": 0})
        log.info("%s: started orchestration '%s' (Pending)", iid, name)
        self.schedule(iid)
        return 202, {"id": iid}

    def status(self, iid: str) -> dict[str, Any] | None:
        rec = self.store.get(iid)
        if rec is None:
            return None
        keys = ("name", "instanceId", "runtimeStatus", "input", "customStatus", "output", "createdTime",
                "lastUpdatedTime")
        doc = {k: rec.get(k) for k in keys}
        if isinstance(doc["input"], str):  # shown as the JSON it is
            try:
                doc["input"] = json.loads(doc["input"])
            except ValueError:
                pass
        return doc

    # -- driving instances --------------------------------------------------------------------------
    def schedule(self, iid: str) -> None:
        with self.lock:
            if iid in self.running:
                return
            self.running.add(iid)
        self.pool.submit(self._drive_logged, iid)

    def resume_unfinished(self) -> None:
        """What another host process started and did not finish (it was stopped): driven again
        from its history, as the extension does after a worker restart."""
        for iid in self.store.unfinished():
            log.info("%s: resuming an unfinished orchestration", iid)
            self.schedule(iid)

    def _drive_logged(self, iid: str) -> None:
        try:
            self.drive(iid)
        except Exception:  # noqa: BLE001 - a host error fails the instance, with the reason
            rec = self.store.get(iid)
            if rec is not None:
                rec.update(runtimeStatus="Failed", output=f"host error: {traceback.format_exc(limit=3)}")
                self.store.put(rec)
            log.exception("%s: the orchestration could not be driven", iid)
        finally:
            with self.lock:
                self.running.discard(iid)

    def drive(self, iid: str) -> None:
        rec = self.store.get(iid)
        if rec is None or rec["runtimeStatus"] in TERMINAL:
            return
        orchestrator = self.by_trigger[("orchestrationTrigger", rec["name"])]
        history: list[dict[str, Any]] = rec["history"]
        if not history:
            history += [event(ORCHESTRATOR_STARTED), event(EXECUTION_STARTED, Name=rec["name"], Input=rec["input"],
                                                                   Version="", OrchestrationInstance={
                                                                       "InstanceId": iid,
                                                                       "ExecutionId": uuid.uuid4().hex})]
        rec["runtimeStatus"] = "Running"
        self.store.put(rec)
        while True:
            state, error = self._episode(orchestrator, iid, rec["input"], history)
            history.append(event(ORCHESTRATOR_COMPLETED))
            if error is not None:
                rec.update(runtimeStatus="Failed", output=error, history=history)
                self.store.put(rec)
                log.error("%s: orchestration '%s' failed: %s", iid, rec["name"], error)
                return
            if state.get("isDone"):
                rec.update(runtimeStatus="Completed", output=state.get("output"), history=history,
                           customStatus=state.get("customStatus"))
                self.store.put(rec)
                log.info("%s: orchestration '%s' completed", iid, rec["name"])
                return
            actions = [a for group in state.get("actions") or [] for a in group]
            new = actions[rec["actionsDone"]:]
            if not new:
                raise RuntimeError(f"the orchestrator waits on nothing this host runs (actions: {actions})")
            history.append(event(ORCHESTRATOR_STARTED))
            for action in new:
                rec["nextEventId"] = self._carry_out(action, history, rec["nextEventId"])
                rec["actionsDone"] += 1
            rec["history"] = history
            self.store.put(rec)  # each episode's outcome is kept: a restarted host replays from here

    def _episode(self, orchestrator: Any, iid: str, input_text: Any, history: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], str | None]:
        """One call of the orchestrator function with the history so far: (its state, error)."""
        context = json.dumps({"history": history, "instanceId": iid, "isReplaying": len(history) > 2,
                              "parentInstanceId": None, "input": input_text, "upperSchemaVersion": 0})
        try:
            return json.loads(self.call(orchestrator, f"(Orchestrator) instance {iid}", context)), None
        except Exception as e:  # the executor raises with its state appended after OUT_OF_PROC
            text = str(e)
            if OUT_OF_PROC in text:
                state = json.loads(text.split(OUT_OF_PROC, 1)[1])
                return state, str(state.get("error") or text.split(OUT_OF_PROC, 1)[0]).strip()
            return {}, f"{type(e).__name__}: {e}"

    def _carry_out(self, action: dict[str, Any], history: list[dict[str, Any]], next_id: int) -> int:
        """Run one action, appending its events; the next event id (the orchestrator numbers its
        tasks, retry timers included, in the order it creates them)."""
        kind = action.get("actionType")
        if kind not in (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY):
            raise RuntimeError(f"action type {kind} is not supported by the simulated Durable host")
        name, input_text = action["functionName"], action.get("input")
        retry = action.get("retryOptions") or {}
        attempts = int(retry.get("maxNumberOfAttempts", 1)) if kind == CALL_ACTIVITY_WITH_RETRY else 1
        interval = float(retry.get("firstRetryIntervalInMilliseconds", 0)) / 1000
        coefficient = float(retry.get("backoffCoefficient", 1) or 1)
        activity = self.by_trigger.get(("activityTrigger", name))
        for attempt in range(1, attempts + 1):
            task_id = next_id
            next_id += 1
            history.append(event(TASK_SCHEDULED, task_id, Name=name, Input=input_text))
            try:
                if activity is None:
                    raise LookupError(f"The function '{name}' doesn't exist, is disabled, or is not an activity "
                                      "function.")
                arg = json.loads(input_text) if input_text is not None else None  # the activity trigger's decode
                result = self.call(activity, f"(Activity) attempt {attempt} of {attempts}",
                                   **{self._input_name(activity): arg})
                history.append(event(TASK_COMPLETED, TaskScheduledId=task_id, Result=json.dumps(result)))
                return next_id
            except Exception as e:  # noqa: BLE001 - the activity's failure is the task's
                history.append(event(TASK_FAILED, TaskScheduledId=task_id,
                                     Reason=f"Activity function '{name}' failed: {type(e).__name__}: {e}",
                                     Details=traceback.format_exc(limit=2)))
            if kind == CALL_ACTIVITY:
                return next_id
            # the retry's timer after every failure (the library's retry task waits on it even after
            # the last attempt, then fails with the last error), then the next attempt
            wait = interval * coefficient ** (attempt - 1) if attempt < attempts else 0
            fire_at = _iso(datetime.now(timezone.utc) + timedelta(seconds=wait))
            history.append(event(TIMER_CREATED, next_id, FireAt=fire_at))
            if wait:
                self.sleep(wait)
            history.append(event(TIMER_FIRED, TimerId=next_id, FireAt=fire_at))
            next_id += 1
        return next_id

    def _input_name(self, activity: Any) -> str:
        return next(b.get_dict_repr()["name"] for b in activity.get_bindings()
                    if b.get_dict_repr()["type"] == "activityTrigger")
