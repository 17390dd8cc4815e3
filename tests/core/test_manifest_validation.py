"""Every class of manifest error names the file, line, column and field, with a hint."""

from __future__ import annotations

import pytest

from orchestrator.errors import ManifestError
from orchestrator.manifest import load_manifest

from .conftest import BASE, MEMORY_TARGETS


def issues_of(path, **kw):
    with pytest.raises(ManifestError) as exc:
        load_manifest(path, use_environ=False, **kw)
    return exc.value.issues


def one(issues, field):
    found = [i for i in issues if i.field == field]
    assert found, f"no issue for {field}; got {[str(i) for i in issues]}"
    return found[0]


def test_valid_manifest_loads(project):
    loaded = load_manifest(project(), use_environ=False)
    m = loaded.manifest
    assert m.name == "credit-risk"
    assert [t.name for t in m.targets] == ["dev", "prod"]
    assert m.targets[1].size == 2  # the plugin's own config model was used
    assert m.model.path.is_absolute() and m.model.path.exists()
    assert m.scoring.type.value == "real-time"


def test_invalid_yaml_points_at_line_and_column(project):
    path = project("apiVersion: deployctl/v1\nname: [unclosed\n")
    (issue,) = issues_of(path)
    assert (issue.location.line, issue.location.column) == (3, 1)
    assert "invalid YAML" in issue.message
    assert issue.message == "invalid YAML: expected ',' or ']', but got '<stream end>'"
    # the problem is at the end of the file: the hint and the excerpt show where the list began
    assert issue.hint == "while parsing a flow sequence at line 2: a '[' is never closed, or a ',' is missing between items"
    assert str(issue).endswith("    2 | name: [unclosed\n      |       ^")


def test_unknown_field_with_did_you_mean(project):
    path = project(targets=MEMORY_TARGETS.replace("size: 2", "sise: 2"))
    issue = one(issues_of(path), "targets[1].sise")
    assert issue.message == "unknown field"
    assert issue.hint == "did you mean 'size'?"
    assert (issue.location.line, issue.location.column) == (16, 5)


def test_unknown_top_level_field(project):
    path = project(BASE.format(targets=MEMORY_TARGETS.rstrip()) + "scorring:\n  type: batch\n")
    issue = one(issues_of(path), "scorring")
    assert issue.hint == "did you mean 'scoring'?"
    assert issue.location.line == 17


def test_enum_lists_allowed_values(project):
    path = project(BASE.replace("type: real-time", "type: realtime").format(targets=MEMORY_TARGETS.rstrip()))
    issue = one(issues_of(path), "scoring.type")
    assert "'realtime'" in issue.message
    assert "real-time" in issue.hint and "near-real-time" in issue.hint and "batch" in issue.hint
    assert issue.location.line == 9


def test_wrong_type_says_what_is_expected(project):
    path = project(targets=MEMORY_TARGETS.replace("size: 2", "size: lots"))
    issue = one(issues_of(path), "targets[1].size")
    assert issue.message == "expected an integer"


def test_union_field_lists_every_accepted_form(project):
    text = BASE.format(targets=MEMORY_TARGETS.rstrip()) + "resources:\n  memory_gb: plenty\n"
    issue = one(issues_of(project(text)), "resources.memory_gb")
    assert "a number" in issue.hint and "'auto'" in issue.hint


def test_missing_required_field(project):
    path = project(BASE.replace("scoring:\n  type: real-time\n  sample_request: ./sample.json\n", "")
                   .format(targets=MEMORY_TARGETS.rstrip()))
    issue = one(issues_of(path), "scoring")
    assert issue.message == "required field is missing"


def test_paths_resolve_relative_to_manifest_and_must_exist(project):
    path = project(BASE.replace("./model.pkl", "./missing.pkl").format(targets=MEMORY_TARGETS.rstrip()))
    issue = one(issues_of(path), "model.path")
    assert "does not exist" in issue.message and "missing.pkl" in issue.message
    assert issue.location.line == 4


def test_entry_script_must_exist(project):
    path = project(BASE.replace("entry: score.py", "entry: scoring.py").format(targets=MEMORY_TARGETS.rstrip()))
    issue = one(issues_of(path), "code")
    assert "scoring.py" in issue.message


def test_unknown_target_kind_lists_installed_kinds(project):
    path = project(targets="  - name: dev\n    kind: memroy\n")
    issue = one(issues_of(path), "targets[0].kind")
    assert "not installed" in issue.message and "memory" in issue.message
    assert "Did you mean 'memory'?" in issue.message
    assert issue.location.line == 13


def test_unsupported_scoring_type_names_kinds_that_support_it(project):
    path = project(BASE.replace("type: real-time", "type: near-real-time").format(targets=MEMORY_TARGETS.rstrip()))
    issue = one(issues_of(path), "targets[0].kind")
    assert "does not support near-real-time" in issue.message
    assert "memory" not in (issue.hint or "").split("kinds that do: ")[-1].split(", ")


def test_duplicate_target_names_and_keys(project):
    path = project(targets="  - name: dev\n    kind: memory\n  - name: dev\n    kind: memory\n    kind: memory\n")
    issues = issues_of(path)
    assert "duplicate target name 'dev'" in one(issues, "targets[1].name").message
    assert "duplicate key" in one(issues, "targets[1].kind").message


def test_name_must_be_dns_safe(project):
    path = project(BASE.replace("name: credit-risk", "name: Credit_Risk").format(targets=MEMORY_TARGETS.rstrip()))
    issue = one(issues_of(path), "name")
    assert issue.message == "invalid value 'Credit_Risk'" and issue.location.line == 2


def test_model_needs_exactly_one_source(project):
    text = BASE.replace("  path: ./model.pkl\n", "  path: ./model.pkl\n  uri: azureml://registries/r/models/m/versions/1\n")
    issue = one(issues_of(project(text.format(targets=MEMORY_TARGETS.rstrip()))), "model")
    assert "exactly one of 'path' or 'uri'" in issue.message


def test_all_errors_are_reported_at_once_in_file_order(project):
    text = (BASE.replace("name: credit-risk", "name: X").replace("type: real-time", "type: nope")
            .format(targets=MEMORY_TARGETS.replace("size: 2", "size: -1\n    colour: red")))
    issues = issues_of(project(text))
    fields = [i.field for i in issues]
    assert {"name", "scoring.type", "targets[1].size", "targets[1].colour"} <= set(fields)
    lines = [i.location.line for i in issues]
    assert lines == sorted(lines)


def test_loading_never_executes_code(project, tmp_path):
    marker = tmp_path / "pwned"
    text = f"!!python/object/apply:os.system ['touch {marker}']\n"
    issue = issues_of(project(text))[0]
    assert not marker.exists()
    assert issue.message == "unsupported YAML tag !!python/object/apply:os.system"


def test_manifest_error_message_lists_every_issue(project):
    with pytest.raises(ManifestError) as exc:
        load_manifest(project(targets="  - name: dev\n    kind: nope\n"), use_environ=False)
    text = str(exc.value)
    assert text.startswith("1 problem in the manifest")
    assert "deployctl.yaml:13:11: targets[0].kind: target kind 'nope' is not installed" in text


def test_missing_manifest_file(tmp_path):
    (issue,) = issues_of(tmp_path / "nope.yaml")
    assert issue.message == "manifest file not found"


def test_load_from_string_and_dict(project):
    text = project().read_text()
    from_string = load_manifest(text, base_dir=project.dir, use_environ=False)
    import yaml

    from_dict = load_manifest(yaml.safe_load(text), base_dir=project.dir, use_environ=False)
    assert from_string.digest == from_dict.digest == load_manifest(project(), use_environ=False).digest
