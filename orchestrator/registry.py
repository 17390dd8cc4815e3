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
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UserError

if TYPE_CHECKING:  # at run time plugins are checked by their attributes; no import cycle with
    from orchestrator.target import Target  # target -> manifest -> validate -> registry

GROUP = "deployctl.targets"


@dataclass
class TargetRegistry:
    """Installed target kinds.  Plugins are imported only when a kind is used (``get``), so a
    command touching one kind never pays for importing the others; ``plugins`` loads them all
    (``deployctl targets``, ``deployctl schema``, and error messages that list capabilities)."""

    loaded: dict[str, type[Target]] = field(default_factory=dict)
    entry_points: dict[str, Any] = field(default_factory=dict)  # kind -> importlib EntryPoint, not loaded yet
    broken: dict[str, str] = field(default_factory=dict)  # kind -> why it could not be loaded

    @property
    def kinds(self) -> list[str]:
        return sorted(set(self.loaded) | set(self.entry_points))

    def has(self, kind: str) -> bool:
        return kind in self.loaded or kind in self.entry_points

    def get(self, kind: str) -> type[Target]:
        if kind not in self.loaded and kind in self.entry_points:
            self._load(kind)
        try:
            return self.loaded[kind]
        except KeyError:
            raise UserError(self.unknown_kind_message(kind)) from None

    @property
    def plugins(self) -> dict[str, type[Target]]:
        for kind in list(self.entry_points):
            self._load(kind)
        return dict(self.loaded)

    def _load(self, kind: str) -> None:
        ep = self.entry_points.pop(kind)
        try:
            cls = ep.load()
            self.register(cls)
            if cls.kind != kind:
                self.broken[kind] = f"entry point {kind!r} names a target of kind {cls.kind!r}"
        except Exception as e:  # a broken third-party plugin must not break the others
            self.broken[kind] = f"{type(e).__name__}: {e}"

    def unknown_kind_message(self, kind: str) -> str:
        if kind in self.broken:
            return f"the {kind!r} target plugin failed to load: {self.broken[kind]}"
        kinds = [k for k in self.kinds if k not in self.broken]
        msg = f"target kind {kind!r} is not installed; installed kinds: {', '.join(kinds) or 'none'}"
        close = difflib.get_close_matches(kind, kinds, n=1)
        if close:
            msg += f". Did you mean {close[0]!r}?"
        return msg

    def register(self, cls: type[Target]) -> None:
        for attr in ("kind", "scoring_types", "config_model"):
            if not hasattr(cls, attr):
                raise TypeError(f"{cls.__name__} is not a deployctl target: it has no {attr!r}")
        self.loaded[cls.kind] = cls


def _load_entry_points() -> TargetRegistry:
    return TargetRegistry(entry_points={ep.name: ep for ep in entry_points(group=GROUP)})


@lru_cache(maxsize=1)
def default_registry() -> TargetRegistry:
    """The installed targets (cached for the process)."""
    return _load_entry_points()
