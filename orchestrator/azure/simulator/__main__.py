"""Inspect and seed a persisted simulated cloud (the file ``deployctl apply --simulate`` keeps).

    python -m orchestrator.azure.simulator show  STATE
    python -m orchestrator.azure.simulator add-model STATE SUB RG WS NAME VERSION PATH   # file or folder
    python -m orchestrator.azure.simulator quota STATE SUB REGION FAMILY LIMIT
    python -m orchestrator.azure.simulator deny  STATE SUB [--resource-group RG --workspace WS] [--principal P]
    python -m orchestrator.azure.simulator reset STATE      # stop its warm scorers, delete the file

``add-model`` is how a user rehearses a cross-subscription model copy: the source model must exist
in the simulated source workspace first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.azure.simulator import AzureSimulator
from orchestrator.azure.simulator.persist import Store
from orchestrator.azure.simulator.scorers import ScorerRegistry, home_of


def _files(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.azure.simulator", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    show = sub.add_parser("show", help="list the simulated resources")
    show.add_argument("state", type=Path)
    m = sub.add_parser("add-model", help="register a model version (its files uploaded) in a workspace")
    for a in ("state", "subscription", "resource_group", "workspace", "name", "version", "path"):
        m.add_argument(a, type=Path if a in ("state", "path") else str)
    q = sub.add_parser("quota", help="set a vCPU quota")
    for a in ("state", "subscription", "region", "family"):
        q.add_argument(a, type=Path if a == "state" else str)
    q.add_argument("limit", type=int)
    d = sub.add_parser("deny", help="answer 403 on a subscription or workspace")
    d.add_argument("state", type=Path)
    d.add_argument("subscription")
    d.add_argument("--resource-group")
    d.add_argument("--workspace")
    d.add_argument("--principal")
    r = sub.add_parser("reset", help="stop the cloud's warm scorers and delete its state file")
    r.add_argument("state", type=Path)
    args = ap.parse_args(argv)
    with Store(args.state).locked():  # not while a CLI run is writing the cloud
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "reset":
        stopped = ScorerRegistry(home_of(args.state)).reap(set())
        args.state.unlink(missing_ok=True)
        print(f"removed {args.state}; stopped {len(stopped)} warm scorer(s)")
        return 0
    try:
        sim = AzureSimulator.load(args.state, strict=False) if args.state.exists() else AzureSimulator(strict=False)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "show":
        for r in sorted(sim.state["resources"].values(), key=lambda r: r["id"].lower()):
            print(f"{r['properties'].get('provisioningState', ''):10} {r['id']}")
        return 0
    if args.cmd == "add-model":
        if not args.path.exists():
            print(f"error: {args.path}: no such file or folder", file=sys.stderr)
            return 2
        res = sim.add_model(args.subscription, args.resource_group, args.workspace, args.name, args.version,
                            _files(args.path), folder=args.path.name)
        print(res["id"])
    elif args.cmd == "quota":
        sim.set_quota(args.subscription, args.region, args.family, args.limit)
    elif args.cmd == "deny":
        sim.deny(subscription=args.subscription, resource_group=args.resource_group, workspace=args.workspace,
                 principal=args.principal)
    sim.save(args.state)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
