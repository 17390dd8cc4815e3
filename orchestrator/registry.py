"""Find target plugins through the ``deployctl.targets`` entry-point group.

Built-in targets are registered in deployctl's own pyproject.toml exactly as a third party
registers theirs:

    [project.entry-points."deployctl.targets"]
    my-kind = "my_package.my_module:MyTarget"

deployctl's own kinds are read from deployctl's own distribution, and they win: a package that
registers a built-in kind's name (``local``, ``online-endpoint``...) is ignored and reported
(``deployctl targets``), never run in its place.  Other distributions are scanned only when a
kind that is not built in is asked for, or all kinds are listed: the scan reads every installed
distribution's metadata (5-8 ms of a no-op apply's ~0.3 s).

A plugin that fails to import is reported (it does not break the other kinds).  A Python module
a target needs and does not find — at import or when it first uses its SDK — is one line naming
the package and the command that installs it (:func:`missing_module_error`), never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UserError

if TYPE_CHECKING:  # at run time plugins are checked by their attributes; no import cycle with
    from orchestrator.target import Target  # target -> manifest -> validate -> registry

GROUP = "deployctl.targets"
OWN_DIST = "deployctl"


@dataclass
class TargetRegistry:
    """Installed target kinds.  Plugins are imported only when a kind is used (``get``), so a
    command touching one kind never pays for importing the others; ``plugins`` loads them all
    (``deployctl targets``, ``deployctl schema``, and error messages that list capabilities)."""

    loaded: dict[str, type[Target]] = field(default_factory=dict)
    entry_points: dict[str, Any] = field(default_factory=dict)  # kind -> importlib EntryPoint, not loaded yet
    broken: dict[str, str] = field(default_factory=dict)  # kind -> why it could not be loaded
    dists: dict[str, str] = field(default_factory=dict)  # kind -> the distribution that installed it
    # kind -> the other distributions that also register it (ignored: the first registration wins)
    shadowed: dict[str, list[str]] = field(default_factory=dict)
    # the rest of the installed kinds, read on first need (None: none left to read)
    more: Callable[[], list[Any]] | None = None

    def _complete(self) -> None:
        """Add the kinds ``more`` finds; a name already taken is recorded as shadowed."""
        more, self.more = self.more, None
        if more is None:
            return
        for ep in more():
            if not (ep.name in self.loaded or ep.name in self.entry_points or ep.name in self.broken):
                self.entry_points[ep.name] = ep
                continue
            dist, first = _dist_of(ep), self.dists.get(ep.name) or _dist_of(self.entry_points.get(ep.name))
            if dist and first and _normalized(dist) != _normalized(first):  # not the same one found again
                self.shadowed.setdefault(ep.name, []).append(dist)

    @property
    def kinds(self) -> list[str]:
        self._complete()
        return sorted(set(self.loaded) | set(self.entry_points))

    def has(self, kind: str) -> bool:
        if kind not in self.loaded and kind not in self.entry_points:
            self._complete()
        return kind in self.loaded or kind in self.entry_points

    def get(self, kind: str) -> type[Target]:
        if not self.has(kind):
            raise UserError(self.unknown_kind_message(kind))
        if kind not in self.loaded:
            self._load(kind)
        try:
            return self.loaded[kind]
        except KeyError:
            raise UserError(self.unknown_kind_message(kind)) from None

    @property
    def plugins(self) -> dict[str, type[Target]]:
        self._complete()
        for kind in list(self.entry_points):
            self._load(kind)
        return dict(self.loaded)

    def _load(self, kind: str) -> None:
        ep = self.entry_points.pop(kind)
        dist = getattr(ep, "dist", None)
        if dist is not None:
            self.dists[kind] = dist.name
        try:
            cls = ep.load()
            self.register(cls)
            if cls.kind != kind:
                self.broken[kind] = f"entry point {kind!r} names a target of kind {cls.kind!r}"
        except ModuleNotFoundError as e:
            self.broken[kind] = missing_module_error(e, needed_by=f"the {kind!r} target",
                                                     dist=self.dists.get(kind)).message
        except Exception as e:  # a broken third-party plugin must not break the others
            self.broken[kind] = f"{type(e).__name__}: {e}"

    def missing_module(self, kind: str, e: ModuleNotFoundError) -> MissingModuleError:
        """``e``, met while the ``kind`` target ran, as one line naming what to install."""
        return missing_module_error(e, needed_by=f"the {kind!r} target", dist=self.dists.get(kind))

    def unknown_kind_message(self, kind: str) -> str:
        self._complete()
        if kind in self.broken:
            return f"the {kind!r} target plugin failed to load: {self.broken[kind]}"
        kinds = [k for k in self.kinds if k not in self.broken]
        msg = f"target kind {kind!r} is not installed; installed kinds: {', '.join(kinds) or 'none'}"
        import difflib

        close = difflib.get_close_matches(kind, kinds, n=1)
        if close:
            msg += f". Did you mean {close[0]!r}?"
        return msg

    def register(self, cls: type[Target]) -> None:
        for attr in ("kind", "scoring_types", "config_model"):
            if not hasattr(cls, attr):
                raise TypeError(f"{cls.__name__} is not a deployctl target: it has no {attr!r}")
        self.loaded[cls.kind] = cls


class MissingModuleError(UserError):
    """A Python module deployctl or a target needs is not installed (exit 2: fixed by installing
    it, without touching the cloud)."""


def missing_module_error(e: ModuleNotFoundError, *, needed_by: str, dist: str | None = "deployctl") -> MissingModuleError:
    """One line: who needs which module, the package(s) that provide it and the command that
    installs them into this interpreter.  The packages are those of ``dist``'s declared
    requirements named like the module (``azure.ai.ml`` is ``azure-ai-ml``; ``azure`` is every
    ``azure-*``), so it holds for third-party plugins as for deployctl's own targets."""
    import shlex
    import sys

    module = e.name or str(e)
    reqs = _requirements_named_like(module, dist) if dist else []
    pip = f"{shlex.quote(sys.executable or 'python')} -m pip install"
    if reqs:
        names = ", ".join(name for name, _ in reqs)
        return MissingModuleError(f"{needed_by} needs the Python module {module!r} (package{'s' if len(reqs) > 1 else ''} {names}), which is not "
                                  f"installed; install it with: {pip} {' '.join(shlex.quote(r) for _, r in reqs)}")
    why = f"{dist} does not declare it" if dist else "no installed package declares it"
    return MissingModuleError(f"{needed_by} needs the Python module {module!r}, which is not installed ({why}); "
                              f"install the package that provides it with: {pip} <package>")


def _requirements_named_like(module: str, dist: str) -> list[tuple[str, str]]:
    """(name, requirement without markers) of ``dist``'s requirements that provide ``module``."""
    import re
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires(dist) or []
    except PackageNotFoundError:
        return []
    dotted = re.sub(r"[-_.]+", ".", module.lower())
    out: list[tuple[str, str]] = []
    for req in declared:
        spec = req.split(";")[0].strip()
        name = re.split(r"[\s<>=!~\[(]", spec, maxsplit=1)[0]
        norm = re.sub(r"[-_.]+", ".", name.lower())
        if (norm == dotted or norm.startswith(dotted + ".") or dotted.startswith(norm + ".")) \
                and all(spec != s for _, s in out):
            out.append((name, spec))
    return out


def _normalized(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name.lower())


def _dist_of(ep: Any) -> str | None:
    return getattr(getattr(ep, "dist", None), "name", None)


def _load_entry_points() -> TargetRegistry:
    """deployctl's own kinds now; the other distributions' when first needed (see the module
    docstring).  Without deployctl's metadata (run from a bare source tree), everything is
    scanned at once, first registration winning."""
    try:
        own = [ep for ep in distribution(OWN_DIST).entry_points if ep.group == GROUP]
    except PackageNotFoundError:
        own = []
    registry = TargetRegistry(more=lambda: list(entry_points(group=GROUP)))
    for ep in own:
        registry.entry_points.setdefault(ep.name, ep)
    if not own:
        registry._complete()
    return registry


@lru_cache(maxsize=1)
def default_registry() -> TargetRegistry:
    """The installed targets (cached for the process)."""
    return _load_entry_points()
