"""One error hierarchy for deployctl.

Every error a user can cause or meet derives from :class:`DeployctlError` and carries a message
written for a person ("what went wrong" and, where we know it, "To fix: ...").  The CLI prints
these without a traceback and maps them to exit codes; anything else is a bug in deployctl and is
printed with its traceback.

- :class:`UserError` (exit 2): invalid input — a broken manifest, a missing file, a stale plan.
- :class:`TargetError` (exit 1): a target failed while planning or applying; names the target,
  the resource and the operation.
- :class:`TransientError`: an operation that may succeed if retried (the retry layer's signal).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


class DeployctlError(Exception):
    """Base class: an error with a message meant for the user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f"\nTo fix: {self.hint}" if self.hint else "")


class UserError(DeployctlError):
    """Invalid input: the user can fix it without touching the cloud. Exit code 2."""

    exit_code = 2


def display_path(path: Path | str) -> str:
    """A path for messages: relative to the working directory when below it (short, clickable),
    else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


@dataclass(frozen=True)
class Location:
    """Where in a file something is: 1-based line and column (0 when unknown)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


@dataclass(frozen=True)
class ManifestIssue:
    """One validation problem, located in the manifest."""

    location: Location
    field: str  # dotted path such as "targets[1].instance_count"; "" for the whole document
    message: str
    hint: str | None = None
    # The offending source line with a caret under the column, for problems a line shows best
    # (invalid YAML); printed under the message, never in CI annotations.
    excerpt: str | None = None

    def __str__(self) -> str:
        where = f"{self.location}: " + (f"{self.field}: " if self.field else "")
        text = where + self.message + (f" ({self.hint})" if self.hint else "")
        return text + "".join(f"\n    {line}" for line in self.excerpt.splitlines()) if self.excerpt else text


@dataclass
class ManifestError(UserError):
    """Every problem of a manifest at once, each with its file, line, column and field."""

    issues: list[ManifestIssue] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.issues)
        head = f"{n} problem{'s' if n != 1 else ''} in the manifest"
        UserError.__init__(self, head + ":\n" + "\n".join(f"  {i}" for i in self.issues))

    def __str__(self) -> str:
        return self.message

    __hash__ = Exception.__hash__


class PlanStaleError(UserError):
    """A saved plan no longer matches the manifest or the observed state."""


class ConcurrentApplyError(UserError):
    """Another deployctl process holds the lock on this deployment."""


class TargetError(DeployctlError):
    """A target failed. Names the target, the resource and the operation when known."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        resource: str | None = None,
        operation: str | None = None,
        hint: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.target = target
        self.resource = resource
        self.operation = operation
        self.retryable = retryable

    def __str__(self) -> str:
        where = " ".join(
            p for p in (
                f"target {self.target!r}" if self.target else "",
                f"{self.operation}" if self.operation else "",
                f"{self.resource}" if self.resource else "",
            ) if p
        )
        base = f"{where}: {self.message}" if where else self.message
        return base + (f"\nTo fix: {self.hint}" if self.hint else "")


class TransientError(TargetError):
    """A failure that is expected to go away: throttling, a busy resource, a dropped connection.

    ``retry_after`` (seconds) is the service's own advice when it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, reason: str = "transient", **kw):
        kw.setdefault("retryable", True)
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.reason = reason


class Interrupted(DeployctlError):
    """The user pressed Ctrl-C. Exit code 130."""

    exit_code = 130
