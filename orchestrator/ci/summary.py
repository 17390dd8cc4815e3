"""Markdown summaries of a plan and of an apply, for the run's summary page (``task.uploadsummary``).

Pure: values in, markdown out.  Every cell passes ``redact``; ``|`` and newlines are escaped so
one change stays one table row.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from orchestrator.secrets import redact

if TYPE_CHECKING:
    from orchestrator.engine import ApplyResult
    from orchestrator.plan import Plan

_ICON = {"create": "➕", "update": "✏️", "replace": "♻️", "delete": "🗑️", "no-op": "·"}


def cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return redact(text).replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def plan_markdown(plan: Plan) -> str:
    n = plan.counts()
    title = f"## deployctl plan: {cell(plan.manifest_name)}" + (" (destroy)" if plan.destroy else "")
    lines = [title, "",
             f"**{n['create']}** to create, **{n['update']}** to update, **{n['replace']}** to replace, "
             f"**{n['delete']}** to delete, {n['no-op']} unchanged.", ""]
    if plan.blocked:
        lines += ["> **Blocked:** apply will not run until the errors below are fixed.", ""]
    lines += ["| target | action | resource | why |", "|---|---|---|---|"]
    for tp in plan.targets:
        if tp.error:
            lines.append(f"| {cell(tp.target)} | ❌ error | | {cell(tp.error)} |")
        for c in tp.changes:
            why = c.reason + "".join(f"<br>`{cell(d.path)}`: {cell(d.before)} → {cell(d.after)}" for d in c.diff)
            lines.append(f"| {cell(tp.target)} | {_ICON[c.action.value]} {c.action.value} | `{cell(c.address)}` | {why} |")
        for f in tp.findings:
            lines.append(f"| {cell(tp.target)} | {f.severity.value} | | {cell(f.message)}"
                         + (f"<br>To fix: {cell(f.hint)}" if f.hint else "") + " |")
    lines += ["", f"Manifest `{cell(plan.manifest)}` (digest `{plan.manifest_digest}`), planned {plan.created_at}.", ""]
    return "\n".join(lines)


def apply_markdown(result: ApplyResult) -> str:
    ok = sum(1 for t in result.targets if t.ok)
    head = "✅ applied" if result.ok else ("⏹️ interrupted" if result.interrupted else "❌ failed")
    lines = [f"## deployctl apply: {head}", "",
             f"{ok} of {len(result.targets)} target{'s' if len(result.targets) != 1 else ''} succeeded.", "",
             "| target | kind | result | changes | detail |", "|---|---|---|---|---|"]
    for t in result.targets:
        done = sum(1 for c in t.changes if c.status == "done")
        detail = t.error or ""
        lines.append(f"| {cell(t.target)} | {cell(t.kind)} | {'✅ ok' if t.ok else '❌ failed'} | "
                     f"{done}/{len(t.changes)} | {cell(detail)} |")
    outs = [(t.target, k, v) for t in result.targets if t.ok for k, v in t.outputs.items() if v is not None]
    if outs:
        lines += ["", "### Outputs", "", "| target | output | value |", "|---|---|---|"]
        lines += [f"| {cell(t)} | {cell(k)} | {cell(v)} |" for t, k, v in outs]
    failed = [(t.target, c) for t in result.targets for c in t.changes if c.status != "done"]
    if failed:
        lines += ["", "### Changes not done", "", "| target | change | state | error |", "|---|---|---|---|"]
        lines += [f"| {cell(t)} | {c.action.value} `{cell(c.address)}` | {c.status} | {cell(c.error or '')} |"
                  for t, c in failed]
    lines.append("")
    return "\n".join(lines)
