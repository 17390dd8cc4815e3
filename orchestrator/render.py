"""Turn plans, results and statuses into text (rich tables or plain lines) and HTML (notebooks).

Pure formatting: values in, strings or rich renderables out.  Everything passes ``redact``.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from orchestrator.secrets import redact

if TYPE_CHECKING:
    from rich.table import Table

    from orchestrator.engine import ApplyResult, TargetStatus
    from orchestrator.plan import Plan
    from orchestrator.target import SmokeTest

_STYLE = {"create": "green", "update": "yellow", "replace": "magenta", "delete": "red", "no-op": "dim"}
_SYMBOL = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "no-op": " "}


def _short(v: Any, width: int = 60) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    s = redact(s)
    return s if len(s) <= width else s[: width - 1] + "…"


def plan_table(plan: Plan) -> Table:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(f"Plan for {plan.manifest_name}" + (" (destroy)" if plan.destroy else "")), expand=False)
    for col in ("target", "action", "resource", "why / what changes"):
        t.add_column(col)
    # Cells are Text, never markup: an address, a reason or a value may hold '[a-z]'.
    for tp in plan.targets:
        if tp.error:
            t.add_row(Text(tp.target), Text("error", style="bold red"), "", Text(redact(tp.error)))
        for c in tp.changes:
            what = c.reason
            if c.diff:
                what += "\n" + "\n".join(f"{d.path}: {_short(d.before, 30)} → {_short(d.after, 30)}" for d in c.diff)
            t.add_row(Text(tp.target), Text(f"{_SYMBOL[c.action.value]} {c.action.value}", style=_STYLE[c.action.value]),
                      Text(c.address), Text(redact(what)))
        for f in tp.findings:
            style = {"error": "bold red", "warning": "yellow", "info": "cyan"}[f.severity.value]
            t.add_row(Text(tp.target), Text(f.severity.value, style=style), "",
                      Text(redact(f.message + (f"\nTo fix: {f.hint}" if f.hint else ""))))
    n = plan.counts()
    t.caption = (f"{n['create']} to create, {n['update']} to update, {n['replace']} to replace, "
                 f"{n['delete']} to delete, {n['no-op']} unchanged")
    return t


def plan_lines(plan: Plan) -> list[str]:
    lines = []
    for tp in plan.targets:
        if tp.error:
            lines.append(f"{tp.target}: error: {redact(tp.error)}")
        for c in tp.changes:
            lines.append(f"{tp.target}: {_SYMBOL[c.action.value]:>3} {c.action.value:<7} {c.address}  ({c.reason})")
            for d in c.diff:
                lines.append(f"{'':>16}{d.path}: {_short(d.before)} -> {_short(d.after)}")
        for f in tp.findings:
            lines.append(f"{tp.target}: {f.severity.value}: {redact(f.message)}" + (f" (to fix: {f.hint})" if f.hint else ""))
    n = plan.counts()
    lines.append(f"Plan: {n['create']} to create, {n['update']} to update, {n['replace']} to replace, "
                 f"{n['delete']} to delete, {n['no-op']} unchanged.")
    return lines


def apply_lines(result: ApplyResult) -> list[str]:
    lines = []
    for t in result.targets:
        state = "ok" if t.ok else "FAILED"
        counts = {status: sum(1 for c in t.changes if c.status == status)
                  for status in ("done", "failed", "interrupted", "not-started")}
        summary = f"{counts['done']} change(s) applied" + "".join(
            f", {n} {status.replace('-', ' ')}" for status, n in counts.items() if status != "done" and n)
        lines.append(f"{t.target} ({t.kind}): {state}, {summary}")
        for c in t.changes:
            if c.status != "done":
                lines.append(f"  {c.status}: {c.action.value} {c.address}" + (f": {redact(c.error)}" if c.error else ""))
        if t.error and not t.changes:
            lines.append(f"  {redact(t.error)}")
        if t.smoke_test is not None:
            lines.append(f"  smoke test: {smoke_text(t.smoke_test)}")
        elif any(c.status == "done" and c.action.value != "delete" for c in t.changes):
            lines.append("  smoke test: not run (no scoring.sample_request, or this kind runs none on apply)")
        for k, v in t.outputs.items():
            lines.append(f"  {k}: {_short(v, 100)}")
    if result.interrupted:
        lines.append("Interrupted: running operations were allowed to finish; nothing new was started.")
    return lines


def smoke_text(smoke: SmokeTest) -> str:
    """``passed (HTTP 200, 41 ms)`` / ``FAILED (HTTP 500, 12 ms): what went wrong``."""
    facts = [f"HTTP {smoke.status}" if isinstance(smoke.status, int) else smoke.status or "",
             f"{smoke.latency_ms:.0f} ms" if smoke.latency_ms is not None else ""]
    facts = [f for f in facts if f]
    text = ("passed" if smoke.passed else "FAILED") + (f" ({', '.join(facts)})" if facts else "")
    return text + (f": {_short(smoke.detail, 200)}" if smoke.detail and not smoke.passed else "")


def status_lines(statuses: list[TargetStatus], show_keys: bool = False) -> list[str]:
    lines = []
    for s in statuses:
        lines.append(f"{s.target} ({s.kind})" + (f": error: {redact(s.error)}" if s.error else ""))
        for r in s.resources:
            lines.append(f"  {r.state:<9} {r.address}" + (f"  ({r.detail})" if r.detail else ""))
        for k, v in s.outputs.items():
            lines.append(f"  {k}: {_short(v, 100)}")
        if show_keys:
            for k, v in s.secrets.items():
                lines.append(f"  {k}: {v}")
    return lines


def _html_rows(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plan_html(plan: Plan) -> str:
    rows = []
    for tp in plan.targets:
        if tp.error:
            rows.append([tp.target, "error", "", redact(tp.error)])
        for c in tp.changes:
            what = c.reason + "".join(f"; {d.path}: {_short(d.before, 30)} → {_short(d.after, 30)}" for d in c.diff)
            rows.append([tp.target, c.action.value, c.address, what])
        for f in tp.findings:
            rows.append([tp.target, f.severity.value, "", redact(f.message)])
    return f"<b>Plan for {html.escape(plan.manifest_name)}</b>" + _html_rows(rows, ["target", "action", "resource", "why"])


def apply_html(result: ApplyResult) -> str:
    rows = [[t.target, "ok" if t.ok else "failed", str(t.writes), smoke_text(t.smoke_test) if t.smoke_test else "",
             redact(t.error or ""), ", ".join(f"{k}={_short(v, 40)}" for k, v in t.outputs.items())]
            for t in result.targets]
    return _html_rows(rows, ["target", "result", "changes", "smoke test", "error", "outputs"])


def status_html(statuses: list[TargetStatus]) -> str:
    rows = [[s.target, r.state, r.address, r.detail] for s in statuses for r in s.resources]
    return _html_rows(rows, ["target", "state", "resource", "detail"])
