"""The near-real-time path end to end against Azurite (Storage's emulator, started here on
127.0.0.1): messages in the queue, the host stand-in's queue trigger and bindings, results by
request id in blobs, retries by redelivery, the poison queue.  Skipped where Azurite is not
installed (`.ci/run` installs it: npm install -g azurite)."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time

import pytest

from orchestrator.azure.simulator.providers.web import stop_process
from targets.web.host import FunctionHost, Storage
from tests.functions.conftest import stage
from tests.functions.test_app import COUNTING

pytestmark = pytest.mark.usefixtures("isolated_process")
# Azurite's documented development account (public, not a secret)
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    exe = shutil.which("azurite")
    if exe is None:
        pytest.skip("Azurite is not installed (npm install -g azurite; .ci/run installs it)")
    bport, qport = free_port(), free_port()
    work = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen([exe, "--silent", "--inMemoryPersistence", "--skipApiVersionCheck",
                             "--blobHost", "127.0.0.1", "--blobPort", str(bport), "--queueHost", "127.0.0.1",
                             "--queuePort", str(qport), "--tableHost", "127.0.0.1", "--tablePort", str(free_port())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=work)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", qport), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"Azurite exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.2)
    yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
           f"BlobEndpoint=http://127.0.0.1:{bport}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:{qport}/devstoreaccount1;")
    stop_process(proc)


def run_until_idle(host: FunctionHost, storage: Storage, rounds: int = 20) -> None:
    for _ in range(rounds):
        if not host.poll_once(storage, visibility_timeout=5):
            return


def test_queue_path_against_azurite(azurite, tmp_path):
    settings = {"AzureWebJobsStorage": azurite, "DEPLOYCTL_QUEUE": "requests", "DEPLOYCTL_RESULTS": "results"}
    host = FunctionHost(stage(tmp_path, COUNTING, max_attempts=2), settings)
    storage = Storage.from_connection_string(azurite)
    requests = storage.queue("requests")

    def submit(raw: bytes) -> None:
        requests.send_message(base64.b64encode(raw).decode())

    submit(json.dumps({"id": "ok-1", "body": {"x": 1}}).encode())
    submit(json.dumps({"id": "ok-1", "body": {"x": 1}}).encode())  # redelivered / resubmitted: scored once
    submit(json.dumps({"id": "bad-1", "body": {"fail": True}}).encode())
    submit(b"this is not json")
    run_until_idle(host, storage)

    done = json.loads(storage.get_blob("results/ok-1.json") or "null")
    assert done["state"] == "done" and done["result"]["echo"] == {"x": 1} and done["result"]["run_calls"] == 1
    dead = json.loads(storage.get_blob("results/bad-1.json") or "null")
    assert dead == {"request_id": "bad-1", "state": "dead", "attempts": 2, "error": "ValueError: asked to fail"}
    poisoned = [base64.b64decode(m.content) for m in storage.queue("requests-poison").receive_messages(max_messages=10)]
    # the failing request, with its error, from the app; the non-JSON message, unchanged, from the host
    assert b"this is not json" in poisoned
    kept = [json.loads(p) for p in poisoned if p != b"this is not json"]
    assert kept == [{"id": "bad-1", "body": {"fail": True}, "error": "ValueError: asked to fail", "attempts": 2}]
    assert requests.get_queue_properties().approximate_message_count == 0  # nothing left, nothing lost
