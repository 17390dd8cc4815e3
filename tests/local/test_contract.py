"""The Azure ML scoring contract in the runtime (stdlib-only, imported here directly)."""

from __future__ import annotations

import json
import textwrap

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
    assert swagger["paths"]["/score"]["post"]["parameters"][0]["schema"]["properties"]["data"]["type"] == "array"


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
