"""Safe YAML loading that remembers where every key and value came from.

Rule files are untrusted. They are composed with PyYAML's SafeLoader, so no
Python object can be constructed. Plain values are resolved the YAML 1.2
way: only ``true``/``false`` are booleans, so ``no``, ``off``, and the Norway
country code ``NO`` stay text. Duplicate keys are errors. Alias expansion and
file size are capped, so a "billion laughs" file is an error instead of a hang.
Every mapping and list remembers the file, line, and column of its items,
so validation can point at the exact spot. Nesting is capped too
(:data:`MAX_DEPTH`), checked on the parser's flat stream of events before
anything recursive reads the file.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.errors import Problem

MAX_FILE_BYTES = 2_000_000
MAX_NODES = 200_000
# Mappings and lists inside each other: a condition 500 levels deep (all: /
# any: inside each other) is about 1,000. The loader, the compiler and the
# explainer walk conditions recursively, a few Python frames per level, so
# importing this module makes sure the interpreter allows that many.
MAX_DEPTH = 1_200
RECURSION_NEEDED = 10 * MAX_DEPTH
if sys.getrecursionlimit() < RECURSION_NEEDED:
    sys.setrecursionlimit(RECURSION_NEEDED)


@dataclass(frozen=True)
class Loc:
    """A position in a rule file (line and column are 1-based)."""

    file: str
    line: int
    column: int
    # Columns inside the scalar map one-to-one onto the file (single-line
    # plain or quoted scalars); otherwise point at the scalar's start.
    inline: bool = False

    def at(self, offset: int) -> Loc:
        """The location ``offset`` characters into this scalar's text."""
        if not self.inline:
            return self
        return Loc(self.file, self.line, self.column + offset, True)

    def problem(self, message: str) -> Problem:
        return Problem(self.file, self.line, self.column, message)


class YMap(dict):
    """A mapping from a rule file, with the location of each key and value."""

    loc: Loc
    key_locs: dict
    value_locs: dict

    def key_loc(self, key: str) -> Loc:
        return self.key_locs.get(key, self.loc)

    def value_loc(self, key: str) -> Loc:
        return self.value_locs.get(key, self.loc)


class YList(list):
    """A list from a rule file, with the location of each item."""

    loc: Loc
    item_locs: list

    def item_loc(self, index: int) -> Loc:
        return self.item_locs[index] if index < len(self.item_locs) else self.loc


class _Yaml12Resolver(yaml.resolver.Resolver):
    """Resolves plain scalars like YAML 1.2's core schema (bool = true/false)."""


# Copy the default implicit resolvers but replace the YAML 1.1 boolean rule.
_Yaml12Resolver.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}
_Yaml12Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class _Loader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    yaml.constructor.SafeConstructor,
    _Yaml12Resolver,
):
    def __init__(self, stream: str):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        _Yaml12Resolver.__init__(self)


class _TooBig(Exception):
    pass


def _loc(file: str, node: yaml.Node) -> Loc:
    mark = node.start_mark
    style = getattr(node, "style", None) if isinstance(node, yaml.ScalarNode) else "block"
    inline = style in (None, "'", '"') and node.start_mark.line == node.end_mark.line
    column = mark.column + 1 + (1 if style in ("'", '"') else 0)
    return Loc(file, mark.line + 1, column, inline)


class _Builder:
    """Turns composed nodes into YMap/YList/plain scalars, counting work."""

    def __init__(self, file: str, loader: _Loader):
        self.file = file
        self.loader = loader
        self.nodes = 0
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig()
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as error:
                self.problems.append(
                    _loc(self.file, node).problem(f"cannot read this value: {error.problem}")
                )
                return None
            except (ValueError, OverflowError):
                # PyYAML resolves 2026-13-01 as a timestamp, then fails to build it.
                self.problems.append(
                    _loc(self.file, node).problem(
                        f"'{node.value}' is not a real calendar date (YYYY-MM-DD)"
                    )
                )
                return None
        if isinstance(node, yaml.SequenceNode):
            result = YList()
            result.loc = _loc(self.file, node)
            result.item_locs = []
            for item in node.value:
                result.append(self.build(item))
                result.item_locs.append(_loc(self.file, item))
            return result
        if isinstance(node, yaml.MappingNode):
            result = YMap()
            result.loc = _loc(self.file, node)
            result.key_locs, result.value_locs = {}, {}
            for key_node, value_node in node.value:
                key = self.build(key_node)
                key_loc = _loc(self.file, key_node)
                if isinstance(key, (YMap, YList)) or key is None:
                    self.problems.append(key_loc.problem("a key must be a plain name"))
                    continue
                key = str(key)
                if key in result:
                    first = result.key_locs[key]
                    self.problems.append(
                        key_loc.problem(
                            f"duplicate key '{key}' (first defined on line {first.line}); "
                            "remove one of them"
                        )
                    )
                    continue
                result[key] = self.build(value_node)
                result.key_locs[key] = key_loc
                result.value_locs[key] = _loc(self.file, value_node)
            return result
        raise AssertionError(f"unexpected YAML node {node!r}")  # pragma: no cover


def outside_folder(path: Path, folder: Path) -> str | None:
    """Why ``path`` may not be read as part of ``folder``: it resolves outside
    it (a symbolic link to a file elsewhere); None when it is inside."""
    try:
        target, root = Path(path).resolve(), Path(folder).resolve()
    except (OSError, RuntimeError) as error:  # a link loop
        return f"cannot follow this link ({error})"
    if target == root or root in target.parents:
        return None
    return (
        f"this is a link to {target}, outside the folder {root}; only files inside "
        "the folder are read (copy the file in instead of linking to it)"
    )


def load_yaml(
    path: Path, display_name: str | None = None, folder: Path | None = None
) -> tuple[Any, list[Problem]]:
    """Load one YAML file safely. Returns (data, problems); data is None on
    failure. With ``folder``, a file that resolves outside it is refused."""
    name = display_name or str(path)
    if folder is not None:
        outside = outside_folder(path, folder)
        if outside:
            return None, [Problem(name, 1, 1, outside)]
    try:
        size = path.stat().st_size
    except OSError as error:
        return None, [Problem(name, 1, 1, f"cannot read file: {error.strerror}")]
    if size > MAX_FILE_BYTES:
        return None, [
            Problem(
                name,
                1,
                1,
                f"file is {size:,} bytes; rule files are limited to {MAX_FILE_BYTES:,} bytes",
            )
        ]
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return None, [
            Problem(
                name,
                1,
                1,
                f"file is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8",
            )
        ]
    return load_yaml_text(text, name)


def _too_deep(loader: _Loader) -> yaml.Mark | None:
    """Where the file nests deeper than MAX_DEPTH, or None (reads every event)."""
    depth = 0
    while loader.check_event():
        event = loader.get_event()
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return event.start_mark
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return None


def _layout_mistake(text: str, line: int, what: str) -> tuple[int, int, str] | None:
    """The usual mistakes behind YAML's own words, said where they are: a key
    without its colon (YAML stops on the next line), a line indented deeper
    than a key that already has a value, a list item indented less than the
    items above it. None when the error is none of these."""
    lines = text.split("\n")
    if not 0 < line <= len(lines):
        return None
    current = lines[line - 1]
    earlier = [
        (number, lines[number - 1])
        for number in range(line - 1, 0, -1)
        if lines[number - 1].strip() and not lines[number - 1].lstrip().startswith("#")
    ]
    if not earlier:
        return None

    def indent(text: str) -> int:
        return len(text) - len(text.lstrip(" "))

    number, previous = earlier[0]
    if what == "mapping values are not allowed here":
        body = previous.strip()
        if (
            ":" not in body
            and not body.startswith(("-", "#"))
            and indent(previous) == indent(current)
        ):
            return (
                number,
                indent(previous) + 1,
                f"'{body}' has no ':' after its key; write it as 'key: value'",
            )
        key = re.match(r"\s*(?:- )?([^\s:#][^:#]*):\s+[^\s#]", previous)
        if key and indent(current) > indent(previous):
            return (
                line,
                indent(current) + 1,
                f"this line is indented deeper than '{key.group(1)}:' on line {number}, "
                f"which already has a value; indent it as far as '{key.group(1)}:' "
                f"({indent(previous)} spaces), or move it under the key it belongs to",
            )
    if what.startswith("expected <block end>, but found '-'"):
        items = [(n, t) for n, t in earlier if t.lstrip().startswith("- ")]
        if items and indent(items[0][1]) > indent(current):
            return (
                line,
                indent(current) + 1,
                f"this list item is indented less than the items above it (line "
                f"{items[0][0]}, {indent(items[0][1])} spaces); line it up with them",
            )
    return None


def load_yaml_text(text: str, name: str) -> tuple[Any, list[Problem]]:
    """Load YAML from a string (see :func:`load_yaml`)."""
    loader = None
    try:
        deep = _too_deep(_Loader(text))
        if deep is not None:
            return None, [
                Problem(
                    name,
                    deep.line + 1,
                    deep.column + 1,
                    f"nested more than {MAX_DEPTH:,} levels deep (lists and mappings "
                    "inside each other); split the condition into metrics or programs",
                )
            ]
        loader = _Loader(text)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = error.problem or error.context or "invalid YAML"
        hint = ""
        if "\t" in what or "found character '\\t'" in str(error):
            hint = " (use spaces, not tabs, to indent)"
        said = _layout_mistake(text, line, what)
        if said is not None:
            return None, [Problem(name, *said)]
        return None, [Problem(name, line, column, f"YAML syntax error: {what}{hint}")]
    except yaml.reader.ReaderError as error:  # a control character, say
        before = text[: error.position]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        return None, [
            Problem(
                name,
                line,
                column,
                f"character {error.character:#06x} cannot appear in a rule file "
                "(a control character, often pasted by accident); delete it",
            )
        ]
    except yaml.YAMLError as error:
        return None, [Problem(name, 1, 1, f"YAML syntax error: {error}")]
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        return None, []
    builder = _Builder(name, loader)
    try:
        data = builder.build(node)
    except _TooBig:
        return None, [
            Problem(
                name,
                1,
                1,
                f"file expands to more than {MAX_NODES:,} values "
                "(too many aliases?); rule files must stay small",
            )
        ]
    except RecursionError:
        return None, [Problem(name, 1, 1, "file is nested too deeply or refers to itself")]
    return data, builder.problems
