"""Azure Storage: accounts (ARM) and the blob and queue data planes.

Blob: create container, Put Blob, Put Block / Put Block List, Get Blob (with ranges),
Get Blob Properties (HEAD), List Blobs (flat), Delete Blob — what azure-storage-blob's
``upload_blob``, ``get_blob_properties``, ``list_blobs`` and ``download_blob`` send.
Queue: create/delete queue, metadata (approximate count), put/get/peek/delete messages.
Blob bodies are stored base64 in the state, so they persist with it.  Shared-key signatures and
SAS tokens are accepted, not verified.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from orchestrator.azure.simulator.messages import Request, Response, json_response, storage_error

BLOB_HOST = re.compile(r"^([a-z0-9]+)\.blob\.core\.windows\.net$")
QUEUE_HOST = re.compile(r"^([a-z0-9]+)\.queue\.core\.windows\.net$")


def put_blob(sim: Any, account: str, container: str, name: str, data: bytes, content_type: str | None = None) -> dict:
    blobs = sim.state["blobs"].setdefault(account, {}).setdefault(container, {})
    entry = {"data": base64.b64encode(data).decode(), "etag": f'"0x{sim.new_id().replace("-", "")[:15].upper()}"',
             "modified": sim.clock.now(), "content_type": content_type or "application/octet-stream",
             "md5": base64.b64encode(hashlib.md5(data).digest()).decode()}
    blobs[name] = entry
    return entry


def get_blob(sim: Any, account: str, container: str, name: str) -> bytes | None:
    entry = sim.state["blobs"].get(account, {}).get(container, {}).get(name)
    return base64.b64decode(entry["data"]) if entry else None


def list_blob_names(sim: Any, account: str, container: str, prefix: str = "") -> list[str]:
    return sorted(n for n in sim.state["blobs"].get(account, {}).get(container, {}) if n.startswith(prefix))


def _http_date(t: float) -> str:
    from email.utils import formatdate

    return formatdate(t, usegmt=True)


class BlobService:
    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.blocks: dict[str, dict[str, bytes]] = {}

    def owns(self, req: Request) -> bool:
        return bool(BLOB_HOST.match(req.host))

    def operation(self, req: Request) -> str:
        comp = req.query.get("comp", "")
        restype = req.query.get("restype", "")
        kind = {"block": "PutBlock", "blocklist": "PutBlockList", "list": "List"}.get(comp, "")
        if restype == "container":
            return f"Container_{kind or req.method.title()}"
        return f"Blob_{kind or req.method.title()}"

    def _headers(self, entry: dict[str, Any], size: int) -> dict[str, str]:
        return {"ETag": entry["etag"], "Last-Modified": _http_date(entry["modified"]), "x-ms-blob-type": "BlockBlob",
                "Content-Type": entry["content_type"], "Content-MD5": entry["md5"], "x-ms-version": "2025-01-05",
                "Accept-Ranges": "bytes", "x-ms-server-encrypted": "true", "x-ms-lease-state": "available",
                "x-ms-lease-status": "unlocked", "x-ms-creation-time": _http_date(entry["modified"]),
                "Content-Length": str(size)}

    def handle(self, req: Request) -> Response | None:
        account = BLOB_HOST.match(req.host).group(1)  # type: ignore[union-attr]
        parts = req.path.strip("/").split("/", 1)
        container = parts[0]
        name = parts[1] if len(parts) > 1 else ""
        store = self.sim.state["blobs"].setdefault(account, {})
        head = req.method == "HEAD"
        if not name:
            if req.method == "PUT" and req.query.get("restype") == "container":
                if container in store:
                    return storage_error(409, "ContainerAlreadyExists", "The specified container already exists.")
                store[container] = {}
                return Response(201, b"", {"ETag": '"0x1"', "Last-Modified": _http_date(self.sim.clock.now())})
            if container not in store:
                return storage_error(404, "ContainerNotFound", "The specified container does not exist.", head=head)
            if req.method == "GET" and req.query.get("comp") == "list":
                return self.list(account, container, req)
            if req.method in ("GET", "HEAD") and req.query.get("restype") == "container":
                return Response(200, b"", {"ETag": '"0x1"', "Last-Modified": _http_date(self.sim.clock.now())})
            if req.method == "DELETE":
                del store[container]
                return Response(202)
            return None
        if container not in store:
            if req.method == "PUT" and not self.sim.strict:
                store[container] = {}
            else:
                return storage_error(404, "ContainerNotFound", "The specified container does not exist.", head=head)
        comp = req.query.get("comp", "")
        bkey = f"{account}/{container}/{name}"
        if req.method == "PUT" and comp == "block":
            self.blocks.setdefault(bkey, {})[req.query["blockid"]] = req.body
            return Response(201, b"", {"Content-MD5": base64.b64encode(hashlib.md5(req.body).digest()).decode()})
        if req.method == "PUT" and comp == "blocklist":
            staged = self.blocks.pop(bkey, {})
            ids = [el.text or "" for el in ET.fromstring(req.body)]
            missing = [i for i in ids if i not in staged]
            if missing:
                return storage_error(400, "InvalidBlockList", "The specified block list is invalid.")
            entry = put_blob(self.sim, account, container, name, b"".join(staged[i] for i in ids),
                             req.header("x-ms-blob-content-type"))
            return Response(201, b"", {"ETag": entry["etag"], "Last-Modified": _http_date(entry["modified"])})
        if req.method == "PUT" and not comp:
            if req.header("x-ms-blob-type", "BlockBlob") != "BlockBlob":
                return storage_error(400, "UnsupportedBlobType", "Only block blobs are simulated.")
            if req.header("if-none-match") == "*" and name in store[container]:
                return storage_error(409, "BlobAlreadyExists", "The specified blob already exists.")
            entry = put_blob(self.sim, account, container, name, req.body,
                             req.header("x-ms-blob-content-type") or req.header("content-type"))
            return Response(201, b"", {"ETag": entry["etag"], "Last-Modified": _http_date(entry["modified"]),
                                       "Content-MD5": entry["md5"], "x-ms-request-server-encrypted": "true"})
        entry = store[container].get(name)
        if req.method in ("GET", "HEAD") and not comp:
            if entry is None:
                return storage_error(404, "BlobNotFound", "The specified blob does not exist.", head=head)
            data = base64.b64decode(entry["data"])
            headers = self._headers(entry, len(data))
            if head:
                return Response(200, b"", headers)
            rng = req.header("x-ms-range") or req.header("range")
            if rng:
                m = re.match(r"bytes=(\d+)-(\d*)", rng)
                start = int(m.group(1)) if m else 0
                end = min(int(m.group(2)) if m and m.group(2) else len(data) - 1, len(data) - 1)
                if start >= len(data):
                    return storage_error(416, "InvalidRange", "The range specified is invalid for the current size of the resource.")
                chunk = data[start:end + 1]
                headers.update({"Content-Range": f"bytes {start}-{end}/{len(data)}", "Content-Length": str(len(chunk))})
                headers.pop("Content-MD5", None)
                return Response(206, chunk, headers)
            return Response(200, data, headers)
        if req.method == "DELETE":
            if entry is None:
                return storage_error(404, "BlobNotFound", "The specified blob does not exist.")
            del store[container][name]
            return Response(202)
        return None

    def list(self, account: str, container: str, req: Request) -> Response:
        prefix = req.query.get("prefix", "")
        rows = []
        for n in list_blob_names(self.sim, account, container, prefix):
            e = self.sim.state["blobs"][account][container][n]
            size = len(base64.b64decode(e["data"]))
            rows.append(f"<Blob><Name>{escape(n)}</Name><Properties><Creation-Time>{_http_date(e['modified'])}</Creation-Time>"
                        f"<Last-Modified>{_http_date(e['modified'])}</Last-Modified><Etag>{e['etag']}</Etag>"
                        f"<Content-Length>{size}</Content-Length><Content-Type>{escape(e['content_type'])}</Content-Type>"
                        f"<Content-MD5>{e['md5']}</Content-MD5><BlobType>BlockBlob</BlobType><AccessTier>Hot</AccessTier>"
                        "<LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState>"
                        "<ServerEncrypted>true</ServerEncrypted></Properties></Blob>")
        body = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://{account}.blob.core.windows.net/" '
                f'ContainerName="{container}"><Prefix>{escape(prefix)}</Prefix><Blobs>{"".join(rows)}</Blobs><NextMarker /></EnumerationResults>')
        return Response(200, body.encode(), {"Content-Type": "application/xml"})


class QueueService:
    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def owns(self, req: Request) -> bool:
        return bool(QUEUE_HOST.match(req.host))

    def operation(self, req: Request) -> str:
        return f"Queue_{req.method.title()}{'Messages' if '/messages' in req.path else ''}"

    def handle(self, req: Request) -> Response | None:
        account = QUEUE_HOST.match(req.host).group(1)  # type: ignore[union-attr]
        parts = req.path.strip("/").split("/")
        queues = self.sim.state["queues"].setdefault(account, {})
        qname = parts[0]
        if len(parts) == 1:
            if req.method == "PUT":
                created = qname not in queues
                queues.setdefault(qname, {"messages": []})
                return Response(201 if created else 204)
            if qname not in queues:
                return storage_error(404, "QueueNotFound", "The specified queue does not exist.", head=req.method == "HEAD")
            if req.method == "DELETE":
                del queues[qname]
                return Response(204)
            if req.method in ("GET", "HEAD") and req.query.get("comp") == "metadata":
                return Response(200, b"", {"x-ms-approximate-messages-count": str(len(queues[qname]["messages"]))})
            return None
        if qname not in queues:
            return storage_error(404, "QueueNotFound", "The specified queue does not exist.")
        msgs = queues[qname]["messages"]
        now = self.sim.clock.now()
        if len(parts) == 2 and req.method == "POST":
            text = ET.fromstring(req.body).findtext("MessageText") or ""
            visible = now + int(req.query.get("visibilitytimeout", "0") or 0)
            m = {"id": self.sim.new_id(), "text": text, "inserted": now, "visible": visible, "pop": self.sim.new_id(),
                 "dequeue": 0}
            msgs.append(m)
            return Response(201, self._xml([m], pop=True), {"Content-Type": "application/xml"})
        if len(parts) == 2 and req.method == "GET":
            n = int(req.query.get("numofmessages", "1"))
            ready = [m for m in msgs if m["visible"] <= now][:n]
            if req.query.get("peekonly") != "true":
                for m in ready:
                    m["visible"] = now + int(req.query.get("visibilitytimeout", "30"))
                    m["pop"] = self.sim.new_id()
                    m["dequeue"] += 1
            return Response(200, self._xml(ready, pop=req.query.get("peekonly") != "true"), {"Content-Type": "application/xml"})
        if len(parts) == 2 and req.method == "DELETE":
            msgs.clear()
            return Response(204)
        if len(parts) == 3 and req.method == "DELETE":
            before = len(msgs)
            msgs[:] = [m for m in msgs if not (m["id"] == parts[2] and m["pop"] == req.query.get("popreceipt"))]
            return Response(204) if len(msgs) < before else storage_error(404, "MessageNotFound",
                                                                         "The specified message does not exist.")
        return None

    def _xml(self, msgs: list[dict[str, Any]], *, pop: bool) -> bytes:
        from email.utils import formatdate

        rows = []
        for m in msgs:
            extra = (f"<PopReceipt>{m['pop']}</PopReceipt><TimeNextVisible>{formatdate(m['visible'], usegmt=True)}"
                     "</TimeNextVisible>") if pop else ""
            rows.append(f"<QueueMessage><MessageId>{m['id']}</MessageId><InsertionTime>{formatdate(m['inserted'], usegmt=True)}"
                        f"</InsertionTime><ExpirationTime>{formatdate(m['inserted'] + 7 * 86400, usegmt=True)}</ExpirationTime>"
                        f"{extra}<DequeueCount>{m['dequeue']}</DequeueCount><MessageText>{escape(m['text'])}</MessageText>"
                        "</QueueMessage>")
        return f'<?xml version="1.0" encoding="utf-8"?><QueueMessagesList>{"".join(rows)}</QueueMessagesList>'.encode()


class StorageAccounts:
    """Microsoft.Storage/storageAccounts (ARM): generic CRUD plus listKeys."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def operation(self, req: Request) -> str | None:
        return "StorageAccounts_ListKeys" if req.path.lower().endswith("/listkeys") else None

    def handle(self, req: Request, operation: str | None) -> Response | None:
        m = re.search(r"/storageAccounts/([^/]+)(/.*)?$", req.path, re.IGNORECASE)
        if not m:
            return None
        name, tail = m.group(1), (m.group(2) or "").lower()
        account_path = req.path[: m.start(2)] if m.group(2) else req.path
        if tail == "" and req.method == "PUT":
            if not re.match(r"^[a-z0-9]{3,24}$", name):
                return json_response(400, {"error": {"code": "AccountNameInvalid", "message":
                                     f"{name} is not a valid storage account name. Storage account name must be between "
                                     "3 and 24 characters in length and use numbers and lower-case letters only."}})
            body = req.json() or {}
            props = {**(body.get("properties") or {}), "primaryEndpoints": {
                "blob": f"https://{name}.blob.core.windows.net/", "queue": f"https://{name}.queue.core.windows.net/"}}
            created = self.sim.get(req.path) is None
            self.sim.state.setdefault("storage_keys", {}).setdefault(name, self.sim.secret(64))
            return json_response(200 if not created else 200, self.sim.put_resource(req.path, {**body, "properties": props},
                                                                                     location=body.get("location")))
        if tail == "/listkeys" and req.method == "POST":
            if self.sim.get(account_path) is None:
                return None
            key = self.sim.state.setdefault("storage_keys", {}).setdefault(name, self.sim.secret(64))
            return json_response(200, {"keys": [{"keyName": "key1", "value": key, "permissions": "FULL"}]})
        return None
