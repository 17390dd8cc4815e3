"""${VAR} and ${VAR:-default} from the environment and --var, located when unset."""

from __future__ import annotations

import pytest

from orchestrator.errors import ManifestError
from orchestrator.manifest import load_manifest
from orchestrator.manifest.source import substitute

from .conftest import BASE

TARGETS = """\
  - name: ${TARGET_NAME:-dev}
    kind: memory
    size: ${SIZE}
"""


def test_substitute_pure():
    assert substitute("a ${X} b", {"X": "1"}) == ("a 1 b", ["X"], [])
    assert substitute("${X:-fallback}", {}) == ("fallback", ["X"], [])
    assert substitute("${X:-}", {}) == ("", ["X"], [])
    assert substitute("$${X}", {"X": "1"}) == ("${X}", [], [])
    assert substitute("${Y}", {}) == ("${Y}", ["Y"], ["Y"])


def test_variables_from_vars_override_environment(project, monkeypatch):
    monkeypatch.setenv("SIZE", "3")
    m = load_manifest(project(targets=TARGETS), variables={"SIZE": "5"}).manifest
    assert m.targets[0].size == 5
    assert m.targets[0].name == "dev"
    m = load_manifest(project(targets=TARGETS)).manifest
    assert m.targets[0].size == 3


def test_unset_variable_is_located(project, monkeypatch):
    monkeypatch.delenv("SIZE", raising=False)
    with pytest.raises(ManifestError) as exc:
        load_manifest(project(targets=TARGETS), use_environ=False)
    (issue,) = [i for i in exc.value.issues if "SIZE" in i.message]
    assert issue.message == "variable ${SIZE} is not set"
    assert issue.field == "targets[0].size"
    assert (issue.location.line, issue.location.column) == (14, 11)
    assert "--var SIZE=" in issue.hint


def test_variable_values_do_not_leak_into_errors(project):
    text = BASE.format(targets="  - name: dev\n    kind: memory").replace("name: credit-risk", "name: ${SECRET_NAME}")
    with pytest.raises(ManifestError) as exc:
        load_manifest(project(text), variables={"SECRET_NAME": "Top_Secret_Value"}, use_environ=False)
    assert "Top_Secret_Value" not in str(exc.value)
    assert exc.value.issues[0].field == "name"
