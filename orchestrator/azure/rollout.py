"""Blue/green rollout for any Azure target that can split traffic (Azure ML online endpoints
today; App Service slots, ACI behind a gateway next): the traffic splits to go through, as a pure
function, and the loop that walks them with a health gate after each step and rolls back on
failure.

:func:`traffic_steps` is pure: from the live split and the new deployment to the list of splits
to apply in order.  :func:`run_rollout` takes callables for the side effects (set traffic, smoke
test, health check) so the Azure-specific code stays in the targets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


def traffic_steps(live: Mapping[str, int], new: str, steps: Sequence[int]) -> list[dict[str, int]]:
    """Splits that move traffic from ``live`` to ``new`` in ``steps`` (percent on ``new``).

    The remainder is shared among the previously live deployments in proportion to their
    current share (largest remainder, so every split sums to 100).  With nothing live, the new
    deployment takes 100% at once.  Deployments at 0% are left out.
    """
    others = {k: v for k, v in live.items() if k != new and v > 0}
    total = sum(others.values())
    if not total:
        return [{new: 100}]
    out = []
    for s in steps:
        rest = 100 - s
        shares = {k: rest * v / total for k, v in others.items()}
        floor = {k: int(x) for k, x in shares.items()}
        left = rest - sum(floor.values())
        for k in sorted(shares, key=lambda k: (floor[k] - shares[k], k))[:left]:
            floor[k] += 1
        split = {new: s, **{k: v for k, v in floor.items() if v}}
        out.append(split)
    return out


@dataclass
class RolloutFailed(Exception):
    step: int
    split: dict[str, int]
    reason: str

    def __str__(self) -> str:
        return f"step {self.step} ({self.split}): {self.reason}"


def run_rollout(
    *,
    live: Mapping[str, int],
    new: str,
    steps: Sequence[int],
    set_traffic: Callable[[dict[str, int], dict[str, int]], None],
    smoke_test: Callable[[], str | None],
    health_check: Callable[[dict[str, int]], str | None],
    mirror_percent: int = 0,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[dict[str, int]]:
    """Smoke-test ``new`` at 0%, optionally mirror, then walk the splits.  On any failure,
    restore ``live`` (no mirror) and raise :class:`RolloutFailed`.  Returns the splits applied.

    ``set_traffic(split, mirror)`` writes; ``smoke_test()`` and ``health_check(split)`` return
    None when healthy, or what went wrong.
    """
    applied: list[dict[str, int]] = []
    restore = {k: v for k, v in live.items() if v}

    def fail(step: int, split: dict[str, int], reason: str) -> RolloutFailed:
        if applied or mirror_percent:
            progress(f"rolling back traffic to {restore or 'none'}")
            set_traffic(dict(restore), {})
        return RolloutFailed(step, split, reason)

    why = smoke_test()
    if why:
        raise fail(0, {new: 0}, f"smoke test of {new} failed: {why}")
    splits = traffic_steps(live, new, steps)
    if mirror_percent and restore:
        progress(f"mirroring {mirror_percent}% of live traffic to {new}")
        set_traffic(dict(restore), {new: mirror_percent})
        why = health_check(dict(restore))
        if why:
            raise fail(0, dict(restore), f"health check while mirroring failed: {why}")
    for i, split in enumerate(splits, 1):
        progress(f"traffic step {i}/{len(splits)}: {split}")
        set_traffic(split, {})
        applied.append(split)
        why = health_check(split)
        if why:
            raise fail(i, split, f"health check failed: {why}")
    return applied
