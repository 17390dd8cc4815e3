"""Target plugins through entry points: deployctl's own kinds win, the rest are found on need."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orchestrator.registry import default_registry
from tests.conftest import subprocess_env


def _shadowing_plugin(tmp_path: Path) -> Path:
    """A distribution that registers deployctl's ``local`` kind (and a kind of its own), as a
    careless or hostile package could; its module records being imported."""
    root = tmp_path / "site"
    info = root / "shadow_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[deployctl.targets]\nlocal = shadow_mod:Local\n")
    (root / "shadow_mod.py").write_text(
        "import os\n"
        "open(os.environ['SHADOW_MARK'], 'w').close()\n"
        "from targets.local import LocalTarget\n"
        "class Local(LocalTarget):\n    pass\n")
    return root


def test_builtin_kinds_resolve_without_scanning_other_distributions():
    """A manifest of built-in kinds reads deployctl's own metadata only (a scan of every
    installed distribution is 5-8 ms of a no-op apply); the first kind from elsewhere scans."""
    reg = default_registry()
    assert reg.has("local") and reg.more is not None  # no scan yet
    assert reg.get("local").__module__ == "targets.local.target"
    assert reg.more is not None
    assert reg.has("memory")  # the test plugin's kind: found by the scan
    assert reg.more is None


def test_a_package_cannot_take_over_a_builtin_kind(tmp_path):
    """A distribution registering ``local`` is never imported for it, wherever it sits on
    sys.path (last, it used to win): deployctl's own target runs, and `deployctl targets` names
    the package that was ignored."""
    site = _shadowing_plugin(tmp_path)
    mark = tmp_path / "imported"
    env = subprocess_env(SHADOW_MARK=str(mark))
    prelude = f"import sys\nsys.path.append({str(site)!r})\n"
    code = prelude + ("from orchestrator.registry import default_registry\n"
                      "reg = default_registry()\nprint(reg.get('local').__module__, reg.kinds.count('local'))\n"
                      "print(reg.shadowed)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["targets.local.target 1", "{'local': ['shadow-plugin']}"]
    cli = prelude + "sys.argv = ['deployctl', *sys.argv[1:]]\nfrom orchestrator.cli import main\nmain()\n"
    r = subprocess.run([sys.executable, "-c", cli, "targets", "-o", "json"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert listed["shadowed"] == {"local": ["shadow-plugin"]}
    assert [t["module"] for t in listed["targets"] if t["kind"] == "local"] == ["targets.local.target"]
    r = subprocess.run([sys.executable, "-c", cli, "targets"], env=env, capture_output=True, text=True, timeout=60)
    assert "local: also registered by shadow-plugin: ignored, deployctl's is used" in r.stderr
    assert not mark.exists()  # its module never ran


def test_an_unknown_kind_still_lists_every_installed_kind():
    reg = default_registry()
    message = reg.unknown_kind_message("lokal")
    assert "memory" in message and "local" in message and "Did you mean 'local'?" in message


def test_a_kind_that_failed_to_load_is_not_found_again_by_the_scan():
    """A built-in kind whose plugin failed to load stays reported as broken (with its reason),
    not re-added by the later scan of every distribution, which finds the same entry point."""
    from importlib.metadata import EntryPoint

    from orchestrator.errors import UserError
    from orchestrator.registry import TargetRegistry

    ep = EntryPoint(name="gone", value="deployctl_no_such_module:Target", group="deployctl.targets")
    reg = TargetRegistry(entry_points={"gone": ep}, more=lambda: [ep])
    try:
        reg.get("gone")
    except UserError as e:
        assert "deployctl_no_such_module" in e.message
    else:
        raise AssertionError("a missing module must fail the load")
    assert "gone" not in reg.kinds and "gone" in reg.broken and reg.shadowed == {}
    assert "failed to load" in reg.unknown_kind_message("gone")
