"""The Azure ML scoring contract in the runtime (stdlib-only, imported here directly)."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from targets.local.runtime.deployctl_runtime.contract import (
    BadRequest,
    ScriptError,
    UserScript,
    rows_of,
    to_json_bytes,
)


def script(tmp_path, body: str, name: str = "score.py") -> UserScript:
    (tmp_path / name).write_text(textwrap.dedent(body))
    s = UserScript(str(tmp_path), name)
    s.load()
    return s


def test_raw_string_input_and_init_once(tmp_path):
    s = script(tmp_path, """
        import json
        calls = {"init": 0}
        def init():
            calls["init"] += 1
        def run(raw_data):
            return {"got": json.loads(raw_data), "type": type(raw_data).__name__, "inits": calls["init"]}
    """)
    s.init()
    out = s.run_online(b'{"data": [[1, 2]]}')
    assert out == {"got": {"data": [[1, 2]]}, "type": "str", "inits": 1}


def test_request_headers_are_passed_when_declared(tmp_path):
    s = script(tmp_path, """
        def init(): pass
        def run(data, request_headers):
            return request_headers.get("x-trace")
    """)
    assert s.run_online(b"{}", {"x-trace": "abc"}) == "abc"


def test_missing_functions_and_import_errors_are_script_errors(tmp_path):
    with pytest.raises(ScriptError, match="does not define init"):
        script(tmp_path, "def run(x): pass\n")
    with pytest.raises(ScriptError, match="ModuleNotFoundError") as e:
        script(tmp_path, "import not_installed_anywhere\n", name="other.py")
    assert "not_installed_anywhere" in e.value.tail


def test_init_failure_keeps_the_traceback_tail(tmp_path):
    s = script(tmp_path, """
        import os
        def init():
            open(os.path.join("/nonexistent", "model.pkl"))
        def run(x): pass
    """)
    with pytest.raises(ScriptError) as e:
        s.init()
    assert "FileNotFoundError" in str(e.value) and "model.pkl" in e.value.tail


def test_inference_schema_decorated_run_gets_parsed_arguments(tmp_path):
    pytest.importorskip("inference_schema")
    s = script(tmp_path, """
        from inference_schema.schema_decorators import input_schema, output_schema
        from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
        def init(): pass
        @input_schema("data", StandardPythonParameterType([[1.0, 2.0]]))
        @output_schema(StandardPythonParameterType([0]))
        def run(data):
            return [len(row) for row in data]
    """)
    assert s.schema_decorated
    assert s.run_online(json.dumps({"data": [[1.0, 2.0], [3.0, 4.0]]}).encode()) == [2, 2]
    with pytest.raises(BadRequest, match="'data'"):
        s.run_online(b"{}")
    swagger = s.swagger()
    assert swagger is not None
    assert swagger["definitions"]["ServiceInput"]["properties"]["data"]["type"] == "array"
    assert swagger["definitions"]["ServiceOutput"]["type"] == "array"
    (tmp_path / "swagger3.json").write_text('{"openapi": "3.0.1", "info": {"title": "mine"}}')
    assert s.swagger("3") == {"openapi": "3.0.1", "info": {"title": "mine"}}  # the user's own file wins
    assert s.swagger("4") is None


def test_batch_rows_and_json_bytes():
    class Frame:
        def to_csv(self, index, header):
            return "a,1\nb,2\n"

    assert rows_of(["x", {"y": 1}]) == ["x", '{"y": 1}']
    assert rows_of(Frame()) == ["a,1", "b,2"]
    with pytest.raises(TypeError):
        rows_of(42)

    class Arr:
        def tolist(self):
            return [1, 2]

    assert to_json_bytes({"p": Arr()}) == b'{"p": [1, 2]}'


def test_installed_modules_are_reported_while_init_runs(tmp_path, monkeypatch):
    """The zygote imports what a version imports, alongside it: the list is written while
    score.py loads and init() runs, then once more at the end; the user's own modules never."""
    import sys

    site = tmp_path / "env" / "site-packages"
    (site / "fakepkg").mkdir(parents=True)
    (site / "fakepkg" / "__init__.py").write_text("VALUE = 1\n")
    (site / "fakepkg" / "sub.py").write_text("VALUE = 2\n")
    report = tmp_path / "modules.json"
    monkeypatch.setenv("DEPLOYCTL_REPORT_MODULES", str(report))
    monkeypatch.syspath_prepend(str(site))
    code = tmp_path / "code"
    code.mkdir()
    (code / "helper.py").write_text("X = 1\n")
    try:
        s = script(code, f"""
            import json, time
            import fakepkg
            import helper
            seen = {{}}
            def init():
                time.sleep(0.3)  # the reporter writes every 50 ms meanwhile
                seen["during"] = json.load(open({str(report)!r}))
                import fakepkg.sub
            def run(raw_data):
                return raw_data
        """)
        s.init()
        during = s.module.seen["during"]
        final = json.loads(report.read_text())
    finally:
        for name in ("fakepkg", "fakepkg.sub", "helper", "entry_module"):
            sys.modules.pop(name, None)
    assert "fakepkg" in during and "fakepkg.sub" not in during
    assert final.index("fakepkg") < final.index("fakepkg.sub")  # import order: parents first
    assert "helper" not in final and "entry_module" not in final


def test_a_failed_load_stops_the_reporter(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("DEPLOYCTL_REPORT_MODULES", str(tmp_path / "modules.json"))
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(ScriptError):
        script(tmp_path, "raise RuntimeError('broken at import')\n")
    assert "module-reporter" not in {t.name for t in threading.enumerate()} - before


def test_objects_posing_as_modules_do_not_stop_the_report(monkeypatch):
    """sys.modules can hold things that claim to be modules (cffi's Lib objects do) and answer
    attribute lookups strangely: they are left out, and the rest is still reported."""
    import sys
    import types

    from targets.local.runtime.deployctl_runtime.contract import installed_modules

    class PosingLib:
        @property
        def __class__(self):  # isinstance(..., ModuleType) says True
            return types.ModuleType

        def __getattr__(self, name):
            raise TypeError(f"not a module attribute: {name}")

    monkeypatch.setitem(sys.modules, "posing_lib", PosingLib())
    names = installed_modules()
    assert "posing_lib" not in names
    assert "pytest" in names or any(n.startswith("_pytest") for n in names)  # the real ones still listed


def test_a_submodule_is_not_reported_while_its_package_is_still_importing(tmp_path, monkeypatch):
    """A submodule done while its package's __init__ still runs is listed only once the package
    is done: importing it in the zygote would run the rest of that __init__ there too, compiling
    from source what the first version has not reached yet, on the core the background compile
    needs (a package's own module was already left out while it imports)."""
    import sys
    import threading

    from targets.local.runtime.deployctl_runtime.contract import installed_modules

    site = tmp_path / "env" / "site-packages"
    (site / "slowpkg").mkdir(parents=True)
    (site / "slowpkg" / "__init__.py").write_text(
        "from slowpkg import early\nimport threading\nGATE = threading.Event()\n"
        "import builtins\nbuiltins._slowpkg_gate = GATE\nGATE.wait(10)\nfrom slowpkg import late\n")
    (site / "slowpkg" / "early.py").write_text("A = 1\n")
    (site / "slowpkg" / "late.py").write_text("B = 2\n")
    monkeypatch.syspath_prepend(str(site))
    importer = threading.Thread(target=__import__, args=("slowpkg",))
    importer.start()
    try:
        import builtins

        deadline = time.monotonic() + 10
        while not hasattr(builtins, "_slowpkg_gate") and time.monotonic() < deadline:
            time.sleep(0.01)
        during = installed_modules()
        assert "slowpkg.early" in sys.modules  # done, inside a package still importing
        assert "slowpkg" not in during and "slowpkg.early" not in during
    finally:
        getattr(builtins, "_slowpkg_gate", threading.Event()).set()
        importer.join(10)
        after = installed_modules()
        for name in ("slowpkg", "slowpkg.early", "slowpkg.late"):
            sys.modules.pop(name, None)
        if hasattr(builtins, "_slowpkg_gate"):
            del builtins._slowpkg_gate
    assert {"slowpkg", "slowpkg.early", "slowpkg.late"} <= set(after)  # all of it, once done
