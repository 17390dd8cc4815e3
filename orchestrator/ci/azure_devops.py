"""deployctl in Azure Pipelines: logging commands for annotations, secrets, output variables,
summaries and the task result.

The commands go to **stderr**, beside the progress lines, not stdout: stdout carries the
machine-readable output (``deployctl plan -o json > plan.json`` must stay valid JSON).  The agent
reads both streams of a task (NodeHandler wires ``OutputDataReceived`` and ``ErrorDataReceived``
to the same command parser) and the script tasks (Bash, CmdLine, PythonScript) forward their
child's stderr to their stdout, so commands on stderr are executed there too.

What is emitted, and when:

- ``task.setsecret`` the moment a target registers a secret (``Reporter.secret``), before any
  line can carry it; this line is the only one written without redaction.
- ``task.logissue type=warning`` for warnings (drift, quota, retried faults) and
  ``type=error;sourcepath;linenumber;columnnumber`` for each manifest problem.
- ``task.setvariable variable=<target>_<key>;isoutput=true`` for each output of each target that
  applied cleanly.  Non-scalar outputs (traffic) are compact JSON.  A value that contains a
  registered secret is never set (a warning says which one was skipped).
- ``task.uploadsummary`` with a markdown file of the plan or the apply result.
- ``task.complete``: 0 -> Succeeded (SucceededWithIssues when warnings were logged),
  3 (plan --detailed-exitcode: changes pending, a signal and not a failure) -> Succeeded,
  anything else -> Failed.
  The agent keeps the worst result a step reports, so this can never hide a later failure.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from orchestrator.ci import CIIntegration
from orchestrator.ci.summary import apply_markdown, plan_markdown
from orchestrator.ci.vso import format_command
from orchestrator.events import Reporter
from orchestrator.secrets import MASK, redact

if TYPE_CHECKING:
    from orchestrator.engine import ApplyResult
    from orchestrator.errors import ManifestError
    from orchestrator.plan import Plan

EXIT_PENDING = 3


def variable_name(target: str, key: str) -> str:
    """``dev-online`` + ``scoring_uri`` -> ``dev_online_scoring_uri``: letters, digits and ``_``
    only, so the name reads the same as ``$(step.name)``, in ``dependencies.<job>.outputs[...]``
    and as an environment variable."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{target}_{key}")


def output_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class _Writer:
    """One line per command, whole lines only (targets report from several threads)."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.warnings = 0
        self.errors = 0
        self.secrets: set[str] = set()  # every value sent with task.setsecret

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def emit(self, command: str, properties: Mapping[str, object] | None = None, message: object = "",
             *, raw: bool = False) -> None:
        text = "" if message is None else str(message)
        line = format_command(command, properties, text if raw else redact(text))
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class AzureDevOpsReporter(Reporter):
    """Engine events as logging commands; progress stays with the plain reporter beside it."""

    def __init__(self, writer: _Writer) -> None:
        self._w = writer
        self._progress: int | None = None

    def progress(self, target: str, message: str) -> None:
        pass  # the CLI's line reporter prints progress; no command needed

    def advance(self, target: str, what: str, done: int, total: int) -> None:
        # the task's percentage in the pipeline's UI (the line reporter beside this prints the text)
        value = 100 * done // total if total else 100
        if self._progress != value:
            self._progress = value
            self._w.emit("task.setprogress", {"value": value}, f"[{target}] {what}")

    def warning(self, target: str, message: str) -> None:
        self._w.warnings += 1
        self._w.emit("task.logissue", {"type": "warning"}, f"[{target}] {message}")

    def retrying(self, target: str, what: str, attempt: int, wait: float, reason: str) -> None:
        # A retried fault is worth seeing in the run's issues, but it is not a problem of the run.
        self._w.emit("task.logissue", {"type": "warning"},
                     f"[{target}] retrying {what} in {wait:.1f}s (attempt {attempt + 1}): {reason}")

    def change_finished(self, target: str, action: str, address: str, ok: bool, error: str | None = None) -> None:
        if not ok:
            self._w.errors += 1
            self._w.emit("task.logissue", {"type": "error"}, f"[{target}] {action} {address} failed: {error or ''}")

    def secret(self, value: str) -> None:
        if not value:
            return
        # Register the whole value and each of its lines: the agent masks line by line.
        parts = [value] + [ln for ln in value.splitlines() if ln.strip() and ln != value]
        for part in parts:
            if part in self._w.secrets:
                continue  # already masked; say it once
            self._w.secrets.add(part)
            self._w.emit("task.setsecret", None, part, raw=True)


class AzureDevOpsIntegration(CIIntegration):
    name = "azure-devops"

    def __init__(self, environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self._w = _Writer(stream)
        self._reporter = AzureDevOpsReporter(self._w)
        self.summaries: list[Path] = []
        self.variables: dict[str, str] = {}

    # -- CIIntegration ------------------------------------------------------------------------
    def reporter(self) -> Reporter:
        return self._reporter

    def manifest_error(self, err: ManifestError) -> None:
        for issue in err.issues:
            loc = issue.location
            props: dict[str, object] = {"type": "error", "sourcepath": loc.file}
            if loc.line:
                props["linenumber"] = loc.line
            if loc.column:
                props["columnnumber"] = loc.column
            text = (f"{issue.field}: " if issue.field else "") + issue.message
            if issue.hint:
                text += f" (to fix: {issue.hint})"
            self._w.errors += 1
            self._w.emit("task.logissue", props, text)

    def error(self, message: str) -> None:
        self._w.errors += 1
        self._w.emit("task.logissue", {"type": "error"}, message)

    def plan(self, plan: Plan) -> None:
        for tp in plan.targets:
            if tp.error:
                self.error(f"[{tp.target}] {tp.error}")
            for f in tp.findings:
                if f.severity.value in ("error", "warning"):
                    text = f"[{tp.target}] {f.message}" + (f" (to fix: {f.hint})" if f.hint else "")
                    if f.severity.value == "error":
                        self.error(text)
                    else:
                        self._reporter.warning(tp.target, f.message + (f" (to fix: {f.hint})" if f.hint else ""))
            for c in tp.changes:
                if c.drift:
                    paths = ", ".join(d.path for d in c.diff)
                    self._reporter.warning(tp.target, f"drift: {c.address} was changed outside deployctl ({paths})")
        self._upload_summary("deployctl-plan", plan_markdown(plan))

    def applied(self, result: ApplyResult) -> None:
        for t in result.targets:
            if not t.ok and t.error and not any(c.status == "failed" for c in t.changes):
                self.error(f"[{t.target}] {t.error.splitlines()[0]}")
            if not t.ok:
                continue  # outputs of a failed target are not facts later stages should use
            for key, value in t.outputs.items():
                self.set_output(t.target, key, value)
        self._upload_summary("deployctl-apply", apply_markdown(result))

    def complete(self, exit_code: int, message: str = "") -> None:
        if exit_code == 0:
            result = "SucceededWithIssues" if self._w.warnings else "Succeeded"
        elif exit_code == EXIT_PENDING:
            result = "SucceededWithIssues" if self._w.warnings else "Succeeded"
            message = message or "changes are pending"
        else:
            result = "Failed"
            message = message or f"deployctl exited with code {exit_code}"
        self._w.emit("task.complete", {"result": result}, message)

    # -- helpers ------------------------------------------------------------------------------
    def set_output(self, target: str, key: str, value: Any) -> None:
        text = output_value(value)
        if text is None:
            return
        name = variable_name(target, key)
        if redact(text) != text or MASK in text or any(s in text for s in self._w.secrets):
            self._reporter.warning(target, f"output {key!r} holds a secret; not set as variable {name}")
            return
        self.variables[name] = text
        self._w.emit("task.setvariable", {"variable": name, "isoutput": True}, text)

    def _summary_dir(self) -> Path:
        base = self.environ.get("AGENT_TEMPDIRECTORY")
        if base and Path(base).is_dir():
            return Path(base)
        return Path(tempfile.mkdtemp(prefix="deployctl-"))

    def _upload_summary(self, stem: str, markdown: str) -> None:
        path = self._summary_dir() / f"{stem}-{os.getpid()}-{len(self.summaries)}.md"
        path.write_text(redact(markdown), encoding="utf-8")
        self.summaries.append(path)
        self._w.emit("task.uploadsummary", None, str(path.absolute()))
