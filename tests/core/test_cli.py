"""The deployctl command: output, exit codes, saved plans, confirmation, interruption."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import app
from tests.conftest import subprocess_env

runner = CliRunner()


def file_targets(tmp: Path, delay_hook: str = "") -> str:
    return f"""\
  - name: dev
    kind: memory
    file: {tmp / 'cloud.json'}
  - name: prod
    kind: memory
    size: 2
    file: {tmp / 'cloud.json'}
"""


def cli(*args: str, **kw):
    result = runner.invoke(app, list(args), catch_exceptions=False, **kw)
    return result


def test_validate_ok_and_json(project):
    m = project()
    r = cli("validate", str(m))
    assert r.exit_code == 0 and "valid — credit-risk, real-time" in r.stdout
    r = cli("validate", str(m), "-o", "json")
    assert json.loads(r.stdout)["targets"] == [{"name": "dev", "kind": "memory"}, {"name": "prod", "kind": "memory"}]


def test_broken_manifest_prints_location_field_hint_and_exits_2(project):
    m = project(targets="  - name: dev\n    kind: memory\n    sise: 2\n")
    r = cli("validate", str(m))
    assert r.exit_code == 2
    assert "deployctl.yaml:14:5: targets[0].sise: unknown field (did you mean 'size'?)" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_plan_json_detailed_exitcode_and_apply_saved_plan(project, memory_clouds):
    m = project(targets=file_targets(project.dir))
    r = cli("plan", str(m), "-o", "json", "--detailed-exitcode")
    assert r.exit_code == 3
    plan = json.loads(r.stdout)
    assert plan["format"] == "deployctl.plan/v1"
    assert [c["action"] for c in plan["targets"][0]["changes"]] == ["create", "create"]
    (project.dir / "plan.json").write_text(r.stdout)

    r = cli("apply", str(project.dir / "plan.json"))  # a saved plan needs no confirmation
    assert r.exit_code == 0, r.stderr
    assert "dev (memory): ok, 2 change(s) applied" in r.stdout

    r = cli("apply", str(project.dir / "plan.json"))  # the world changed since: refused
    assert r.exit_code == 2 and "stale" in r.stderr

    r = cli("plan", str(m), "--detailed-exitcode")
    assert r.exit_code == 0 and "0 to create, 0 to update" in r.stdout


def test_apply_needs_confirmation_off_a_terminal(project, memory_clouds):
    m = project(targets=file_targets(project.dir))
    r = cli("apply", str(m))
    assert r.exit_code == 2 and "--yes" in r.stderr
    assert not (project.dir / "cloud.json").exists()
    r = cli("apply", str(m), "--yes", "--target", "dev", "-o", "json")
    assert r.exit_code == 0
    result = json.loads(r.stdout)
    assert [t["target"] for t in result["targets"]] == ["dev"]


def test_status_hides_keys_unless_asked_and_logs_are_redacted(project, memory_clouds):
    m = project(targets=file_targets(project.dir))
    assert cli("apply", str(m), "--yes").exit_code == 0
    r = cli("status", str(m))
    assert r.exit_code == 0 and "in-sync" in r.stdout and "sekret" not in r.stdout
    r = cli("status", str(m), "--show-keys")
    assert "key: sekret-dev-0123456789" in r.stdout
    r = cli("logs", str(m), "--target", "dev")
    assert "sekret" not in r.stdout and "key=***" in r.stdout
    assert "##vso[task.setvariable" in r.stdout  # plain terminals see the text as it is
    r = cli("logs", str(m), "--target", "dev", "--ci", "azure-devops")
    assert "##vso[task.setvariable variable=pwned" not in r.stdout  # ...a pipeline agent must not run it
    assert "a model printed ##vso [task.setvariable" in r.stdout


def test_invoke_and_destroy(project, memory_clouds):
    m = project(targets=file_targets(project.dir))
    cli("apply", str(m), "--yes")
    r = cli("invoke", str(m), "--target", "dev", "--data", '{"data": [[1]]}', "-o", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["body"] == {"echo": {"data": [[1]]}}
    r = cli("invoke", str(m), "--data", "{}")
    assert r.exit_code == 2 and "say which one with --target" in r.stderr
    r = cli("destroy", str(m), "--yes")
    assert r.exit_code == 0
    assert json.loads((project.dir / "cloud.json").read_text()) == {}


def test_saved_plan_finds_its_manifest_in_another_checkout(project, memory_clouds, tmp_path, monkeypatch):
    import shutil

    # a relative cloud file: the "cloud" is the same wherever the checkout is
    m = project(targets="  - name: dev\n    kind: memory\n    file: cloud.json\n")
    monkeypatch.chdir(project.dir)
    r = cli("plan", "deployctl.yaml", "-o", "json")
    doc = json.loads(r.stdout)
    assert doc["manifest_relative"] == "deployctl.yaml"
    other = tmp_path.parent / (tmp_path.name + "-checkout2")
    shutil.copytree(project.dir, other)
    shutil.rmtree(project.dir / "src")  # the first checkout is gone...
    m.unlink()
    (other / "plan.json").write_text(r.stdout)
    monkeypatch.chdir(other)
    r = cli("apply", "plan.json")  # ...the plan applies from the second one
    assert r.exit_code == 0, r.stderr


def test_bad_var_and_missing_plan_file(project):
    m = project()
    assert cli("plan", str(m), "--var", "nonsense").exit_code == 2
    r = cli("apply", str(project.dir / "nope.json"))
    assert r.exit_code == 2 and "cannot read plan" in r.stderr


def test_targets_and_schema_commands():
    r = cli("targets", "-o", "json")
    doc = json.loads(r.stdout)
    kinds = {t["kind"]: t for t in doc["targets"]}
    assert kinds["memory"]["scoring_types"] == ["batch", "real-time"]
    assert "broken" in doc["broken"]  # a broken plugin is reported, not fatal
    r = cli("schema")
    assert json.loads(r.stdout)["title"].startswith("deployctl manifest")


def test_failed_target_exits_1(project, memory_clouds):
    targets = "  - name: dev\n    kind: memory\n    size: 5\n    quota: 4\n"
    r = cli("apply", str(project(targets=targets)), "--yes")
    assert r.exit_code == 1 and "exceeds quota" in r.stdout + r.stderr


@pytest.mark.slow
def test_console_script_exit_codes_and_ctrl_c(project, tmp_path):
    """The real `deployctl` process: SIGINT mid-apply stops cleanly with exit code 130."""
    m = project(targets=file_targets(project.dir))
    exe = [sys.executable, "-m", "orchestrator.cli"]
    env = subprocess_env()
    assert subprocess.run([*exe, "validate", str(m)], env=env, capture_output=True).returncode == 0
    # A slow target: the memory plugin sleeps when MEMTARGET_DELAY is set (see below).
    env["MEMTARGET_DELAY"] = "1.0"
    p = subprocess.Popen([*exe, "apply", str(m), "--yes", "--parallel", "1"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (project.dir / "cloud.json").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "Interrupted" in err
    assert "not-started" in out


def test_a_plain_run_loads_only_what_it_uses(project):
    """Start-up is most of a no-op apply's time: a run printing plain lines, with nothing to
    retry and no Azure target, must not import rich, tenacity, the Azure SDK or zstandard."""
    m = project(targets=file_targets(project.dir))
    code = (
        "import sys\n"
        f"sys.argv = ['deployctl', 'apply', {str(m)!r}, '--yes']\n"
        "from orchestrator.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = ('rich', 'tenacity', 'azure', 'zstandard', 'orchestrator.azure')\n"
        "print('LOADED', code, sorted(h for h in heavy if h in sys.modules))\n"
    )
    env = subprocess_env()
    for _ in range(2):  # the first apply creates; the second is the no-op
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert "LOADED 0 []" in r.stdout, r.stdout + r.stderr


HELP_HEAVY = ("rich", "pydantic", "yaml", "orchestrator.api", "orchestrator.engine", "orchestrator.manifest",
              "tenacity", "azure", "zstandard")


def _help_run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        f"sys.argv = ['deployctl', *{args!r}]\n"
        "from orchestrator.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        f"print('LOADED', code, sorted(h for h in {HELP_HEAVY!r} if h in sys.modules))\n"
    )
    base = {k: v for k, v in subprocess_env().items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [["--help"], ["apply", "--help"], ["image", "--help"], ["image", "build", "--help"]])
def test_help_in_a_pipe_is_plain_and_loads_no_rich(args):
    """Issue 15: `deployctl --help` prints click's plain help, without importing rich (half of its
    start-up), pydantic, nor the engine and the manifest models: a command's own --help too."""
    r = _help_run(args)
    assert "LOADED 0 []" in r.stdout, r.stdout + r.stderr
    assert r.stdout.startswith("Usage: deployctl ") and "╭" not in r.stdout, r.stdout  # no rich panels
    assert "--help" in r.stdout and "Show this message and exit." in r.stdout


def test_help_on_a_terminal_is_plain_too():
    """On a terminal (here: forced the way rich reads it) --help is click's plain help as well:
    no rich panels, and still no rich or pydantic import."""
    r = _help_run(["--help"], TTY_COMPATIBLE="1", COLUMNS="100")
    assert "LOADED 0 []" in r.stdout, r.stdout + r.stderr
    assert "╭" not in r.stdout and "\nCommands:\n" in r.stdout and "\n  apply " in r.stdout, r.stdout
    commands = [line.split()[0] for line in r.stdout.split("Commands:\n")[1].splitlines() if line.startswith("  ")]
    assert commands == ["validate", "plan", "apply", "destroy", "status", "invoke", "logs", "targets", "schema",
                        "image"]  # in the order they are declared, as typer listed them


def test_command_help_documents_arguments_options_and_envvars():
    r = _help_run(["apply", "--help"])
    text = " ".join(r.stdout.split())  # click wraps help at 80 columns
    assert text.startswith("Usage: deployctl apply [OPTIONS] MANIFEST"), text
    assert "MANIFEST A manifest (YAML), or a plan saved with `plan -o json`." in text
    for line in ("-t, --target TEXT", "-y, --yes", "--parallel INTEGER RANGE", "[1<=x<=128]", "--fail-fast",
                 "-o, --output [table|json]", "[default: table]", "[env var: DEPLOYCTL_SIMULATE]",
                 "[env var: DEPLOYCTL_SIMULATE_FAULTS]", "[env var: DEPLOYCTL_SIMULATE_LATENCY]",
                 "--ci [azure-devops|none]", "--state-dir PATH", "--simulate-state PATH"):
        assert line in text, (line, text)
    # the shared options come after the command's own, as they did under typer
    assert text.index("--fail-fast") < text.index("--var") < text.index("--state-dir") < text.index("--ci ")


@pytest.mark.parametrize("args, message", [
    ([], "Usage: deployctl [OPTIONS] COMMAND"),  # no_args_is_help: help on stderr, exit 2
    (["image"], "Usage: deployctl image [OPTIONS] COMMAND"),
    (["apply"], "Missing argument 'MANIFEST'"),
    (["apply", "m.yaml", "--bogus"], "No such option '--bogus'"),
    (["apply", "m.yaml", "--parallel", "0"], "0 is not in the range 1<=x<=128"),
    (["apply", "m.yaml", "--parallel", "129"], "129 is not in the range 1<=x<=128"),
    (["plan", "m.yaml", "-o", "yaml"], "'yaml' is not one of 'table', 'json'"),
    (["plan", "m.yaml", "--ci", "azure_devops"], "'azure_devops' is not one of 'azure-devops', 'none'"),
    (["logs", "m.yaml", "--tail", "0"], "0 is not in the range x>=1"),
    (["nope"], "No such command 'nope'"),
])
def test_bad_arguments_are_usage_errors_exit_2_without_traceback(args, message):
    r = _help_run(args)
    assert "LOADED 2 " in r.stdout, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_envvars_set_the_simulate_options(monkeypatch):
    """DEPLOYCTL_SIMULATE* reach the shared options (bool parsing as click's: 1/true/yes/on)."""
    monkeypatch.setenv("DEPLOYCTL_SIMULATE", "1")
    monkeypatch.setenv("DEPLOYCTL_SIMULATE_FAULTS", "rate=0.2,seed=1")
    monkeypatch.setenv("DEPLOYCTL_SIMULATE_LATENCY", "call=0.1")
    params = app.commands["plan"].make_context("plan", ["m.yaml", "-t", "a", "-t", "b", "--ci", "none"]).params
    assert params["simulate"] is True and params["simulate_faults"] == "rate=0.2,seed=1"
    assert params["simulate_latency"] == "call=0.1" and params["target"] == ("a", "b")
    from orchestrator.cli import CIMode, OutputFormat

    assert params["ci"] is CIMode.none and params["output"] is OutputFormat.table
    monkeypatch.setenv("DEPLOYCTL_SIMULATE", "0")
    assert app.commands["plan"].make_context("plan", ["m.yaml"]).params["simulate"] is False


MISSING_SDK = """\
  - name: dev
    kind: memory
    sdk: deployctl_fake_sdk
"""


def test_a_target_missing_its_sdk_is_one_line_naming_the_install_command(project, memory_clouds):
    """Issue 10 item 11: a third-party target whose SDK (imported lazily) is not installed: plan,
    apply and status say so in one line naming the package its distribution declares and the
    command that installs it, exit 2, no traceback."""
    m = project(targets=MISSING_SDK)
    install = f"{sys.executable} -m pip install 'deployctl-fake-sdk>=2'"
    for args, code in ((["plan"], 2), (["apply", "--yes"], 2), (["status"], 1)):
        r = cli(args[0], str(m), *args[1:])
        text = r.stdout + r.stderr
        assert r.exit_code == code, text
        lines = [line for line in text.splitlines() if "deployctl_fake_sdk" in line]  # apply: plan and result
        assert lines and all(install in line and "the 'memory' target needs the Python module "
                             "'deployctl_fake_sdk' (package deployctl-fake-sdk)" in line for line in lines), text
        assert "Traceback" not in text
    assert memory_clouds.cloud("default").writes == []


def test_a_plugin_that_fails_to_import_names_what_to_install(project):
    r = cli("apply", str(project(targets="  - name: dev\n    kind: broken\n")), "--yes")
    assert r.exit_code == 2
    assert ("the 'broken' target needs the Python module 'memtarget_missing_module', which is not installed "
            "(deployctl-memory-target does not declare it)") in r.stdout + r.stderr


_NO_AZURE = """\
import importlib.abc, sys
class NoAzure(importlib.abc.MetaPathFinder):  # this interpreter, as if the azure SDKs were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "azure" or name.startswith("azure."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoAzure())
sys.argv = ["deployctl", *sys.argv[1:]]
from orchestrator.cli import main
main()
"""


@pytest.mark.parametrize("command", [["apply", "--yes"], ["plan"], ["invoke", "--data", "{}"]])
def test_simulate_without_the_azure_sdk_is_one_line_and_exit_2(tmp_path, command):
    """Issue 10 item 11, as reported: after the README's first command (no extras), `--simulate`
    and the Azure targets died with ModuleNotFoundError and a traceback."""
    manifest = Path(__file__).parents[2] / "examples" / "azureml-online" / "deployctl.yaml"
    r = subprocess.run([sys.executable, "-c", _NO_AZURE, command[0], str(manifest), "--simulate",
                        "--state-dir", str(tmp_path), *command[1:]],
                       env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "needs the Python module 'azure" in line]
    assert len(errors) == 1 and f"{sys.executable} -m pip install 'azure-core>=1.30'" in errors[0], r.stderr


def test_invoke_async_prints_the_request_id_alone_on_stdout(project, memory_clouds):
    """Issue 10 item 12: `ID=$(deployctl invoke M --async)` captured nothing (the id went to stderr)."""
    m = project(targets=file_targets(project.dir))
    r = cli("invoke", str(m), "--target", "dev", "--data", "{}", "--async")
    assert r.exit_code == 0 and r.stdout == "req-0001\n" and "state: queued" in r.stderr
    r = cli("invoke", str(m), "--target", "dev", "--data", "{}", "--async", "-o", "json")
    assert json.loads(r.stdout)["request_id"] == "req-0001"


def test_apply_report_shows_each_targets_smoke_test(project, memory_clouds):
    """Issue 10 item 12: the apply report shows every target's smoke test the same way."""
    m = project(targets=file_targets(project.dir))
    r = cli("apply", str(m), "--yes")
    assert r.exit_code == 0
    lines = [line.strip() for line in r.stdout.splitlines() if "smoke test:" in line]
    assert len(lines) == 2 and all(re.fullmatch(r"smoke test: passed \(HTTP 200, \d+ ms\)", x) for x in lines), r.stdout
    doc = json.loads(cli("apply", str(m), "--yes", "-o", "json").stdout)
    assert [t["smoke_test"] for t in doc["targets"]] == [None, None]  # a no-op deploys nothing, tests nothing
    r = cli("destroy", str(m), "--yes")
    assert "smoke test" not in r.stdout


def _buffered_env() -> dict[str, str]:
    """The environment of a subprocess whose stdout is block-buffered in a pipe, as a user's is."""
    return {k: v for k, v in subprocess_env().items() if k != "PYTHONUNBUFFERED"}


_CONSOLE = "import sys\nsys.argv = ['deployctl', *sys.argv[1:]]\nfrom orchestrator.cli import console\nconsole()\n"


def test_the_command_is_the_console_entry_point():
    """`deployctl` skips the interpreter's teardown (~50 ms of a no-op apply): the installed
    script must call console(), not main()."""
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "deployctl"]
    assert script.value == "orchestrator.cli:console"


def test_console_collects_rarely_while_it_starts():
    """The command's cyclic collector runs every 50,000 allocations, not 700 (start-up builds
    long-lived objects only: ~70 collections that free nothing, ~15 ms of a no-op apply)."""
    code = ("import atexit, gc, sys\nsys.argv = ['deployctl', '--help']\n"
            "atexit.register(lambda: print('THRESHOLD', gc.get_threshold()[0], file=sys.stderr))\n"
            "from orchestrator.cli import console\nconsole()\n")
    r = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "THRESHOLD 50000" in r.stderr, r.stderr


def test_console_keeps_exit_codes_and_flushes_all_output(project):
    """Leaving without teardown must not lose output still buffered for a pipe, nor change the
    exit code: a plan's whole JSON document arrives, and bad input still exits 2."""
    m = project(targets=file_targets(project.dir))
    r = subprocess.run([sys.executable, "-c", _CONSOLE, "plan", str(m), "-o", "json"],
                       env=_buffered_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [t["target"] for t in plan["targets"]] == ["dev", "prod"]
    r = subprocess.run([sys.executable, "-c", _CONSOLE, "apply", str(project.dir / "missing.yaml"), "--yes"],
                       env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "missing.yaml" in r.stderr and "Traceback" not in r.stderr


def test_exit_without_teardown_runs_exit_handlers_and_waits_for_threads(tmp_path):
    """What teardown would still have done for a command is done: exit handlers run (logging's
    flush, weakref.finalize clean-ups), buffered output is written, and a non-daemon thread is
    waited for (the normal exit is taken then)."""
    marker, late = tmp_path / "atexit-ran", tmp_path / "thread-finished"
    code = (
        "import atexit, sys, threading, time, weakref\n"
        "from orchestrator.cli import exit_without_teardown\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').close())\n"
        "class Tmp: pass\n"
        "keep = Tmp()\n"
        f"weakref.finalize(keep, print, 'finalized', file=sys.stderr)\n"
        "sys.stdout.write('x' * 1_000_000)\n"
        "if sys.argv[1] == 'thread':\n"
        f"    threading.Thread(target=lambda: (time.sleep(0.5), open({str(late)!r}, 'w').close())).start()\n"
        "exit_without_teardown(7)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, "plain"], env=_buffered_env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 7 and len(r.stdout) == 1_000_000 and "finalized" in r.stderr and marker.exists()
    r = subprocess.run([sys.executable, "-c", code, "thread"], env=_buffered_env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 7 and late.exists(), r.stderr


def test_console_into_a_closed_pipe_exits_120_without_a_traceback():
    """`deployctl ... | head -1`: the reader has gone when the output is flushed; like Python's
    own exit, the status is 120, and no traceback is printed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    code = ("import sys\nfrom orchestrator.cli import exit_without_teardown\n"
            "sys.stdout.write('x' * 100)\nexit_without_teardown(0)\n")
    r = subprocess.run([sys.executable, "-c", code], env=_buffered_env(), stdout=write_end, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    os.close(write_end)
    assert r.returncode == 120 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_console_into_a_full_disk_says_so_and_exits_120():
    """Output that cannot be written (ENOSPC) is not a silent success: exit 120 and one line."""
    code = ("import sys\nfrom orchestrator.cli import exit_without_teardown\n"
            "sys.stdout.write('x' * 100)\nexit_without_teardown(0)\n")
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-c", code], env=_buffered_env(), stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    assert r.returncode == 120, r.stderr
    assert r.stderr.strip() == "deployctl: the output could not be written: No space left on device"
