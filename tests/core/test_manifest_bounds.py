"""Manifests that used to be dropped silently, crash, hang or exhaust memory (issue 10, items 4,
6 and 7): each ends in a located error (exit 2) in bounded time and memory."""

from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import ManifestError
from orchestrator.manifest import load_manifest
from orchestrator.packaging import UnsupportedFileError, archive_tree, tree_digest
from tests.conftest import subprocess_env

from .conftest import BASE, MEMORY_TARGETS

TARGET_NAME_PATTERN = "^[a-z][a-z0-9-]{0,23}$"
runner = CliRunner()


def issues_of(source, **kw):
    started = time.monotonic()
    with pytest.raises(ManifestError) as exc:
        load_manifest(source, use_environ=False, **kw)
    assert time.monotonic() - started < 10, "validation must stay fast, whatever the input"
    return exc.value.issues


def only(issues, field=None):
    assert len(issues) == 1, [str(i) for i in issues]
    if field is not None:
        assert issues[0].field == field, str(issues[0])
    return issues[0]


def finishes(fn, seconds=10.0):
    """Run ``fn`` in a daemon thread: a regression that blocks (a FIFO opened for reading) fails
    the test instead of hanging the suite."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (blocked on a special file?)"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


# -- item 4: invalid target names -------------------------------------------------------------
@pytest.mark.parametrize("name", ["Dev", "prod_eu", "dev "])
def test_an_invalid_target_name_is_an_error_at_its_line(project, name):
    path = project(targets=f'  - name: "{name}"\n    kind: memory\n')
    issue = only(issues_of(path), "targets[0].name")
    assert (issue.location.line, issue.location.column) == (12, 11)
    assert issue.message == f"invalid value {name!r}"  # repr: a trailing space shows
    assert issue.hint == f"must match {TARGET_NAME_PATTERN}"


def test_an_invalid_name_is_reported_even_when_the_kind_is_not_installed(project):
    path = project(targets="  - name: Dev\n    kind: no-such-kind\n")
    fields = {i.field for i in issues_of(path)}
    assert fields == {"targets[0].name", "targets[0].kind"}


def test_an_empty_target_list_is_an_error(project):
    issue = only(issues_of(project(targets="  []\n")), "targets")
    assert issue.message == "must not be empty" and issue.location.line == 11


def test_the_cli_prints_the_pattern_verbatim_and_applies_nothing(project):
    path = project(targets="  - name: prod_eu\n    kind: memory\n")
    r = runner.invoke(app, ["validate", str(path)])
    assert r.exit_code == 2
    assert f"deployctl.yaml:12:11: targets[0].name: invalid value 'prod_eu' (must match {TARGET_NAME_PATTERN})" in r.stderr
    r = runner.invoke(app, ["apply", str(path), "--yes"])
    assert r.exit_code == 2 and "nothing was changed" in r.stderr


def test_the_terminal_reporter_prints_brackets_verbatim():
    from rich.console import Console

    from orchestrator.events import RichReporter

    buf = io.StringIO()
    reporter = RichReporter(Console(file=buf, width=200, force_terminal=False))
    reporter.warning("dev", "name must match ^[a-z][a-z0-9-]{0,23}$ [bold]")
    reporter.change_finished("dev", "create", "endpoint/[x]", ok=False, error="bad [red]value")
    text = buf.getvalue()
    assert "name must match ^[a-z][a-z0-9-]{0,23}$ [bold]" in text
    assert "endpoint/[x]: bad [red]value" in text


def test_the_plan_table_prints_brackets_verbatim(project, memory_clouds, tmp_path):
    from rich.console import Console

    from orchestrator.api import load
    from orchestrator.render import plan_table

    path = project(targets='  - name: dev\n    kind: memory\n    things: ["ep[a-z]", "[bold]x"]\n')
    plan = load(path, state_dir=tmp_path / "state").plan()
    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=False).print(plan_table(plan))
    assert "ep[a-z]" in buf.getvalue() and "[bold]x" in buf.getvalue()


# -- item 6: bounded in time, memory and what is read -------------------------------------------
BILLION_LAUGHS = "".join(
    f"{k}: &{k} [{', '.join(['*' + prev] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, k in zip([""] + list("abcdefgh"), "abcdefghi", strict=True)
)


@pytest.mark.parametrize(("text", "message", "line"), [
    ("a: &a [*a]\n", "recursive YAML alias", 1),
    ("x: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested more than 32 levels deep", 1),
    (BILLION_LAUGHS, "expands to more than 10,000 values", 1),
    ("x: [" + ", ".join(["1"] * 20_000) + "]\n", "more than 10,000 values", 1),
    ("apiVersion: deployctl/v1\nname: " + "9" * 5000 + "\n", "invalid value '99999", 2),
    ("apiVersion: deployctl/v1\n2001-02-30: x\n", "invalid value '2001-02-30'", 2),  # a key YAML cannot build
    ("apiVersion: deployctl/v1\nresources:\n  memory_gb: .inf\n", ".inf is not a number", 3),
    ("apiVersion: deployctl/v1\nresources:\n  cpu: .nan\n", ".nan is not a number", 3),
    ("apiVersion: deployctl/v1\nresources:\n  cpu: 1.0e+400\n", "1.0e+400 is not a number", 3),
    ("apiVersion: deployctl/v1\nresources:\n  gpu: 100000000000000000000\n", "is too large", 3),
])
def test_hostile_yaml_ends_in_a_located_error(project, text, message, line):
    issues = issues_of(project(text))
    found = [i for i in issues if message in i.message]
    assert found, [str(i) for i in issues]
    assert found[0].location.line == line


def test_a_float_setting_of_a_target_cannot_be_infinite(project):
    path = project(targets="  - name: dev\n    kind: local\n    max_body_mb: .inf\n")
    issue = only(issues_of(path), "targets[0].max_body_mb")
    assert issue.location.line == 14
    # YAML reads 1e400 (no dot) as a string; pydantic makes it a float: infinite, refused too
    path = project(targets="  - name: dev\n    kind: local\n    max_body_mb: 1e400\n")
    issue = only(issues_of(path), "targets[0].max_body_mb")
    assert issue.message == "expected a finite number"


def test_a_huge_manifest_or_a_fifo_is_refused_before_it_is_read(project, tmp_path):
    big = project("name: " + "x" * (1 << 20) + "\n", name="big.yaml")
    assert "larger than 256 KiB" in only(issues_of(big)).message
    assert "larger than 256 KiB" in only(issues_of(big.read_text())).message  # the Python API's YAML string
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in only(finishes(lambda: issues_of(fifo))).message


def test_a_megabyte_path_is_an_error_not_a_traceback(project):
    text = BASE.format(targets=MEMORY_TARGETS.rstrip()).replace("path: ./model.pkl", "path: ${MODEL}")
    issue = only(issues_of(project(text), variables={"MODEL": "m" * (1 << 20)}), "model.path")
    assert "path is 1,048,576 characters long" in issue.message and issue.location.line == 4
    text = BASE.format(targets=MEMORY_TARGETS.rstrip()).replace("entry: score.py", "entry: ${ENTRY}")
    issue = only(issues_of(project(text), variables={"ENTRY": "e" * 300_000}), "code")
    assert "not found" in issue.message


def _with_model(project, model: str, **extra: str) -> Path:
    text = BASE.format(targets=MEMORY_TARGETS.rstrip()).replace("path: ./model.pkl", f"path: {model}")
    for old, new in extra.items():
        text = text.replace(old, new)
    return project(text)


@pytest.mark.parametrize("setup", ["proc_fd", "symlink_to_dev_zero", "fifo_inside", "link_to_fifo_inside", "socket_inside"])
def test_a_model_path_to_special_files_is_refused(project, setup, tmp_path):
    base = project.dir
    if setup == "proc_fd":
        model = "/proc/self/fd"
    elif setup == "symlink_to_dev_zero":
        (base / "zero").symlink_to("/dev/zero")
        model = "./zero"
    else:
        (base / "m").mkdir()
        (base / "m" / "weights.bin").write_bytes(b"w")
        if setup == "fifo_inside":
            os.mkfifo(base / "m" / "pipe")
        elif setup == "link_to_fifo_inside":
            os.mkfifo(tmp_path / "outside-pipe")
            (base / "m" / "pipe").symlink_to(tmp_path / "outside-pipe")
        else:
            import socket

            s = socket.socket(socket.AF_UNIX)
            s.bind(str(base / "m" / "sock"))
            s.close()
        model = "./m"
    issue = only(finishes(lambda: issues_of(_with_model(project, model))), "model.path")
    assert issue.location.line == 4
    assert any(w in issue.message for w in ("special filesystem", "FIFO", "character device", "socket"))


@pytest.mark.parametrize("field", ["requirements", "sample_request"])
def test_file_fields_take_only_regular_files(project, field):
    os.mkfifo(project.dir / "pipe")
    if field == "requirements":
        path = _with_model(project, "./model.pkl", **{"code:\n": "environment:\n  requirements: /dev/zero\ncode:\n"})
        expected_line = 6
    else:
        path = _with_model(project, "./model.pkl", **{"sample_request: ./sample.json": "sample_request: ./pipe"})
        expected_line = 10
    issue = only(finishes(lambda: issues_of(path)))
    assert "is not a regular file" in issue.message and issue.location.line == expected_line


def test_hashing_and_archiving_refuse_a_fifo_instead_of_blocking(tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    (root / "weights.bin").write_bytes(b"w" * 10)
    os.mkfifo(root / "pipe")
    with pytest.raises(UnsupportedFileError, match="pipe: is a named pipe"):
        finishes(lambda: tree_digest(root))
    with pytest.raises(UnsupportedFileError):
        finishes(lambda: archive_tree(root, tmp_path / "out.tar.zst"))
    assert not (tmp_path / "out.tar.zst").exists()


def _limit_memory() -> None:  # in the child: 1 GiB of address space is plenty for validate
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_the_real_cli_ends_hostile_manifests_with_exit_2_in_bounded_time_and_memory(project):
    os.mkfifo(project.dir / "pipe.yaml")
    (project.dir / "zero").symlink_to("/dev/zero")
    cases = {
        "laughs.yaml": BILLION_LAUGHS,
        "recursive.yaml": "a: &a [*a]\n",
        "deep.yaml": "x: " + "[" * 20_000 + "]" * 20_000 + "\n",
        "zero.yaml": BASE.format(targets=MEMORY_TARGETS.rstrip()).replace("path: ./model.pkl", "path: ./zero"),
    }
    paths = [project(text, name=name) for name, text in cases.items()] + [project.dir / "pipe.yaml"]
    for path in paths:
        started = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(path)], env=subprocess_env(),
                           capture_output=True, text=True, timeout=60, preexec_fn=_limit_memory)
        assert r.returncode == 2, (path.name, r.stderr)
        assert "Traceback" not in r.stderr and path.name in r.stderr, r.stderr
        assert time.monotonic() - started < 30


# -- item 7: messages that say what is wrong ----------------------------------------------------
def test_an_unrendered_template_is_named_as_such(project):
    text = BASE.format(targets=MEMORY_TARGETS.rstrip()).replace("name: credit-risk", "name: {{ENDPOINT_NAME}}")
    issue = only(issues_of(project(text)), "name")
    assert issue.message == "{{ENDPOINT_NAME}} is not a value"
    assert "unrendered template" in issue.hint and "write ${ENDPOINT_NAME}" in issue.hint
    quoted = text.replace("{{ENDPOINT_NAME}}", '"{{ ENDPOINT_NAME }}"')
    issue = only(issues_of(project(quoted)), "name")
    assert "write ${ENDPOINT_NAME}" in issue.hint


@pytest.mark.parametrize(("bad", "line", "hint", "caret"), [
    ("name: credit: risk", 2, "a value containing ': ' must be quoted", "2 | name: credit: risk\n      |             ^"),
    ("name: credit-risk\n\tmodel: x", 3, "YAML indents with spaces", "3 |  model: x\n      | ^"),
])
def test_invalid_yaml_shows_the_line_with_a_caret_and_a_hint(project, bad, line, hint, caret):
    text = BASE.format(targets=MEMORY_TARGETS.rstrip()).replace("name: credit-risk", bad)
    issue = only(issues_of(project(text)))
    assert issue.location.line == line and issue.message.startswith("invalid YAML: ")
    assert hint in issue.hint
    assert issue.excerpt is not None and caret in str(issue)


def _conda_manifest(project, python_line: str = "") -> Path:
    (project.dir / "conda.yaml").write_text("name: x\ndependencies:\n  - python=3.99\n  - pip:\n    - numpy\n")
    env = f"environment:\n{python_line}  conda_file: ./conda.yaml\ncode:\n"
    return project(BASE.format(targets="  - name: dev\n    kind: local").replace("code:\n", env))


def test_a_python_pinned_by_the_conda_file_is_blamed_on_it_and_validate_checks_it(project, monkeypatch):
    monkeypatch.chdir(project.dir)
    r = runner.invoke(app, ["validate", str(_conda_manifest(project))])
    assert r.exit_code == 2
    assert ("deployctl.yaml:6:15: environment.conda_file: Python 3.99, asked for by conda.yaml:3, "
            "is not installed where uv can find it (install it with `uv python install 3.99`") in r.stderr
    assert "environment.python" not in r.stderr


def test_a_conda_pin_contradicting_environment_python_names_both(project, monkeypatch):
    monkeypatch.chdir(project.dir)
    issue = only(issues_of(_conda_manifest(project, '  python: "3.11"\n')), "environment.python")
    assert issue.location.line == 6
    assert issue.message == "environment.python (deployctl.yaml:6) asks for Python 3.11 but conda.yaml:3 pins python 3.99"


def test_validate_accepts_an_installed_python(project):
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    text = BASE.format(targets="  - name: dev\n    kind: local").replace("code:\n", f'environment:\n  python: "{version}"\ncode:\n')
    r = runner.invoke(app, ["validate", str(project(text))])
    assert r.exit_code == 0, r.stderr
