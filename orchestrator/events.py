"""What the engine tells the person (or pipeline) watching: progress, retries, warnings, outcomes.

A :class:`Reporter` receives events; the CLI picks a renderer (rich on a TTY, plain lines in CI,
Azure Pipelines logging commands under ``TF_BUILD``).  The engine never prints.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

from orchestrator.secrets import redact


def escape(text: str) -> str:
    """Text from users, models or services inside rich markup: printed as written (a pattern's
    ``[a-z]`` is not a style tag).  rich is imported only when something is printed with it."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)

log = logging.getLogger("deployctl")


class Reporter:
    """Base reporter: logs everything through the ``deployctl`` logger. Override what you render."""

    def progress(self, target: str, message: str) -> None:
        log.info("[%s] %s", target, message)

    def warning(self, target: str, message: str) -> None:
        log.warning("[%s] %s", target, message)

    def advance(self, target: str, what: str, done: int, total: int) -> None:
        """Countable progress (``done`` of ``total`` mini-batches, files...): a bar on a terminal."""
        self.progress(target, f"{what}: {done}/{total}")

    def retrying(self, target: str, what: str, attempt: int, wait: float, reason: str) -> None:
        self.warning(target, f"retrying {what} in {wait:.1f}s (attempt {attempt + 1}): {reason}")

    def change_started(self, target: str, action: str, address: str) -> None:
        self.progress(target, f"{action} {address} ...")

    def change_finished(self, target: str, action: str, address: str, ok: bool, error: str | None = None) -> None:
        self.progress(target, f"{action} {address}: {'done' if ok else 'FAILED: ' + (error or '')}")

    def target_finished(self, target: str, ok: bool, outputs: dict[str, Any] | None = None) -> None:
        self.progress(target, "succeeded" if ok else "failed")

    def secret(self, value: str) -> None:
        """A secret was registered (pipelines mask it in their own logs)."""


class LineReporter(Reporter):
    """Plain timestamp-free lines on a stream: what CI logs want. Thread-safe."""

    def __init__(self, stream: TextIO | None = None, clean: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.clean = clean or (lambda text: text)
        self._lock = threading.Lock()
        self._steps: dict[tuple[str, str], int] = {}  # advance(): the last tenth printed

    def _write(self, line: str) -> None:
        with self._lock:
            self.stream.write(self.clean(redact(line)) + "\n")
            self.stream.flush()

    def progress(self, target: str, message: str) -> None:
        self._write(f"[{target}] {message}")

    def warning(self, target: str, message: str) -> None:
        self._write(f"[{target}] warning: {message}")

    def advance(self, target: str, what: str, done: int, total: int) -> None:
        # A CI log gets the start, every tenth and the end, not a line per mini-batch.
        step = 10 * done // total if total else 10
        with self._lock:
            if self._steps.get((target, what)) == step:
                return
            self._steps[(target, what)] = step
        pct = 100 * done // total if total else 100
        self._write(f"[{target}] {what}: {done}/{total} ({pct}%)")


class RecordingReporter(Reporter):
    """Keeps every event as a tuple; for tests and for the Python API's results."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def _add(self, *e: Any) -> None:
        with self._lock:
            self.events.append(e)

    def progress(self, target: str, message: str) -> None:
        self._add("progress", target, message)

    def warning(self, target: str, message: str) -> None:
        self._add("warning", target, message)

    def advance(self, target: str, what: str, done: int, total: int) -> None:
        self._add("advance", target, what, done, total)

    def retrying(self, target: str, what: str, attempt: int, wait: float, reason: str) -> None:
        self._add("retrying", target, what, attempt, wait, reason)

    def change_started(self, target: str, action: str, address: str) -> None:
        self._add("started", target, action, address)

    def change_finished(self, target: str, action: str, address: str, ok: bool, error: str | None = None) -> None:
        self._add("finished", target, action, address, ok, error)

    def target_finished(self, target: str, ok: bool, outputs: dict[str, Any] | None = None) -> None:
        self._add("target", target, ok, outputs)

    def secret(self, value: str) -> None:
        self._add("secret", "***")


class FanoutReporter(Reporter):
    """Sends every event to several reporters."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_") or name == "reporters":
            return object.__getattribute__(self, name)

        def call(*a: Any, **k: Any) -> None:
            for r in object.__getattribute__(self, "reporters"):
                getattr(r, name)(*a, **k)

        return call


class RichReporter(Reporter):
    """For a terminal: coloured lines plus a spinner naming what is running right now."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}
        self._status = console.status("", spinner="dots")
        self._started = False
        self._bars: Any = None  # a rich Progress while something countable runs
        self._tasks: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> RichReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._status.stop()
        if self._bars is not None:
            self._bars.stop()

    def _refresh(self) -> None:
        text = "  ".join(f"[bold]{escape(t)}[/]: {escape(what)}" for t, what in self._running.items())
        if text:
            self._status.update(text)
            if not self._started:
                self._status.start()
                self._started = True
        elif self._started:
            self._status.stop()
            self._started = False

    def _print(self, line: str) -> None:
        self.console.print(redact(line), highlight=False)

    def progress(self, target: str, message: str) -> None:
        with self._lock:
            if target in self._running:
                self._running[target] = redact(message)
                self._refresh()
            else:
                self._print(f"[dim]\\[{escape(target)}][/] {escape(redact(message))}")

    def warning(self, target: str, message: str) -> None:
        with self._lock:
            self._print(f"[yellow]\\[{escape(target)}] warning:[/] {escape(redact(message))}")

    def advance(self, target: str, what: str, done: int, total: int) -> None:
        with self._lock:
            if self._started:  # one live display at a time: the spinner's line says it instead
                self._running[target] = f"{what} {done}/{total}"
                self._refresh()
                return
            if self._bars is None:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                )

                self._bars = Progress(TextColumn("[dim]\\[{task.fields[target]}][/] {task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), console=self.console)
                self._bars.start()
            key = (target, what)
            if key not in self._tasks:
                self._tasks[key] = self._bars.add_task(escape(redact(what)), total=total, target=escape(target))
            self._bars.update(self._tasks[key], completed=done, total=total)
            if all(t.finished for t in self._bars.tasks):
                self._bars.stop()
                self._bars, self._tasks = None, {}

    def change_started(self, target: str, action: str, address: str) -> None:
        with self._lock:
            self._running[target] = f"{action} {address}"
            self._refresh()

    def change_finished(self, target: str, action: str, address: str, ok: bool, error: str | None = None) -> None:
        with self._lock:
            self._running.pop(target, None)
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self._print(f"{mark} [dim]\\[{escape(target)}][/] {action} {escape(address)}"
                        + ("" if ok else f": {escape(redact(error or ''))}"))
            self._refresh()

    def target_finished(self, target: str, ok: bool, outputs: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._running.pop(target, None)
            self._refresh()
