"""Reporters: countable progress as a bar on a terminal, a few lines in CI logs."""

from __future__ import annotations

import io
import sys

from rich.console import Console

from orchestrator.events import FanoutReporter, LineReporter, RecordingReporter, RichReporter


def test_line_reporter_prints_start_every_tenth_and_end():
    out = io.StringIO()
    rep = LineReporter(out)
    for done in range(0, 101):
        rep.advance("dev", "mini-batches", done, 100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[dev] mini-batches: 0/100 (0%)" and lines[-1] == "[dev] mini-batches: 100/100 (100%)"
    assert len(lines) == 11  # not one per mini-batch


def test_rich_reporter_draws_a_bar_and_closes_it_when_done():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, color_system=None)
    rep = RichReporter(console)
    for done in range(0, 5):
        rep.advance("dev", "mini-batches", done, 4)
    assert rep._bars is None  # finished: the live display is stopped, the console is free again
    text = buf.getvalue()
    assert "mini-batches" in text and "4/4" in text and "━" in text


def test_advance_reaches_every_reporter_of_a_fanout():
    a, b = RecordingReporter(), RecordingReporter()
    FanoutReporter(a, b).advance("dev", "files", 2, 5)
    assert a.events == b.events == [("advance", "dev", "files", 2, 5)]


def test_the_cli_gives_rich_a_real_console_on_a_terminal(monkeypatch):
    """rich's live displays use their console as a context manager: the CLI's lazy console must
    hand over the Console itself, or the first progress bar crashes on a terminal."""
    import orchestrator.cli as cli

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TF_BUILD", "")
    monkeypatch.setattr(cli, "err", cli._LazyConsole(stderr=True))
    run = cli._Run(cli.CIMode.none)
    assert isinstance(run.reporter, RichReporter) and isinstance(run.reporter.console, Console)
    for done in range(3):
        run.reporter.advance("dev", "mini-batches", done, 2)
    assert "mini-batches" in sys.stderr.getvalue()
