"""Azure Pipelines logging commands (``##vso[area.action k=v;...]message``): format and parse.

Pure functions, no I/O.  The rules are those of azure-pipelines-task-lib's ``taskcommand.ts``
(what tasks emit and what its mock test runner parses) and of the agent's command parser:

- property values escape ``%`` -> ``%AZP25``, CR -> ``%0D``, LF -> ``%0A``, ``]`` -> ``%5D``,
  ``;`` -> ``%3B`` (in that order: ``%`` first, so an escape is never escaped twice);
- the message (after ``]``) escapes only ``%``, CR and LF: ``]`` and ``;`` stay literal there,
  because the parser splits the command at the *first* ``]`` and splits properties only before it;
- every property is written as ``key=value;``; properties whose value is None or "" are omitted;
- parsing: the command name runs to the first space, properties split on ``;``, a property
  without ``=`` is an error ("Invalid property"), missing brackets are an error.  Property values
  are kept verbatim, as the agent keeps them (task-lib's own parser trims them; that is the one
  place the two disagree, for values that begin or end with a blank).

One deliberate difference from the agent: :func:`parse_line` only accepts a line that *starts*
with ``##vso[`` (the agent finds the prefix anywhere, which is how ``set -x``'s ``+ echo
'##vso[...]'`` echo ends up executed with a stray quote).  :func:`parse_command` accepts what
task-lib's ``commandFromString`` accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

PREFIX = "##vso["

# Order matters: '%' first when escaping, last when unescaping.
_PROPERTY_ESCAPES = (("%", "%AZP25"), ("\r", "%0D"), ("\n", "%0A"), ("]", "%5D"), (";", "%3B"))
_DATA_ESCAPES = (("%", "%AZP25"), ("\r", "%0D"), ("\n", "%0A"))


class CommandSyntaxError(ValueError):
    """A line that claims to be a logging command but is not one."""


def escape_property(value: str) -> str:
    for raw, esc in _PROPERTY_ESCAPES:
        value = value.replace(raw, esc)
    return value


def escape_data(value: str) -> str:
    for raw, esc in _DATA_ESCAPES:
        value = value.replace(raw, esc)
    return value


def unescape_property(value: str) -> str:
    for raw, esc in reversed(_PROPERTY_ESCAPES):
        if raw != "%":
            value = value.replace(esc, raw)
    return value.replace("%AZP25", "%")


def unescape_data(value: str) -> str:
    for raw, esc in reversed(_DATA_ESCAPES):
        if raw != "%":
            value = value.replace(esc, raw)
    return value.replace("%AZP25", "%")


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Command:
    """One logging command: ``command`` is ``area.action`` (``task.setvariable``)."""

    command: str
    properties: Mapping[str, str] = field(default_factory=dict)
    message: str = ""

    def __str__(self) -> str:
        return format_command(self.command, self.properties, self.message)


def format_command(command: str, properties: Mapping[str, object] | None = None, message: object = "") -> str:
    """The single line the agent reads.  Booleans become ``true``/``false``."""
    if not command or any(c in command for c in " ]\r\n"):
        raise ValueError(f"not a command name: {command!r}")
    props = ""
    for key, value in (properties or {}).items():
        text = _text(value)
        if text:  # task-lib omits empty values; so do we
            if not key or any(c in key for c in "=; ]\r\n"):
                raise ValueError(f"not a property name: {key!r}")
            props += f"{key}={escape_property(text)};"
    head = PREFIX + command + (" " + props if props else "")
    return head + "]" + escape_data(_text(message) or "")


def parse_command(line: str) -> Command:
    """Parse like task-lib's ``commandFromString``; raises :class:`CommandSyntaxError`."""
    lb, rb = line.find("["), line.find("]")
    if lb == -1 or rb == -1 or rb - lb < 3:
        raise CommandSyntaxError("Invalid command brackets")
    info = line[lb + 1 : rb]
    space = info.find(" ")
    command, props = info, {}
    if space > 0:
        command = info.strip()[:space]
        for part in info[space + 1 :].split(";"):
            if not part.strip():
                continue
            eq = part.find("=")
            if eq == -1:
                raise CommandSyntaxError(f"Invalid property: {part.strip()}")
            # Values are kept verbatim, as the agent keeps them (task-lib's parser would also trim
            # them; our emitter's values round-trip either way unless they start or end with a blank).
            props[part[:eq].strip()] = unescape_property(part[eq + 1 :])
    return Command(command, props, unescape_data(line[rb + 1 :]))


def parse_line(line: str) -> Command | None:
    """The command on ``line`` if the line is one (it starts with ``##vso[``), else None."""
    line = line.rstrip("\r\n")
    if not line.startswith(PREFIX):
        return None
    return parse_command(line)


def parse_stream(lines: Iterable[str]) -> Iterator[Command]:
    """Every logging command in a log, in order; other lines are skipped."""
    for line in lines:
        cmd = parse_line(line)
        if cmd is not None:
            yield cmd


def neutralize(text: str) -> str:
    """Plain output (logs, error text from a service) made inert: the agent executes ``##vso[``
    found *anywhere* in a line and treats a line starting with ``##[`` as formatting, so a model's
    log line could otherwise set variables in your pipeline.  Inserts a blank after ``##vso`` and
    ``##``; the text stays readable."""
    return text.replace("##vso[", "##vso [").replace("##[", "## [")
