"""Reading YAML files that people write by hand, reporting problems with their line numbers.

Plans and the failure knowledge base are both validated this way: every problem at once, each
as ``file:line: field: message``, so that a bad file is fixed in one pass.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

import yaml

from metabuilder.domain.limits import MAX_YAML_DEPTH, MAX_YAML_VALUES
from metabuilder.domain.problems import Problem

__all__ = ["Problem", "YamlReader", "YamlSyntaxError", "compose", "kind_of"]

E = TypeVar("E", bound=StrEnum)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML composes nodes recursively: a few hundred nested ``[`` exhaust Python's stack."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.depth >= MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def compose(text: str, source: str) -> yaml.Node | None:
    """The YAML node tree of ``text``; a syntax error becomes a ``ValueError`` carrying one Problem."""
    try:
        root = yaml.compose(text, Loader=_BoundedLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = getattr(err, "problem", None) or str(err)
        raise YamlSyntaxError(Problem(source, line, "", f"not valid YAML: {detail}")) from err
    if root is not None and _expanded_values(root, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise YamlSyntaxError(Problem(source, None, "", f"more than {MAX_YAML_VALUES} values once its aliases "
                                                        "(*name) are expanded"))
    return root


def _expanded_values(root: yaml.Node, budget: int) -> int:
    """How many nodes the tree has with every alias expanded, counting no further than ``budget + 1``."""
    count, stack = 0, [root]
    while stack and count <= budget:
        node = stack.pop()
        count += 1
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    return count


class YamlSyntaxError(ValueError):
    """The text is not YAML at all."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def kind_of(node: yaml.Node) -> str:
    """How to name a node in a message: 'a mapping', 'a list' or the scalar's text."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}"


class YamlReader:
    """Walks a composed YAML node tree, collecting problems with their lines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def problem(self, node: yaml.Node | None, fld: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(Problem(self.source, line, fld, message))

    def mapping(self, node: yaml.Node, fld: str, allowed: set[str]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, fld, f"expected a mapping, got {kind_of(node)}")
            return {}
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            path = f"{fld}.{key}" if fld else str(key)
            if not isinstance(key, str):
                self.problem(key_node, fld, "keys must be strings")
            elif key not in allowed:
                self.problem(key_node, path, f"unknown key (allowed: {', '.join(sorted(allowed))})")
            elif key in out:
                self.problem(key_node, path, "duplicate key")
            else:
                out[key] = (key_node, value_node)
        return out

    def scalar(self, node: yaml.Node, fld: str) -> object:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, fld, f"expected a single value, got {kind_of(node)}")
            return None
        value = yaml.constructor.SafeConstructor().construct_object(node, deep=True)
        if isinstance(value, str) and "\0" in value:
            self.problem(node, fld, "contains a NUL byte (\\0), which no command, argument or environment "
                                    "value can hold")
        return value

    def string(self, node: yaml.Node, fld: str, *, required_nonempty: bool = True) -> str | None:
        value = self.scalar(node, fld)
        if value is None and isinstance(node, yaml.ScalarNode):
            self.problem(node, fld, "must not be empty")
            return None
        if value is not None and not isinstance(value, str):
            self.problem(node, fld, f"expected text, got {value!r}")
            return None
        if isinstance(value, str) and required_nonempty and not value.strip():
            self.problem(node, fld, "must not be empty")
            return None
        return value if isinstance(value, str) else None

    def boolean(self, node: yaml.Node, fld: str) -> bool:
        value = self.scalar(node, fld)
        if not isinstance(value, bool):
            self.problem(node, fld, f"expected true or false, got {value!r}")
            return False
        return value

    def choice(self, node: yaml.Node, fld: str, kind: type[E], noun: str) -> E | None:
        """The member of enum ``kind`` named by the node, or None after reporting the valid names."""
        raw = self.scalar(node, fld)
        try:
            return kind(str(raw))
        except ValueError:
            self.problem(node, fld, f"unknown {noun} {raw!r} (expected one of: {', '.join(m.value for m in kind)})")
            return None

    def string_list(self, node: yaml.Node, fld: str) -> list[str]:
        """The texts of a list node; each item that is not text is reported at its own index."""
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, fld, f"expected a list, got {kind_of(node)}")
            return []
        return [v for i, item in enumerate(node.value) if (v := self.string(item, f"{fld}[{i}]")) is not None]

    def number(self, node: yaml.Node, fld: str, low: float, high: float) -> float | None:
        value = self.scalar(node, fld)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            self.problem(node, fld, f"expected a number from {low:g} to {high:g}, got {value!r}")
            return None
        return float(value)
