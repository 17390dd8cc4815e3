"""The durable queue: at-least-once with a visibility timeout, idempotent submissions."""

from __future__ import annotations

import time
from typing import Any

from targets.local.runtime.deployctl_runtime.queue import Message, Queue


def claim(q: Queue, worker: str) -> Message:
    msg = q.claim(worker)
    assert msg is not None, "nothing to claim"
    return msg


def get(q: Queue, mid: str) -> dict[str, Any]:
    doc = q.get(mid)
    assert doc is not None, f"no message {mid}"
    return doc


def test_submit_claim_complete_and_idempotency(tmp_path):
    q = Queue(str(tmp_path / "q.db"))
    a, created = q.submit(b'{"x": 1}', "key-1")
    b, again = q.submit(b'{"x": 2}', "key-1")
    assert created and not again and a == b
    msg = claim(q, "w1")
    assert msg.id == a and msg.body == b'{"x": 1}' and msg.attempts == 1
    assert q.claim("w2") is None  # hidden while w1 works on it
    q.complete(a, b"[1]")
    assert get(q, a)["state"] == "done" and get(q, a)["result"] == [1]
    assert q.counts() == {"done": 1}


def test_a_lost_worker_leaves_the_message_to_be_redelivered(tmp_path):
    q = Queue(str(tmp_path / "q.db"), visibility_timeout=0.05)
    mid, _ = q.submit(b"{}")
    assert claim(q, "dies").id == mid  # ...and never completes
    assert q.claim("other") is None
    time.sleep(0.06)
    again = claim(q, "other")
    assert again.id == mid and again.attempts == 2


def test_failures_retry_then_dead_letter(tmp_path):
    q = Queue(str(tmp_path / "q.db"), max_attempts=2)
    mid, _ = q.submit(b"{}")
    m = claim(q, "w")
    q.fail(mid, "ValueError: no", m.attempts)
    m = claim(q, "w")
    assert m.attempts == 2
    q.fail(mid, "ValueError: no", m.attempts)
    assert get(q, mid)["state"] == "dead" and q.claim("w") is None


def test_durable_across_connections(tmp_path):
    mid, _ = Queue(str(tmp_path / "q.db")).submit(b"{}")
    assert get(Queue(str(tmp_path / "q.db")), mid)["state"] == "queued"
