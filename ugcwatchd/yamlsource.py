"""YAML with its source marks: every value knows its file, line and column, so errors can say where.

PyYAML's ``safe_load`` forgets positions and silently keeps the last of two equal keys; this loader
composes the node tree instead, remembers where each value and key came from, refuses duplicate keys,
expands ``${VAR}`` from the environment, and collects every problem instead of stopping at the first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from .errors import ConfigProblems, Problem

PathKey = tuple[str | int, ...]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def dotted(path: PathKey) -> str:
    """``("rules", 1, "dublab", "to", 0)`` → ``rules[1].dublab.to[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Source:
    """Plain data loaded from YAML, with where each part of it stood in the file."""

    file: str
    data: Any
    value_marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def problem(self, path: PathKey, message: str, *, at_key: bool = False) -> Problem:
        """A problem at ``path``, or at its nearest ancestor that has a mark."""
        mark: tuple[int, int] | None
        if at_key and path in self.key_marks:
            mark = self.key_marks[path]
        else:
            probe = path
            while probe and probe not in self.value_marks:
                probe = probe[:-1]
            mark = self.value_marks.get(probe)
        line, column = mark if mark is not None else (None, None)
        return Problem(self.file, line, column, dotted(path), message)


class _Builder:
    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.source = Source(file, None)
        self.env = env
        self.problems: list[Problem] = []
        self._scalars = SafeConstructor()

    def _mark(self, node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.source.value_marks[path] = self._mark(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            value = self._scalars.construct_object(node)
        except ConstructorError as exc:
            self.problems.append(self.source.problem(path, str(exc.problem)))
            return None
        return self._expand(value, path) if isinstance(value, str) else value

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        self._scalars.flatten_mapping(node)  # YAML merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._scalars.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                line, column = self._mark(key_node)
                self.problems.append(Problem(self.source.file, line, column, dotted(path), "keys must be plain words"))
                continue
            child = (*path, key)
            if key in out:
                line, column = self._mark(key_node)
                self.problems.append(
                    Problem(
                        self.source.file,
                        line,
                        column,
                        dotted(child),
                        "duplicate key (the earlier one would be ignored)",
                    )
                )
                continue
            self.source.key_marks[child] = self._mark(key_node)
            out[key] = self.build(value_node, child)
        return out

    def _expand(self, text: str, path: PathKey) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.env:
                self.problems.append(
                    self.source.problem(path, f"environment variable {name} is not set (used as ${{{name}}})")
                )
                return ""
            return self.env[name]

        return _VAR.sub(substitute, text)


def load(text: str, file: str, env: Mapping[str, str] | None = None) -> Source:
    """Parse ``text`` (the contents of ``file``); raises :class:`ConfigProblems` with every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise ConfigProblems(
            [Problem(file, line, column, "", f"not valid YAML: {exc.problem or exc.context}")]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigProblems([Problem(file, None, None, "", f"not valid YAML: {exc}")]) from None
    builder = _Builder(file, os.environ if env is None else env)
    builder.source.data = {} if root is None else builder.build(root, ())
    if builder.problems:
        raise ConfigProblems(builder.problems)
    return builder.source
