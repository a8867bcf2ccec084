"""Reading a YAML config document while remembering where each key came from.

The YAML is composed once into a node tree; from it we build both the plain
Python data (for pydantic) and a map from key path to line number, so that a
validation error deep in the document can say ``cluster.yaml:12: nodes[0].gpus[1]``.

A config file may come from anywhere, so reading it is bounded before anything
is built (the limits are in :mod:`orchestrator.config.limits`):

- the file is read up to 1 MiB and must be UTF-8;
- nesting deeper than ``MAX_NESTING`` is refused while composing (PyYAML's
  composer recurses, so a 1,000-level list would otherwise end in a
  RecursionError);
- aliases are counted before anything expands them: each alias counts as a
  copy of the node it names, and the copies may add at most
  ``ALIAS_EXPANSION_BUDGET`` nodes ("billion laughs"); an alias inside its own
  anchor is refused (a recursive structure);
- a key given twice in one mapping is an error naming both lines (YAML itself
  keeps the last one silently);
- integers must fit in 64 bits and floats must be finite, wherever they are.
"""

from __future__ import annotations

import codecs
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config.limits import (
    ALIAS_EXPANSION_BUDGET,
    MAX_CONFIG_BYTES,
    MAX_INT,
    MAX_NESTING,
    MIN_INT,
)
from orchestrator.config.local_paths import open_regular_file
from orchestrator.errors import ConfigError

KeyPath = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
# The longest int scalar that can still fit in 64 bits: 0b + 64 binary digits.
_MAX_INT_CHARS = 66


def format_key_path(path: KeyPath) -> str:
    """Render ``("nodes", 1, "gpus")`` as ``nodes[1].gpus`` (very long keys shortened)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = short(str(part))
            out += f".{name}" if out else name
    return out


def short(text: str, limit: int = 64) -> str:
    """``text``, cut to ``limit`` characters with ``...`` when longer (for messages)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


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

    def error(self, path: KeyPath, message: str) -> ConfigError:
        """A ConfigError ``<file>:<line>: <key>: <message>`` for ``path`` in this document."""
        line = self.line_of(path)
        where = f"{self.source}:{line}" if line is not None else self.source
        key = format_key_path(path)
        return ConfigError(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class _GuardedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing deep nesting while it composes."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self._source = source
        self._depth = 0
        self._path: list[str | int] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        part: str | int | None = None
        if isinstance(index, yaml.ScalarNode):
            part = index.value
        elif isinstance(index, int) and not isinstance(index, bool):
            part = index
        collection = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        if collection:
            self._depth += 1
            if self._depth > MAX_NESTING:
                self._too_deep(part)
        if part is not None:
            self._path.append(part)
        try:
            return super().compose_node(parent, index)
        finally:
            if part is not None:
                self._path.pop()
            if collection:
                self._depth -= 1

    def _too_deep(self, part: str | int | None) -> None:
        path = [*self._path, *([] if part is None else [part])]
        shown = format_key_path(tuple(path[:4])) + ("..." if len(path) > 4 else "")
        line = self.peek_event().start_mark.line + 1
        key = f" {shown}:" if shown else ""
        raise ConfigError(
            f"{self._source}:{line}:{key} mappings and lists are nested more than "
            f"{MAX_NESTING} levels deep; expected at most {MAX_NESTING} levels (a config "
            "needs about 6). Flatten the structure; is this the right file?"
        )

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        # Constructors raise plain ValueErrors on some well-formed scalars
        # (a date such as 2024-13-45); give them the node's position.
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {node.value!r}: {exc}", node.start_mark
            ) from None


def _syntax_error(source: str, exc: yaml.YAMLError, text: str) -> ConfigError:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return ConfigError(
            f"{source}:{line}:{column}: the file contains the control character #x{code:04x}, "
            "which YAML does not allow; expected printable UTF-8 text. Remove the character "
            "(is this a binary file?)."
        )
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}"
        problem = exc.problem or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError):
            return ConfigError(
                f"{where}: YAML value error: {problem}; expected plain YAML data (mappings, "
                "lists, strings, numbers, true/false, null). Fix the value at that position "
                "(quote it to keep it as text)."
            )
        if isinstance(exc, yaml.composer.ComposerError) and exc.context and exc.context_mark:
            # "expected a single document (line 1), but found another document here"
            problem = f"{exc.context} (line {exc.context_mark.line + 1}), {problem} here"
            context = ""
        else:
            context = f" ({exc.context})" if exc.context else ""
        expected = "" if "expected" in problem else "; expected valid YAML"
        return ConfigError(
            f"{where}: YAML syntax error: {problem}{context}{expected}. "
            "Fix the YAML at that position (check indentation, colons and quotes)."
        )
    return ConfigError(
        f"{source}: YAML syntax error: {exc}; expected valid YAML. Fix the YAML syntax."
    )


def _children(node: yaml.Node) -> list[tuple[yaml.Node, str | int | None]]:
    """A node's children, each with its key-path part (None for a mapping's keys)."""
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[yaml.Node, str | int | None]] = []
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            out += [(key, None), (value, name if isinstance(name, str) else None)]
        return out
    if isinstance(node, yaml.SequenceNode):
        return [(item, index) for index, item in enumerate(node.value)]
    return []


def _check_aliases(root: yaml.Node, source: str) -> None:
    """Refuse recursive aliases and aliases that expand past the budget.

    Sizes are memoised per node, so the check is linear in the composed tree
    however large the expansion would be.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, path: KeyPath) -> int:
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in active:
            shown = format_key_path(path)
            raise ConfigError(
                f"{source}:{node.start_mark.line + 1}: {shown}: an alias (*name) refers back "
                f"to the value anchored at line {node.start_mark.line + 1}, which contains it "
                "(a recursive structure); expected plain, finite data. Remove that alias or "
                "write the value out."
            )
        active.add(key)
        total = 1
        for child, part in _children(node):
            total += size(child, path if part is None else (*path, part))
        active.discard(key)
        sizes[key] = total
        return total

    expanded = size(root, ())
    added = expanded - len(sizes)
    if added > ALIAS_EXPANSION_BUDGET:
        raise ConfigError(
            f"{source}: the YAML aliases (*name) would expand to {added:,} more nodes; expected "
            f"at most {ALIAS_EXPANSION_BUDGET:,} (each alias counts as a copy of what it names; "
            "this looks like a 'billion laughs' document). Use fewer aliases or write the "
            "values out."
        )


def _scalar_key(node: yaml.Node) -> tuple[str, str] | None:
    return (node.tag, node.value) if isinstance(node, yaml.ScalarNode) else None


class _LineRecorder:
    """One walk over the node tree: key lines, duplicate keys, oversized integers."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[KeyPath, int] = {}

    def error(self, path: KeyPath, line: int, message: str) -> ConfigError:
        key = format_key_path(path)
        return ConfigError(f"{self.source}:{line}: {key}: {message}")

    def walk(self, node: yaml.Node, path: KeyPath) -> None:
        if isinstance(node, yaml.MappingNode):
            self._mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, index)
                self.lines.setdefault(child, item.start_mark.line + 1)
                self.walk(item, child)
        elif isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
            digits = node.value.replace("_", "").lstrip("+-")
            if len(digits) > _MAX_INT_CHARS:
                raise self.error(
                    path,
                    node.start_mark.line + 1,
                    f"the integer {node.value[:20]}... has {len(digits)} digits; expected an "
                    f"integer between {MIN_INT} and {MAX_INT}. Use a smaller number.",
                )

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> None:
        first: dict[tuple[str, str], int] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            line = key_node.start_mark.line + 1
            ident = _scalar_key(key_node)
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if ident is not None:
                if ident in first:
                    raise self.error(
                        (*path, key) if isinstance(key, str) else path,
                        line,
                        f"the key {short(repr(key))} is given twice in this mapping (lines {first[ident]} "
                        f"and {line}); expected each key once. Remove one of them (YAML would "
                        "silently keep the last).",
                    )
                first[ident] = line
            if not isinstance(key, str):
                continue
            child = (*path, key)
            self.lines.setdefault(child, line)
            self.walk(value_node, child)
        # Keys merged in with `<<: *base` take the lines of the base, unless the
        # mapping gives them itself (recorded above, so setdefault keeps those).
        for merged in merges:
            for base in merged.value if isinstance(merged, yaml.SequenceNode) else [merged]:
                if isinstance(base, yaml.MappingNode):
                    self._mapping(base, path)


def check_values(data: Any, doc: YamlDocument) -> None:
    """Refuse non-finite floats, integers beyond 64 bits and deep nesting anywhere in ``data``.

    Iterative, so mapping input (a cluster sent by ``ktc scale --apply``) is
    bounded too. Raises a ConfigError naming the key (and line, when known).
    """
    stack: list[tuple[Any, KeyPath]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise doc.error(
                path,
                f"expected a finite number, got {value!r}; NaN and infinity are not allowed "
                "in a config file. Write a finite number.",
            )
        if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
            shown = str(value) if value.bit_length() < 200 else f"a {value.bit_length()}-bit number"
            raise doc.error(
                path,
                f"expected an integer between {MIN_INT} and {MAX_INT}, got {shown}. "
                "Use a smaller number.",
            )
        if isinstance(value, (dict, list, tuple)):
            if len(path) >= MAX_NESTING:
                raise doc.error(
                    path[:4],
                    f"mappings and lists are nested more than {MAX_NESTING} levels deep; "
                    f"expected at most {MAX_NESTING} levels. Flatten the structure.",
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, (str, int)) and not isinstance(key, bool):
                    stack.append((item, (*path, key)))
                else:
                    stack.append((item, path))


def parse_yaml_text(text: str, source: str, base_dir: Path) -> YamlDocument:
    """Parse YAML ``text`` into a :class:`YamlDocument` whose top level is a mapping.

    Raises :class:`ConfigError` for syntax errors (with ``file:line:col``), an
    empty document, several documents, a top level that is not a mapping, and
    for any of the limits in the module docstring.
    """
    loader: _GuardedLoader | None = None
    try:
        # The reader checks every character up front: this can raise already.
        loader = _GuardedLoader(text, source)
        root = loader.get_single_node()
        if root is None:
            raise ConfigError(
                f"{source}: the file is empty; expected a mapping of keys such as "
                "'nodes:' (cluster file) or 'hypermodel:' (search file). Write the settings "
                "as 'key: value' lines (see docs/config-reference.md)."
            )
        _check_aliases(root, source)
        recorder = _LineRecorder(source)
        recorder.walk(root, ())
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise _syntax_error(source, exc, text) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"{type(data).__name__} {data!r}"
        if len(kind) > 80:
            kind = kind[:77] + "..."
        raise ConfigError(
            f"{source}:{root.start_mark.line + 1}: the top level must be a mapping of keys "
            f"(key: value lines); expected a mapping, got {kind}. Write the settings as "
            "'key: value' at the top level."
        )
    lines = {(): root.start_mark.line + 1, **recorder.lines}
    doc = YamlDocument(data=data, source=source, base_dir=base_dir, lines=lines)
    check_values(data, doc)
    return doc


def _decode(raw: bytes, source: str) -> str:
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):  # fmt: skip
        if raw.startswith(bom):
            raise ConfigError(
                f"{source}: the file is {name} text; expected UTF-8. Re-save it as UTF-8 "
                f"(e.g. `iconv -f {name} -t UTF-8 {source} > fixed.yaml`)."
            )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{source}:{line}:{column}: the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} "
            "cannot be decoded); expected a UTF-8 YAML file. Re-save it as UTF-8 (e.g. "
            f"`iconv -f latin1 -t UTF-8 {source} > fixed.yaml` if it is Latin-1)."
        ) from None


def _too_big(source: str, size: int | None) -> ConfigError:
    got = f"{size:,} bytes" if size is not None else f"more than {MAX_CONFIG_BYTES:,} bytes"
    return ConfigError(
        f"{source}: the file is {got}; expected a config file of at most 1 MiB "
        f"({MAX_CONFIG_BYTES:,} bytes). Check that this is the right file (config files are "
        "a few KB), or shrink it."
    )


def read_config_text(path: str | Path) -> str:
    """The text of a config file, read once and bounded.

    A missing, unreadable, oversized or non-UTF-8 file, and anything but a
    regular file (a folder, a FIFO, a device, a symlink loop), is a
    ConfigError; nothing but a regular file is opened.
    """
    file = Path(path)
    source = str(path)
    opened = open_regular_file(file)
    if isinstance(opened, str):
        cwd = "" if file.is_absolute() else f" (it is relative to {Path.cwd()})"
        raise ConfigError(
            f"{source}: {opened}; expected a readable YAML file (a regular file). "
            f"Check the path{cwd}, or name the file itself."
        )
    try:
        with opened as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > MAX_CONFIG_BYTES:
                raise _too_big(source, size)
            # Bounded read even so: the file may grow between fstat and read.
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{source}: cannot read the file ({exc.strerror or exc}); expected a readable "
            "YAML file. Check the file's permissions."
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _too_big(source, None)
    return _decode(raw, source)


def read_yaml_file(path: str | Path) -> YamlDocument:
    """Read (:func:`read_config_text`) and parse a YAML config file."""
    text = read_config_text(path)
    return parse_yaml_text(text, str(path), Path(path).resolve().parent)


def document_from(data: str | Mapping[str, Any], source: str, base_dir: Path) -> YamlDocument:
    """A document from YAML text or an already-parsed mapping (no line numbers then)."""
    if isinstance(data, str):
        if len(data.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
            raise _too_big(source, len(data.encode("utf-8", "surrogatepass")))
        return parse_yaml_text(data, source, base_dir)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: the top level must be a mapping of keys; expected a mapping, got "
            f"{type(data).__name__}. Pass a mapping."
        )
    doc = YamlDocument(data=dict(data), source=source, base_dir=base_dir, lines={})
    check_values(doc.data, doc)
    return doc
