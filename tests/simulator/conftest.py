"""Helpers of the simulator tests: real SDK clients on the ``azure_simulator`` fixture (from the
``deployctl`` pytest plugin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is not installed (pip install 'deployctl[azure]')")

SUB = "00000000-0000-0000-0000-0000000000aa"
OTHER_SUB = "00000000-0000-0000-0000-0000000000bb"
SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def mlclient(sim: Any, sub: str = SUB, rg: str = "rg", ws: str = "ws", **kw: Any) -> Any:
    from azure.ai.ml import MLClient

    return MLClient(kw.pop("credential", sim.credential), sub, rg, ws, transport=sim.transport,
                    show_progress=False, **kw)


@pytest.fixture
def sim(azure_simulator: Any) -> Any:
    azure_simulator.add_workspace(SUB, "rg", "ws")
    return azure_simulator
