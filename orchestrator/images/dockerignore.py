"""``.dockerignore`` as Docker applies it to a build context.  Pure.

Each line is a pattern relative to the context's root (a leading ``/`` and ``./`` mean nothing,
paths are cleaned); ``*`` matches within one path segment, ``?`` one character, ``[...]`` a class,
``**`` any number of segments; ``#`` starts a comment line; ``!`` re-includes what an earlier
pattern excluded.  The last matching pattern wins, and a pattern that matches a folder matches
everything below it.  The Dockerfile and ``.dockerignore`` are always sent (ACR and Docker read
them even when excluded).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from pathlib import Path

FILE = ".dockerignore"


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" : zero or more whole segments
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(c)
            else:
                body = pattern[i + 1:end]
                out += "[" + ("^" + body[1:] if body.startswith(("!", "^")) else body).replace("\\", "\\\\") + "]"
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "(?:/.*)?$")  # a folder's match covers what is below it


def parse(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per pattern line of a .dockerignore."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        line = line[1:].strip() if include else line
        cleaned = posixpath.normpath(line.lstrip("/")).lstrip("/")
        if cleaned in ("", "."):
            continue
        rules.append((not include, _regex(cleaned)))
    return rules


def keeper(context: Path, dockerfile: str) -> Callable[[str], bool] | None:
    """A filter of the context's relative paths (True: send it), or None without a .dockerignore."""
    path = context / FILE
    if not path.is_file():
        return None
    rules = parse(path.read_text(errors="replace"))
    always = {posixpath.normpath(dockerfile), FILE}

    def keep(rel: str) -> bool:
        if rel in always:
            return True
        excluded = False
        for exclude, rx in rules:
            if rx.match(rel):
                excluded = exclude
        return not excluded

    return keep
