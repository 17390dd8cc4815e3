"""ARM plumbing every provider shares: resource ids, generic CRUD, long-running operations.

Resources live in ``sim.state["resources"]`` keyed by their lower-cased id.  A long-running
operation is a record in ``sim.state["operations"]`` with a start and an end on the virtual clock;
``finish_due()`` applies the outcome of every operation whose end has passed (provisioningState,
removal on delete, provider hooks), so a resource moves through its states as simulated time
advances, whoever is asking.
"""

from __future__ import annotations

import math
import re
from typing import Any

from orchestrator.azure.simulator.messages import Request, Response, arm_error, json_response

ARM_HOST = "management.azure.com"
OP_STATUS = re.compile(r"^/subscriptions/([^/]+)/providers/([^/]+)/locations/([^/]+)/"
                       r"(mfeOperationsStatus|mfeOperationResults|operations|operationStatuses|operationResults)/([^/]+)$",
                       re.IGNORECASE)
TERMINAL = ("Succeeded", "Failed", "Canceled")


def key_of(path: str) -> str:
    return path.rstrip("/").lower()


def resource_type(path: str) -> str:
    """``Microsoft.X/a/b`` for ``.../providers/Microsoft.X/a/n1/b/n2``."""
    tail = path.split("/providers/")[-1].strip("/").split("/")
    return "/".join([tail[0], *tail[1::2]])


def parent_of(path: str) -> str:
    return path.rstrip("/").rsplit("/", 2)[0]


def is_collection(path: str) -> bool:
    """True for a list URL (``.../providers/NS/type`` or ``.../providers/NS/type/name/sub``)."""
    if "/providers/" not in path:
        return path.lower().endswith("/resourcegroups")
    tail = path.split("/providers/")[-1].strip("/").split("/")
    return len(tail) % 2 == 0


def subscription_of(path: str) -> str | None:
    m = re.match(r"^/subscriptions/([^/]+)", path, re.IGNORECASE)
    return m.group(1) if m else None


def resource_group_of(path: str) -> str | None:
    m = re.match(r"^/subscriptions/[^/]+/resourceGroups/([^/]+)", path, re.IGNORECASE)
    return m.group(1) if m else None


def not_found(path: str) -> Response:
    rtype = resource_type(path) if "/providers/" in path else "Microsoft.Resources/resourceGroups"
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return arm_error(404, "ResourceNotFound", f"The Resource '{rtype}/{name}' under resource group "
                     f"'{resource_group_of(path)}' was not found.")


def children(sim: Any, path: str) -> list[dict[str, Any]]:
    """Resources directly below a collection URL."""
    prefix = key_of(path) + "/"
    depth = prefix.count("/")
    return [r for k, r in sim.state["resources"].items() if k.startswith(prefix) and k.count("/") == depth]


def list_response(items: list[dict[str, Any]]) -> Response:
    return json_response(200, {"value": items})


def start_operation(sim: Any, resource_path: str, action: str, *, kind: str, operation: str,
                    location: str, namespace: str, seconds: float | None = None,
                    error: dict[str, str] | None = None, hook: str | None = None) -> dict[str, Any]:
    """Record a long-running operation; its outcome applies once the virtual clock passes ``end``."""
    now = sim.clock.now()
    outcome, err = "Succeeded", error
    fault = sim.faults.lro_outcome(operation)
    if fault == "lro-failed":
        outcome, err = "Failed", {"code": "InternalServerError", "message": f"{operation} failed (injected fault)."}
    elif fault == "lro-canceled":
        outcome, err = "Canceled", {"code": "OperationCanceled", "message":
                                    "The operation was canceled by a higher-priority operation. Retry."}
    elif error:
        outcome = "Failed"
    op_id = sim.new_id()
    op = {"id": op_id, "resource": key_of(resource_path), "path": resource_path, "action": action,
          "start": now, "end": now + (sim.latency.lro_seconds(kind) if seconds is None else seconds),
          "outcome": outcome, "error": err, "location": location, "namespace": namespace,
          "subscription": subscription_of(resource_path), "done": False, "hook": hook, "operation": operation}
    sim.state["operations"][op_id] = op
    return op


def operation_urls(op: dict[str, Any], api_version: str = "2023-04-01") -> tuple[str, str]:
    """(Azure-AsyncOperation URL, Location URL) of an operation."""
    base = (f"https://{ARM_HOST}/subscriptions/{op['subscription']}/providers/{op['namespace']}/"
            f"locations/{op['location']}")
    if op["namespace"].lower() == "microsoft.machinelearningservices":
        return (f"{base}/mfeOperationsStatus/{op['id']}?api-version={api_version}",
                f"{base}/mfeOperationResults/{op['id']}?api-version={api_version}")
    return (f"{base}/operations/{op['id']}?api-version={api_version}",
            f"{base}/operationResults/{op['id']}?api-version={api_version}")


def busy(sim: Any, path: str) -> dict[str, Any] | None:
    """The unfinished operation on this resource or below it, if any."""
    k = key_of(path)
    for op in sim.state["operations"].values():
        if not op["done"] and (op["resource"] == k or op["resource"].startswith(k + "/")):
            return op
    return None


FORGET_AFTER_S = 3600.0  # a finished operation nobody polled (its poller was killed) is dropped after this


def finish_due(sim: Any) -> None:
    """Apply the outcome of every operation whose time has come; drop the records of finished
    operations whose terminal status was already read (pollers stop there), so neither the state
    nor this scan grows with the cloud's history."""
    now = sim.clock.now()
    ops = sim.state["operations"]
    for op_id in [i for i, op in ops.items()
                  if op["done"] and (op.get("polled") or op["end"] + FORGET_AFTER_S < now)]:
        del ops[op_id]
    for op in sorted((o for o in ops.values() if not o["done"] and o["end"] <= now), key=lambda o: o["end"]):
        op["done"] = True
        res = sim.state["resources"].get(op["resource"])
        if op["action"] == "delete" and op["outcome"] == "Succeeded":
            sim.remove_tree(op["resource"])
        elif res is not None:
            props = res.setdefault("properties", {})
            props["provisioningState"] = op["outcome"]
        if op.get("hook"):
            sim.hooks[op["hook"]](sim, op, res)


def retry_after(sim: Any, op: dict[str, Any]) -> str:
    remaining = max(0.0, op["end"] - sim.clock.now())
    return str(max(1, min(sim.poll_hint_s, math.ceil(remaining))))


def operation_status(sim: Any, req: Request) -> Response:
    m = OP_STATUS.match(req.path)
    assert m
    op = sim.state["operations"].get(m.group(5))
    if op is None:
        return arm_error(404, "ResourceNotFound", f"Operation {m.group(5)} was not found.")
    done = op["done"]
    op["polled"] = done  # the poller has its answer: finish_due may forget the record
    status = op["outcome"] if done else "InProgress"
    if m.group(4).lower() in ("mfeoperationresults", "operationresults"):  # Location-style polling
        if not done:
            return Response(202, b"", {"Location": req.url, "Retry-After": retry_after(sim, op)})
        if op["outcome"] != "Succeeded":
            return arm_error(400 if op["outcome"] == "Failed" else 409, op["error"]["code"], op["error"]["message"])
        res = sim.state["resources"].get(op["resource"])
        # deletes and actions such as a registry import end with an empty body
        return json_response(200, res) if res is not None and op["action"] not in ("delete", "import") else Response(200)
    body: dict[str, Any] = {"id": req.path, "name": op["id"], "status": status,
                            "startTime": sim.iso(op["start"])}
    if done:
        body["endTime"] = sim.iso(op["end"])
        if op["error"] and op["outcome"] != "Succeeded":
            body["error"] = op["error"]
    headers = {} if done else {"Retry-After": retry_after(sim, op)}
    return json_response(200, body, headers)


def lro_response(sim: Any, op: dict[str, Any], status: int, body: Any, *, style: str = "async",
                 api_version: str = "2023-04-01") -> Response:
    """201/202 for a started operation with the headers pollers follow (Retry-After on each)."""
    async_url, location_url = operation_urls(op, api_version)
    headers = {"Retry-After": retry_after(sim, op), "x-ms-async-operation-timeout": "PT1H"}
    if style in ("async", "both"):
        headers["Azure-AsyncOperation"] = async_url
    if style in ("location", "both"):
        headers["Location"] = location_url
    return json_response(status, body, headers) if body is not None else Response(status, b"", headers)


def generic(sim: Any, req: Request, operation: str, long_running: bool, namespace: str) -> Response | None:
    """Spec-driven CRUD for resources with no special behaviour; None when the method/path is not CRUD."""
    path, k = req.path, key_of(req.path)
    res = sim.state["resources"].get(k)
    if req.method == "GET":
        if is_collection(path):
            return list_response(children(sim, path))
        return json_response(200, res) if res is not None else not_found(path)
    if req.method == "HEAD":
        return Response(204 if res is not None else 404)
    if req.method == "DELETE":
        if res is None:
            return Response(204)
        if long_running and sim.async_deletes:
            op = start_operation(sim, path, "delete", kind="delete", operation=operation,
                                 location=res.get("location", sim.default_location), namespace=namespace)
            res.setdefault("properties", {})["provisioningState"] = "Deleting"
            return lro_response(sim, op, 202, None, style="location", api_version=req.query.get("api-version", ""))
        sim.remove_tree(k)
        return Response(200)
    if req.method in ("PUT", "PATCH"):
        body = req.json()
        if not isinstance(body, dict):
            return arm_error(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.")
        if req.method == "PATCH":
            if res is None:
                return not_found(path)
            merged = sim.merge(res, body)
        else:
            merged = {**body, "properties": dict(body.get("properties") or {})}
        created = res is None
        new = sim.put_resource(path, merged, location=body.get("location"))
        if long_running and namespace.lower() in sim.async_namespaces:
            new["properties"]["provisioningState"] = "Creating" if created else "Updating"
            op = start_operation(sim, path, "create" if created else "update", kind="default",
                                 operation=operation, location=new.get("location") or sim.default_location,
                                 namespace=namespace)
            return lro_response(sim, op, 201 if created else 200, new, api_version=req.query.get("api-version", ""))
        return json_response(201 if created and sim.created_201(namespace) else 200, new)
    return None
