"""Put the source model of this example into the simulated cloud, so `--simulate` can copy or share it.

    python examples/azureml-cross-subscription/seed_simulator.py          # then:
    deployctl apply examples/azureml-cross-subscription/deployctl.yaml --simulate --yes   # copy
    deployctl apply examples/azureml-cross-subscription/registry.yaml --simulate --yes    # share

Registers model ``iris`` version 1 (the quickstart model folder) in workspace ``models-ws`` of
subscription 00000000-0000-0000-0000-000000000002, and creates the Azure ML registry
``models-registry`` (resource group ``models-registry-rg`` of the target subscription, eastus)
that ``registry.yaml`` shares through, inside the simulated-cloud file that
``--simulate`` uses by default (``<this folder>/.deployctl/simulated-azure.json``; pass another
path as the first argument when you use ``--simulate-state``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.azure.simulator import AzureSimulator
from orchestrator.packaging import iter_files

HERE = Path(__file__).resolve().parent
SOURCE = ("00000000-0000-0000-0000-000000000002", "models-rg", "models-ws")
REGISTRY = ("00000000-0000-0000-0000-000000000001", "models-registry-rg", "models-registry")


def main() -> None:
    state = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / ".deployctl" / "simulated-azure.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    sim = AzureSimulator.load(state, strict=False) if state.exists() else AzureSimulator(strict=False)
    sim.add_workspace(*SOURCE)
    model = HERE.parent / "quickstart" / "model"
    files = {f"{rel}": path.read_bytes() for rel, path in iter_files(model)}
    sim.add_model(*SOURCE, "iris", "1", files=files)
    sim.add_registry(*REGISTRY)
    sim.save(state)
    sim.close()
    print(f"model iris:1 registered in {SOURCE[2]} ({SOURCE[0]}), registry {REGISTRY[2]} created, in {state}")


if __name__ == "__main__":
    main()
