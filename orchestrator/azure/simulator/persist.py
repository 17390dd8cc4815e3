"""Save and load a simulated cloud as one JSON file (atomic replace), so separate CLI runs
(``apply --simulate``, then ``status``, ``invoke``, ``destroy``) act on one cloud."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.azure.simulator.clock import VirtualClock


def save(sim: Any, path: Path) -> None:
    sim.state["clock"] = sim.clock.now()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(sim.state, f, sort_keys=True)
    os.replace(tmp, path)


def load(cls: Any, path: Path, **kwargs: Any) -> Any:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a simulated-cloud state file ({e})") from None
    if not isinstance(state, dict) or state.get("version") != 1:
        raise ValueError(f"{path}: not a simulated-cloud state file (version {state.get('version')!r})")
    saved = float(state.get("clock") or 1_700_000_000.0)
    clock = kwargs.pop("clock", None) or VirtualClock(start=saved)
    clock.advance(max(0.0, saved - clock.now()))  # a given clock (e.g. real-time) resumes at the saved time
    sim = cls(clock=clock, **kwargs)
    sim.state.update(state)
    # Ids stay unique across runs: the RNG continues from how many ids were handed out.
    sim.rng.seed(f"{sim.seed}:{state.get('counter', 0)}")
    return sim
