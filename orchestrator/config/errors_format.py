"""Turning pydantic validation errors into messages a user can act on.

Every message has the shape ``<file>:<line>: <key.path>: <problem>; expected
<X>, got <Y>. <how to fix>``. Cross-field validators raise :class:`FieldProblems`
(a ``ValueError``) that carry a key path *relative to the model* they validate,
so the message points at the exact key rather than at the whole model.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.config.yaml_source import KeyPath, YamlDocument, format_key_path, short
from orchestrator.errors import ConfigError


@dataclass(frozen=True)
class Problem:
    """One problem at a key path relative to the model that found it."""

    path: KeyPath
    message: str
    # Key paths (relative like ``path``) substituted for ``{0}``, ``{1}``... in the message,
    # so a node-level check can name a sibling as ``nodes[1].workers[0]``.
    refs: tuple[KeyPath, ...] = ()

    def render(self, prefix: KeyPath = ()) -> str:
        """The message with ``refs`` rendered as absolute key paths under ``prefix``."""
        if not self.refs:
            return self.message
        return self.message.format(*(format_key_path((*prefix, *ref)) for ref in self.refs))


class FieldProblems(ValueError):
    """Raised by a model validator to report problems at sub-paths of that model."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(" ".join(f"{format_key_path(p.path)}: {p.render()}" for p in problems))

    @classmethod
    def one(cls, path: KeyPath, message: str) -> FieldProblems:
        """A single problem at ``path``."""
        return cls([Problem(path, message)])


def _got(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def number_hint(value: Any, *, integer: bool = False) -> str:
    """Where a number was expected and text was given that Python reads as one: how
    to write it so YAML does too (``" (YAML reads 1e12 as text: ...)"``), else ``""``.

    YAML 1.1 (PyYAML) reads a float only with a dot and a signed exponent:
    ``1.0e+12`` is a number, ``1e12`` and ``1E+12`` are strings.
    """
    if not isinstance(value, str):
        return ""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""  # 'nan' and 'inf' are refused as such, not hinted at
    mantissa, sep, exponent = text.replace("E", "e").partition("e")
    if not sep or ("." in mantissa and exponent.startswith(("+", "-"))):
        # YAML would have read it as a number: it was quoted.
        return " (this is text, not a number; remove the quotes)"
    exact = Decimal(text)
    if integer and exact == exact.to_integral_value() and abs(number) < 1e30:
        return f" (YAML reads {text} as text; write the integer {int(exact)})"
    if "." not in mantissa:
        mantissa += ".0"
    if not exponent.startswith(("+", "-")):
        exponent = "+" + exponent
    return (
        f" (YAML reads {text} as text: a number in this form needs a dot and a signed "
        f"exponent; write {mantissa}e{exponent})"
    )


def _unwrap(annotation: Any) -> list[Any]:
    """The candidate inner types of an annotation (Optional, tuple[X, ...], Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        out = []
        for arg in args:
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def model_at(root: type[BaseModel], path: KeyPath) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at ``path``, if any."""
    model: type[BaseModel] | None = root
    for part in path:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        candidates = [
            c for c in _unwrap(field.annotation) if isinstance(c, type) and issubclass(c, BaseModel)
        ]
        model = candidates[0] if candidates else None
    return model


_TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
    "path_type": "a file path string",
}

_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _describe(error: Any, root: type[BaseModel]) -> tuple[KeyPath, str]:
    """The (absolute key path, message) of one pydantic error dict."""
    loc: KeyPath = tuple(error["loc"])
    kind: str = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        key = short(str(loc[-1]))
        model = model_at(root, loc[:-1])
        allowed = sorted(model.model_fields) if model else []
        close = close_match(key, allowed)
        hint = f"did you mean '{close}'? " if close else ""
        return loc, (
            f"unknown key '{key}'; {hint}expected one of the keys allowed here: "
            f"{', '.join(allowed)}. "
            "Remove or rename it."
        )
    if kind == "missing":
        return loc, (
            f"missing required key '{loc[-1]}'; expected '{loc[-1]}: ...' here. "
            "Add it (see docs/config-reference.md)."
        )
    if kind == "finite_number":
        return loc, (
            f"expected a finite number, got {_got(value)}; NaN and infinity are not allowed. "
            "Write a finite number."
        )
    if kind == "string_too_short":
        return loc, (
            f"expected a non-empty string, got {_got(value)}. Write a value, or remove the key "
            "to use the default."
        )
    if kind == "string_too_long":
        return loc, (
            f"expected at most {ctx.get('max_length')} characters, got "
            f"{len(value) if isinstance(value, str) else _got(value)}. Shorten the value."
        )
    if kind in _TYPE_NAMES:
        integer = kind.startswith("int")
        hint = number_hint(value, integer=integer) if kind.startswith(("int", "float")) else ""
        return loc, f"expected {_TYPE_NAMES[kind]}, got {_got(value)}{hint}. Fix the value."
    if kind == "literal_error":
        return loc, f"expected one of {ctx.get('expected')}, got {_got(value)}. Use one of those."
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        bound = ctx.get(key)
        if isinstance(bound, int) or (isinstance(bound, float) and bound.is_integer()):
            shown = str(int(bound))
        else:
            shown = f"{bound:g}" if isinstance(bound, float) else str(bound)
        return loc, f"expected a number {words} {shown}, got {_got(value)}. Fix the value."
    if kind == "too_short":
        return loc, (
            f"expected at least {ctx.get('min_length')} entries, got "
            f"{ctx.get('actual_length')}. Add entries to the list."
        )
    if kind == "too_long":
        return loc, (
            f"expected at most {ctx.get('max_length')} entries, got "
            f"{ctx.get('actual_length')}. Remove entries from the list."
        )
    if kind == "string_pattern_mismatch":
        return loc, (
            f"expected text matching {ctx.get('pattern')}, got {_got(value)}. "
            "Use letters, digits, '_', '.' and '-'."
        )
    if kind == "value_error":
        exc = ctx.get("error")
        return loc, str(exc) if exc is not None else error["msg"]
    # Any other pydantic error: its own words, kept inside our sentence shape.
    return loc, (
        f"expected a valid value ({error['msg'][:1].lower()}{error['msg'][1:]}), got "
        f"{_got(value)}. Fix the value (see docs/config-reference.md)."
    )


def _has_nested(error: Any, errors: Sequence[Any]) -> bool:
    loc = tuple(error["loc"])
    return any(len(e["loc"]) > len(loc) and tuple(e["loc"][: len(loc)]) == loc for e in errors)


def translate(exc: ValidationError, root: type[BaseModel], doc: YamlDocument) -> ConfigError:
    """One :class:`ConfigError` listing every problem in ``exc``, with file, line and key path."""
    entries: list[tuple[int, str]] = []
    errors = exc.errors()
    for error in errors:
        if error["type"] in ("too_short", "too_long") and _has_nested(error, errors):
            # pydantic counts only the valid items, so a list whose items are wrong is
            # also "too short"; the item errors are the real news.
            continue
        ctx = error.get("ctx") or {}
        inner = ctx.get("error")
        loc: KeyPath = tuple(error["loc"])
        if error["type"] == "value_error" and isinstance(inner, FieldProblems):
            pairs = [((*loc, *p.path), p.render(loc)) for p in inner.problems]
        else:
            pairs = [_describe(error, root)]
        for path, message in pairs:
            line = doc.line_of(path)
            where = f"{doc.source}:{line}" if line is not None else doc.source
            key = format_key_path(path)
            text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
            entries.append((line or 0, text))
    entries.sort(key=lambda e: e[0])
    lines = [text for _, text in entries]
    if len(lines) == 1:
        return ConfigError(lines[0])
    summary = f"{doc.source}: {len(lines)} problems:"
    return ConfigError("\n".join([summary, *("  " + line for line in lines)]))


def close_match(name: str, known: Sequence[str]) -> str | None:
    """The known name closest to ``name`` (a likely typo of it), or None."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(name: str, known: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` when a close name exists, else ``""``."""
    close = close_match(name, known)
    return f"; did you mean {close!r}?" if close else ""
