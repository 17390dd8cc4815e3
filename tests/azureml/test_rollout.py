"""orchestrator.azure.rollout: traffic splits (pure) and the rollout loop with rollback."""

from __future__ import annotations

import pytest

from orchestrator.azure.rollout import RolloutFailed, run_rollout, traffic_steps


def test_steps_from_one_live_deployment():
    assert traffic_steps({"blue": 100}, "green", [10, 50, 100]) == [
        {"green": 10, "blue": 90}, {"green": 50, "blue": 50}, {"green": 100}]


def test_first_deployment_takes_everything_at_once():
    assert traffic_steps({}, "green", [10, 50, 100]) == [{"green": 100}]
    assert traffic_steps({"old": 0}, "green", [10, 100]) == [{"green": 100}]


def test_remainder_shared_in_proportion_and_sums_to_100():
    for split in traffic_steps({"a": 70, "b": 30}, "c", [10, 33, 100]):
        assert sum(split.values()) == 100
    assert traffic_steps({"a": 70, "b": 30}, "c", [10])[0] == {"c": 10, "a": 63, "b": 27}


class World:
    """Records traffic writes; health answers scripted per split."""

    def __init__(self, bad_at: int | None = None, smoke: str | None = None) -> None:
        self.writes: list[tuple[dict, dict]] = []
        self.bad_at, self.smoke = bad_at, smoke

    def set_traffic(self, split, mirror):
        self.writes.append((split, mirror))

    def health(self, split):
        return "HTTP 500" if self.bad_at is not None and split.get("green") == self.bad_at else None


def test_successful_rollout_with_mirror():
    w = World()
    applied = run_rollout(live={"blue": 100}, new="green", steps=[10, 100], set_traffic=w.set_traffic,
                          smoke_test=lambda: None, health_check=w.health, mirror_percent=20)
    assert applied == [{"green": 10, "blue": 90}, {"green": 100}]
    assert w.writes[0] == ({"blue": 100}, {"green": 20})
    assert w.writes[-1] == ({"green": 100}, {})


def test_failed_health_check_rolls_back():
    w = World(bad_at=50)
    with pytest.raises(RolloutFailed, match="step 2 .*HTTP 500"):
        run_rollout(live={"blue": 100}, new="green", steps=[10, 50, 100], set_traffic=w.set_traffic,
                    smoke_test=lambda: None, health_check=w.health)
    assert w.writes[-1] == ({"blue": 100}, {})


def test_failed_smoke_test_never_moves_traffic():
    w = World()
    with pytest.raises(RolloutFailed, match="smoke test of green failed: boom"):
        run_rollout(live={"blue": 100}, new="green", steps=[100], set_traffic=w.set_traffic,
                    smoke_test=lambda: "boom", health_check=w.health)
    assert w.writes == []
