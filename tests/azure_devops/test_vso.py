"""The logging-command emitter and parser against the documented rules and Microsoft's own golden
strings (azure-pipelines-task-lib node/test/commandtests.ts @ a5e7ee0, and the Learn page's examples)."""

from __future__ import annotations

import random

import pytest

from orchestrator.ci.vso import (
    Command,
    CommandSyntaxError,
    escape_data,
    escape_property,
    format_command,
    parse_command,
    parse_line,
    parse_stream,
)


# -- task-lib's golden strings (toString) ---------------------------------------------------------
def test_tostring_golden():
    assert format_command("some.cmd", {"foo": "bar"}, "a message") == "##vso[some.cmd foo=bar;]a message"


def test_message_escapes_only_percent_cr_lf():
    assert (format_command("some.cmd", {"foo": "bar"}, "cr \r lf \n crlf \r\n eom ] ;")
            == "##vso[some.cmd foo=bar;]cr %0D lf %0A crlf %0D%0A eom ] ;")


def test_properties_escape_semicolon_bracket_cr_lf_percent():
    assert format_command("some.cmd", {"foo": ";=\r=\n%3B"}, "dog") == "##vso[some.cmd foo=%3B=%0D=%0A%AZP253B;]dog"
    assert escape_property("a]b") == "a%5Db"
    assert escape_data("a]b;c%") == "a]b;c%AZP25"


def test_isoutput_and_empty_properties():
    assert (format_command("task.setvariable", {"variable": "bar", "isOutput": "true"}, "dog")
            == "##vso[task.setvariable variable=bar;isOutput=true;]dog")
    assert format_command("some.cmd", None, "a message") == "##vso[some.cmd]a message"
    assert format_command("some.cmd", {}, "a message") == "##vso[some.cmd]a message"
    # empty/None values are omitted, booleans are spelled as the agent expects
    assert (format_command("task.setvariable", {"variable": "x", "issecret": True, "code": None, "y": ""}, "v")
            == "##vso[task.setvariable variable=x;issecret=true;]v")


# -- the Learn page's examples --------------------------------------------------------------------
DOC_LOGISSUE = ("##vso[task.logissue type=warning;sourcepath=consoleapp/main.cs;linenumber=1;columnnumber=1;code=100;]"
                "Found something that could be a problem.")


def test_doc_examples_format_and_parse():
    props = {"type": "warning", "sourcepath": "consoleapp/main.cs", "linenumber": 1, "columnnumber": 1, "code": 100}
    assert format_command("task.logissue", props, "Found something that could be a problem.") == DOC_LOGISSUE
    cmd = parse_command(DOC_LOGISSUE)
    assert cmd.command == "task.logissue" and cmd.properties["linenumber"] == "1"
    assert cmd.message == "Found something that could be a problem."
    assert format_command("task.complete", {"result": "Failed"}) == "##vso[task.complete result=Failed;]"
    assert parse_command("##vso[task.setsecret]value").message == "value"


# -- task-lib's golden strings (commandFromString) ------------------------------------------------
def test_parse_golden():
    c = parse_command("##vso[basic.command]messageVal")
    assert (c.command, dict(c.properties), c.message) == ("basic.command", {}, "messageVal")
    c = parse_command("##vso[basic.command prop1=val1;prop2=val2]messageVal")
    assert dict(c.properties) == {"prop1": "val1", "prop2": "val2"}
    c = parse_command("##vso[task.setvariable variable=task variable;]task variable set value")
    assert c.properties["variable"] == "task variable" and c.message == "task variable set value"
    assert parse_command("##vso[basic.command]cr %0D lf %0A crlf %0D%0A eom ] ;").message == "cr \r lf \n crlf \r\n eom ] ;"
    assert parse_command("##vso[basic.command foo=%3B=%0D=%0A%AZP253B;]dog").properties["foo"] == ";=\r=\n%3B"


def test_parse_errors_and_set_x_echo():
    with pytest.raises(CommandSyntaxError, match="Invalid property: variable"):
        parse_command("##vso[task.setvariable variable]x")
    with pytest.raises(CommandSyntaxError, match="Invalid command brackets"):
        parse_command("##vso[task.setvariable variable=x")
    # bash `set -x` echoes the command with a `+ ` prefix and quotes: not a command
    assert parse_line("+ echo '##vso[task.setvariable variable=x]y'") is None
    assert parse_line("plain output") is None
    assert list(parse_stream(["a", DOC_LOGISSUE + "\n", "##vso[task.complete result=Succeeded;]\r\n"])) == [
        parse_command(DOC_LOGISSUE), Command("task.complete", {"result": "Succeeded"}, "")]


def test_bad_names_are_refused():
    with pytest.raises(ValueError):
        format_command("task.setvariable x", {}, "")
    with pytest.raises(ValueError):
        format_command("task.setvariable", {"a;b": "x"}, "")


def test_round_trip_of_hostile_strings():
    """format -> parse gives back every property and message, for strings made of the escape
    characters, the escape tokens themselves and the command's own syntax."""
    rng = random.Random(20261123)
    atoms = ["%", ";", "]", "[", "\r", "\n", "=", " ", "a", "%AZP25", "%0D", "%0A", "%5D", "%3B", "AZP25", "##vso[", "é"]
    for _ in range(2000):
        value = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 12)))
        message = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 12)))
        line = format_command("task.setvariable", {"variable": "v", "other": value}, message)
        assert "\n" not in line and "\r" not in line
        cmd = parse_line(line)
        assert cmd is not None
        assert cmd.command == "task.setvariable"
        assert dict(cmd.properties) == {"variable": "v", "other": value}
        assert cmd.message == message


def test_neutralize_makes_plain_text_inert():
    from orchestrator.ci.vso import neutralize

    hostile = "model log: ##vso[task.setvariable variable=PATH]/evil\n##[group]x\nok"
    safe = neutralize(hostile)
    assert list(parse_stream(safe.splitlines())) == []
    assert "##vso[" not in safe and not any(line.startswith("##[") for line in safe.splitlines())
    assert neutralize("plain text") == "plain text"
