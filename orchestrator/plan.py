"""Plans: what apply will change, as a plain value you can print, save as JSON and apply later.

:func:`diff_target` is pure: desired resources and observed resources in, changes out.  A plan
records a fingerprint of what was observed and of what was desired, so ``deployctl apply
plan.json`` can refuse when either moved since the plan was made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.target import (
    TAG_MANIFEST,
    TAG_SPEC,
    TAG_TARGET,
    Addressed,
    Finding,
    Observed,
    Resource,
    Severity,
)

PLAN_FORMAT = "deployctl.plan/v1"


class Action(str, Enum):
    create = "create"
    update = "update"
    replace = "replace"  # type: ignore[assignment]  # shadows str.replace, deliberately
    delete = "delete"
    noop = "no-op"

    def __str__(self) -> str:
        return self.value


class FieldChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    before: Any = None
    after: Any = None


class Change(Addressed, BaseModel):
    """One resource's change. ``spec`` is the desired spec (empty for deletes)."""

    model_config = ConfigDict(frozen=True)

    action: Action
    type: str
    name: str
    reason: str
    key: str = ""
    spec: dict[str, Any] = Field(default_factory=dict)
    spec_hash: str = ""
    diff: list[FieldChange] = Field(default_factory=list)
    drift: bool = False


class TargetPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    target: str
    kind: str
    changes: list[Change] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    observed_digest: str = ""
    desired_digest: str = ""
    error: str | None = None
    error_kind: str | None = None  # "input" (exit 2) or "target" (exit 1)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action is not Action.noop]

    @property
    def blocked(self) -> bool:
        return self.error is not None or any(f.severity is Severity.error for f in self.findings)


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    format: str = PLAN_FORMAT
    manifest: str  # absolute path where the plan was made
    manifest_relative: str = ""  # the same, relative to the working directory then (another checkout, same layout)
    manifest_name: str
    manifest_digest: str
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    destroy: bool = False
    targets: list[TargetPlan]

    @property
    def has_changes(self) -> bool:
        return any(t.pending for t in self.targets)

    @property
    def blocked(self) -> bool:
        return any(t.blocked for t in self.targets)

    def counts(self) -> dict[str, int]:
        out = {a.value: 0 for a in Action}
        for t in self.targets:
            for c in t.changes:
                out[c.action.value] += 1
        return out

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.model_validate_json(text)

    def _repr_html_(self) -> str:
        from orchestrator.render import plan_html

        return plan_html(self)


# ---------------------------------------------------------------------------------------------
# Pure functions


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:length]


def spec_hash(spec: Mapping[str, Any]) -> str:
    return digest(spec, 12)


def ownership_tags(manifest_name: str, target_name: str, spec: Mapping[str, Any]) -> dict[str, str]:
    return {TAG_MANIFEST: manifest_name, TAG_TARGET: target_name, TAG_SPEC: spec_hash(spec)}


def observed_digest(observed: Iterable[Observed]) -> str:
    rows = sorted(
        [o.type, o.name, dict(o.spec), dict(o.tags), o.version] for o in observed
    )
    return digest(rows)


def desired_digest(desired: Iterable[Resource]) -> str:
    return digest([[r.type, r.name, dict(r.spec)] for r in desired])


def field_diff(desired: Mapping[str, Any], observed: Mapping[str, Any], prefix: str = "",
               exact: tuple[str, ...] = ()) -> list[FieldChange]:
    """Field-by-field differences of the managed fields (those in ``desired``).

    Fields the service adds on its own (defaults, read-only properties) are not in ``desired``
    and so are never reported as changes; top-level fields named in ``exact`` compare whole.
    """
    out: list[FieldChange] = []
    for k in sorted(desired):
        path = f"{prefix}.{k}" if prefix else k
        want, have = desired[k], observed.get(k) if isinstance(observed, Mapping) else None
        if isinstance(want, Mapping) and isinstance(have, Mapping) and k not in exact:
            out.extend(field_diff(want, have, path))
        elif want != have:
            out.append(FieldChange(path=path, before=have, after=want))
    return out


def owned_by(o: Observed, manifest_name: str, target_name: str) -> bool:
    return o.tags.get(TAG_MANIFEST) == manifest_name and o.tags.get(TAG_TARGET) == target_name


def diff_target(
    desired: list[Resource],
    observed: list[Observed],
    manifest_name: str,
    target_name: str,
) -> tuple[list[Change], list[Finding]]:
    """Changes that bring ``observed`` to ``desired``, and findings that block the plan.

    - desired, not observed: create
    - observed, ours, same spec hash and same fields: no-op
    - observed, ours, same spec hash but fields differ: update (drift: changed by hand)
    - observed, ours, different spec hash: update, or replace when a ``replace_on`` field changed
    - observed, not ours, at a desired address: an error finding (we never take over)
    - observed, ours, no longer desired: delete (in reverse dependency order)
    """
    by_addr = {o.address: o for o in observed}
    changes: list[Change] = []
    findings: list[Finding] = []
    for r in desired:
        spec = dict(r.spec)
        h = spec_hash(spec)
        o = by_addr.get(r.address)
        base: dict[str, Any] = dict(type=r.type, name=r.name, key=r.lock_key, spec=spec, spec_hash=h)
        if o is None:
            changes.append(Change(action=Action.create, reason="does not exist", **base))
            continue
        if not owned_by(o, manifest_name, target_name):
            owner = o.tags.get(TAG_MANIFEST)
            who = f"manifest {owner!r} target {o.tags.get(TAG_TARGET)!r}" if owner else "no deployctl manifest"
            findings.append(Finding(
                severity=Severity.error,
                message=f"{r.address} already exists and is owned by {who}; deployctl will not take it over",
                hint="choose another name, or delete the existing resource",
            ))
            continue
        diffs = field_diff(spec, o.spec, exact=r.exact)
        if o.tags.get(TAG_SPEC) == h:
            if diffs:
                changes.append(Change(action=Action.update, reason="drift: changed outside deployctl",
                                      diff=diffs, drift=True, **base))
            else:
                changes.append(Change(action=Action.noop, reason="up to date", **base))
            continue
        replace = [d.path for d in diffs if d.path.split(".")[0] in r.replace_on]
        if replace:
            changes.append(Change(action=Action.replace, reason=f"{', '.join(replace)} cannot change in place",
                                  diff=diffs, **base))
        else:
            changes.append(Change(action=Action.update, reason="spec changed" if diffs else "ownership tags out of date",
                                  diff=diffs, **base))
    wanted = {r.address for r in desired}
    for o in reversed(observed):
        if o.address not in wanted and owned_by(o, manifest_name, target_name):
            changes.append(Change(action=Action.delete, type=o.type, name=o.name, key=o.lock_key,
                                  reason=_deletion("no longer in the manifest", o)))
    return changes, findings


def destroy_changes(observed: list[Observed], manifest_name: str, target_name: str) -> list[Change]:
    """Deletes of everything this target owns, dependents first (``read`` lists parents first)."""
    return [
        Change(action=Action.delete, type=o.type, name=o.name, key=o.lock_key, reason=_deletion("destroy", o))
        for o in reversed(observed)
        if owned_by(o, manifest_name, target_name)
    ]


def _deletion(why: str, o: Observed) -> str:
    return f"{why}; {o.on_delete}" if o.on_delete else why
