"""Reading a YAML config document while remembering where each key came from.

The YAML is composed once into a node tree; from it we build both the plain
Python data (for pydantic) and a map from key path to line number, so that a
validation error deep in the document can say ``cluster.yaml:12: nodes[0].gpus[1]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import ConfigError

KeyPath = tuple[str | int, ...]


def format_key_path(path: KeyPath) -> str:
    """Render ``("nodes", 1, "gpus")`` as ``nodes[1].gpus``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class YamlDocument:
    """A parsed config document: its data, where it came from, and key lines.

    ``lines`` maps a key path to the 1-based line of the key (for mapping
    entries) or of the item (for sequence entries).
    """

    data: Any
    source: str
    base_dir: Path
    lines: Mapping[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its closest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def _record_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                continue
            child = (*path, key)
            lines.setdefault(child, key_node.start_mark.line + 1)
            _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines.setdefault(child, item.start_mark.line + 1)
            _record_lines(item, child, lines)


def _syntax_error(source: str, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        return ConfigError(
            f"{source}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {problem}{context}. "
            "Fix the YAML at that position (check indentation, colons and quotes)."
        )
    return ConfigError(f"{source}: YAML syntax error: {exc}. Fix the YAML syntax.")


def parse_yaml_text(text: str, source: str, base_dir: Path) -> YamlDocument:
    """Parse YAML ``text`` into a :class:`YamlDocument` whose top level is a mapping.

    Raises :class:`ConfigError` for syntax errors (with ``file:line:col``), an
    empty document, several documents, or a top level that is not a mapping.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            raise ConfigError(
                f"{source}: the file is empty; expected a mapping of keys such as "
                "'nodes:' (cluster file) or 'hypermodel:' (search file). "
                "See docs/config-reference.md."
            )
        data = yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as exc:
        raise _syntax_error(source, exc) from None
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"{type(data).__name__} {data!r}"
        raise ConfigError(
            f"{source}:{root.start_mark.line + 1}: the top level must be a mapping of keys "
            f"(key: value lines); got {kind}. Write the settings as 'key: value' at the top level."
        )
    lines: dict[KeyPath, int] = {(): root.start_mark.line + 1}
    _record_lines(root, (), lines)
    return YamlDocument(data=data, source=source, base_dir=base_dir, lines=lines)


def read_yaml_file(path: str | Path) -> YamlDocument:
    """Read and parse a YAML config file; a missing or unreadable file is a ConfigError."""
    file = Path(path)
    source = str(path)
    if not file.exists():
        raise ConfigError(
            f"{source}: no such file. Check the path (it is relative to {Path.cwd()})."
        )
    if file.is_dir():
        raise ConfigError(f"{source}: is a directory; expected a YAML file.")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the file: {exc}.") from None
    return parse_yaml_text(text, source, file.resolve().parent)


def document_from(data: str | Mapping[str, Any], source: str, base_dir: Path) -> YamlDocument:
    """A document from YAML text or an already-parsed mapping (no line numbers then)."""
    if isinstance(data, str):
        return parse_yaml_text(data, source, base_dir)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: the top level must be a mapping of keys; got {type(data).__name__}."
        )
    return YamlDocument(data=dict(data), source=source, base_dir=base_dir, lines={})
