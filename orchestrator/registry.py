"""Find target plugins through the ``deployctl.targets`` entry-point group.

Built-in targets are registered in deployctl's own pyproject.toml exactly as a third party
registers theirs:

    [project.entry-points."deployctl.targets"]
    my-kind = "my_package.my_module:MyTarget"

A plugin that fails to import is reported (it does not break the other kinds).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points

from orchestrator.errors import UserError
from orchestrator.target import Target

GROUP = "deployctl.targets"


@dataclass
class TargetRegistry:
    plugins: dict[str, type[Target]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # kind -> why it could not be loaded

    @property
    def kinds(self) -> list[str]:
        return sorted(self.plugins)

    def get(self, kind: str) -> type[Target]:
        try:
            return self.plugins[kind]
        except KeyError:
            raise UserError(self.unknown_kind_message(kind)) from None

    def unknown_kind_message(self, kind: str) -> str:
        msg = f"target kind {kind!r} is not installed; installed kinds: {', '.join(self.kinds) or 'none'}"
        close = difflib.get_close_matches(kind, self.kinds, n=1)
        if close:
            msg += f". Did you mean {close[0]!r}?"
        if kind in self.broken:
            msg += f" (the {kind!r} plugin failed to load: {self.broken[kind]})"
        return msg

    def register(self, cls: type[Target]) -> None:
        for attr in ("kind", "scoring_types", "config_model"):
            if not hasattr(cls, attr):
                raise TypeError(f"{cls.__name__} is not a deployctl target: it has no {attr!r}")
        self.plugins[cls.kind] = cls


def _load_entry_points() -> TargetRegistry:
    reg = TargetRegistry()
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
            reg.register(cls)
            if cls.kind != ep.name:
                reg.broken[ep.name] = f"entry point {ep.name!r} names a target of kind {cls.kind!r}"
        except Exception as e:  # a broken third-party plugin must not break the others
            reg.broken[ep.name] = f"{type(e).__name__}: {e}"
    return reg


@lru_cache(maxsize=1)
def default_registry() -> TargetRegistry:
    """The installed targets (cached for the process)."""
    return _load_entry_points()
