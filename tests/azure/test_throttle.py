"""ARM's request limits: the buckets on our side, and the simulator enforcing them as ARM does."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("azure.core")

from orchestrator.azure import AzureSession  # noqa: E402
from orchestrator.azure.arm import arm_get  # noqa: E402
from orchestrator.azure.throttle import (  # noqa: E402
    ARM_LIMITS,
    ArmThrottle,
    BucketLimit,
    TokenBucket,
    bucket_scope,
    request_kind,
)

SUB = "00000000-0000-0000-0000-0000000000aa"
WORKSPACE = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_kinds_and_scopes_follow_arm():
    assert [request_kind(m) for m in ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE")] == \
        ["reads", "reads", "writes", "writes", "writes", "deletes"]
    assert bucket_scope(f"https://management.azure.com/subscriptions/{SUB.upper()}/resourceGroups/rg?x=1") == SUB
    assert bucket_scope("https://management.azure.com/providers/Microsoft.Web/operations") == "tenant"
    # data planes have limits of their own
    assert bucket_scope(f"https://acct.blob.core.windows.net/subscriptions/{SUB}") is None
    assert ARM_LIMITS["reads"] == BucketLimit(250, 25) and ARM_LIMITS["writes"] == BucketLimit(200, 10)


def test_bucket_spends_its_capacity_then_paces_at_the_refill_rate():
    bucket = TokenBucket(BucketLimit(3, 2), now=0.0)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    # the next ones are booked one refill interval apart, in order
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.5, 1.0, 1.5]
    # time passing pays the debt back before new tokens accrue
    assert bucket.reserve(10.0) == 0.0 and bucket.tokens == 2.0


def test_azure_answers_correct_the_estimate():
    clock = FakeClock()
    throttle = ArmThrottle(clock=clock)
    url = f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/rg"
    assert throttle.reserve("GET", url) == 0.0
    # another tool has spent the subscription's reads: ARM says 0 are left
    throttle.observe("GET", url, 200, {"X-MS-RateLimit-Remaining-Subscription-Reads": "0"})
    assert throttle.reserve("GET", url) == pytest.approx(1 / 25)
    # writes are a bucket of their own
    assert throttle.reserve("PUT", url) == 0.0
    # a 429 pauses every request of that bucket for its Retry-After, not only the refused one
    throttle.observe("PUT", url, 429, {"Retry-After": "7"})
    assert throttle.reserve("PUT", url) == pytest.approx(7.0)
    assert throttle.throttled == 1
    clock.t += 8
    assert throttle.reserve("PUT", url) == 0.0


def _hammer(session: AzureSession, credential: Any, n: int, threads: int) -> list[BaseException]:
    errors: list[BaseException] = []
    ids = iter(range(n))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(ids, None)
            if i is None:
                return
            try:
                arm_get(session, credential, WORKSPACE, "2023-10-01")
            except BaseException as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return errors


def _seed(sim: Any) -> None:
    sim.add_workspace(SUB, "rg", "ws")


def test_the_simulator_refuses_a_burst_past_the_read_bucket(azure_simulator):
    """Without our buckets, 400 reads at once cost 429s (ARM's answer), each retried after its
    Retry-After."""
    sim = azure_simulator
    _seed(sim)
    session = AzureSession(credential=sim.credential, transport=sim.transport, simulator=sim, retry_total=10)
    session.throttle = ArmThrottle(clock=sim.clock.now, limits={k: BucketLimit(10**9, 10**9) for k in ARM_LIMITS})
    assert not _hammer(session, sim.credential, 400, 8)
    refused = [r for r in sim.requests if r.status == 429]
    assert refused, "the simulator let 400 reads through a 250-token bucket"


def test_a_parallel_burst_stays_under_the_limits_and_never_sees_429(azure_simulator):
    sim = azure_simulator
    _seed(sim)
    session = AzureSession(credential=sim.credential, transport=sim.transport, simulator=sim)
    start = sim.clock.now()
    assert not _hammer(session, sim.credential, 400, 8)
    assert [r for r in sim.requests if r.status == 429] == []
    # 250 at once, the other 150 at 25 a second: paced in (simulated) time, not refused
    assert sim.clock.now() - start >= (400 - 250) / 25 - 1
    assert session.throttle.throttled == 0 and session.throttle.waited > 0
    gets = [r for r in sim.requests if r.method == "GET" and r.path.endswith("/workspaces/ws")]
    assert len(gets) == 400  # nothing retried, nothing lost


def test_every_client_of_a_session_shares_one_budget(azure_simulator):
    sim = azure_simulator
    session = AzureSession(credential=sim.credential, transport=sim.transport, simulator=sim)
    a = session.client_kwargs()["per_retry_policies"][0]
    b = session.client_kwargs()["per_retry_policies"][0]
    assert a.throttle is b.throttle is session.throttle
    assert session.throttle.clock == sim.clock.now  # simulated runs wait in simulated time


def test_compressed_durations_compress_arms_limits_too(azure_simulator):
    """``--simulate-latency arm=F`` scales the simulated ARM's buckets and refill (a benchmark
    running Azure's durations x 0.02 runs ARM's refill x 50); the run's own buckets follow."""
    from orchestrator.azure.simulator.latency import LatencyModel

    sim = azure_simulator
    assert LatencyModel.parse("realtime=1,arm=50").arm == 50
    sim.scale_arm_limits(50)
    assert sim.arm_limits["reads"] == BucketLimit(12500, 1250)
    session = AzureSession(credential=sim.credential, transport=sim.transport, simulator=sim)
    session.arm_throttle_policy()
    assert session.throttle.limits["writes"] == BucketLimit(10000, 500)
    sim.scale_arm_limits(0)  # no limits at all
    _seed(sim)
    unlimited = AzureSession(credential=sim.credential, transport=sim.transport, simulator=sim)
    start = sim.clock.now()
    assert not _hammer(unlimited, sim.credential, 300, 4)
    assert [r for r in sim.requests if r.status == 429] == [] and sim.clock.now() == start
