"""The declarative search spaces of the built-in hypermodels, and their overrides.

A built-in hypermodel describes each hyperparameter once, as an :class:`HpDef`
(pure data, no TensorFlow). The search YAML may override any of them under
``hypermodel.overrides``; :func:`effective_def` merges an override into the
default and validates it, and :func:`declare` registers the result on a Keras
Tuner ``HyperParameters`` object. Keeping this module free of TF lets the chief
and ``ktc`` validate a search file in milliseconds.

Override forms (``<name>`` is a hyperparameter name of the hypermodel):

- ``{min, max, step, sampling}`` (any subset): change an Int/Float range;
- ``{values: [...]}``: turn the hyperparameter into a Choice over these values;
- ``{value: x}``: fix it (a Keras Tuner ``Fixed``).

A range or ``values`` override may also set ``default`` (the value Keras Tuner
tries first); it must lie in the range or the values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from orchestrator.config import limits
from orchestrator.config.errors_format import number_hint, suggest
from orchestrator.errors import ConfigError
from workers.hypermodels.bounds import ANY, TYPE_WORDS, Bounds, ValueType

HpKind = Literal["int", "float", "choice", "boolean", "fixed"]
Scalar = int | float | str | bool

_RANGE_KEYS = frozenset({"min", "max", "step", "sampling"})
_ALL_KEYS = _RANGE_KEYS | {"values", "value", "default"}
_SAMPLINGS = ("linear", "log", "reverse_log")


@dataclass(frozen=True)
class HpDef:
    """One hyperparameter of a built-in search space.

    ``allowed`` restricts the values a Choice/Fixed override may take (for
    example the optimizer names the model knows how to build); empty means any
    value of the right type. ``value_type`` is that type (derived from ``kind``
    for Int, Float and Boolean; None: any scalar Keras Tuner takes) and
    ``bounds`` the numbers the model can build with (:mod:`.bounds`): every
    override value is checked against both. ``per_index`` marks a template such as ``filters``
    that is declared once per block as ``filters_0``, ``filters_1``, ...
    """

    name: str
    kind: HpKind
    default: Scalar | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str = "linear"
    values: tuple[Scalar, ...] = ()
    allowed: tuple[Scalar, ...] = ()
    per_index: bool = False
    doc: str = ""
    only_when_overridden: bool = False
    value_type: ValueType | None = None
    bounds: Bounds = ANY

    @property
    def expected_type(self) -> ValueType | None:
        """The type every value of this hyperparameter must have (None: any scalar)."""
        if self.value_type is not None:
            return self.value_type
        derived: dict[str, ValueType] = {"int": "int", "float": "float", "boolean": "bool"}
        return derived.get(self.kind)

    def describe(self) -> str:
        """A one-line human description of the range, for docs and errors."""
        if self.kind in ("int", "float"):
            text = f"{self.kind.capitalize()} {self.min}..{self.max}"
            if self.step is not None:
                text += f" step {self.step}"
            if self.sampling != "linear":
                text += f" {self.sampling}"
            return text
        if self.kind == "choice":
            return f"Choice {list(self.values)}"
        if self.kind == "boolean":
            return "Boolean"
        return f"Fixed {self.default!r}"


@dataclass(frozen=True)
class SpaceSpec:
    """The hyperparameters and option keys one built-in hypermodel accepts."""

    hypermodel: str
    hps: tuple[HpDef, ...]
    options: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> HpDef:
        """The definition named ``name`` (KeyError when unknown)."""
        for hp in self.hps:
            if hp.name == name:
                return hp
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        """The override keys this hypermodel knows, in declaration order."""
        return tuple(hp.name for hp in self.hps)


def _where(hypermodel: str, key: str) -> str:
    return f"search.yaml: hypermodel.overrides.{key}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def effective_def(space: SpaceSpec, name: str, override: Any) -> HpDef:
    """Merge ``override`` into the default definition ``name`` and validate it.

    Raises :class:`ConfigError` naming the key, the problem and the fix.
    """
    where = _where(space.hypermodel, name)
    try:
        base = space.get(name)
    except KeyError:
        raise ConfigError(
            f"{where}: unknown hyperparameter for {space.hypermodel!r}"
            f"{suggest(name, space.names) or '.'} Expected one of: {', '.join(space.names)}. "
            "Fix the name or remove the override."
        ) from None
    if not isinstance(override, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping such as {{min: .., max: ..}}, {{values: [..]}} "
            f"or {{value: ..}}, got {override!r}. Write the override as a mapping."
        )
    keys = set(override)
    unknown = sorted(str(k) for k in keys - _ALL_KEYS)
    if unknown:
        bad = unknown[0]
        raise ConfigError(
            f"{where}.{bad}: unknown override key{suggest(bad, sorted(_ALL_KEYS)) or '.'} "
            f"Expected one of min, max, step, sampling, values, value, default. "
            "Rename or remove it."
        )
    if not keys:
        raise ConfigError(
            f"{where}: empty override; expected min/max, values or value. Give one of them "
            "or remove the override."
        )
    if keys == {"default"}:
        raise ConfigError(
            f"{where}: 'default' needs a range or values next to it; expected min/max or "
            "values too. Add them, or use {value: x} to fix the value."
        )
    forms = [("value" in keys), ("values" in keys), bool(keys & _RANGE_KEYS)]
    if sum(forms) > 1:
        raise ConfigError(
            f"{where}: mixes override forms {sorted(keys)}; use exactly one of "
            "{min, max, step, sampling}, {values: [...]} or {value: x} (expected exactly "
            "one). Keep one form."
        )
    if "value" in keys:
        if "default" in keys:
            raise ConfigError(
                f"{where}: a fixed {{value: x}} takes no 'default'; expected no default next "
                "to value. Remove it."
            )
        value = override["value"]
        _check_member(where, base, value)
        return replace(base, kind="fixed", default=value, values=(value,))
    if "values" in keys:
        values = override["values"]
        if not isinstance(values, list | tuple) or not values:
            raise ConfigError(
                f"{where}.values: expected a non-empty list, got {values!r}. "
                "List at least one value."
            )
        for value in values:
            _check_member(where, base, value)
        kinds = {type(v) for v in values}
        if len(kinds) > 1 and not all(_is_number(v) for v in values):
            raise ConfigError(
                f"{where}.values: all values must have one type, got {list(values)!r}; "
                "expected all numbers, all strings or all booleans. Make them one type."
            )
        if len(set(values)) != len(values):
            raise ConfigError(
                f"{where}.values: duplicate values in {list(values)!r}; expected each value "
                "once. Remove the repeats."
            )
        default = override.get("default", values[0])
        if default not in values:
            raise ConfigError(
                f"{where}.default: {default!r} is not one of {list(values)!r}; expected one "
                "of the values. Pick one of them."
            )
        return replace(base, kind="choice", values=tuple(values), default=default)
    # Range form.
    if base.kind not in ("int", "float"):
        raise ConfigError(
            f"{where}: {name!r} is a {base.describe()}; a range (min/max/step/sampling) "
            f"applies only to Int and Float; expected {{values: [...]}} or {{value: x}}. "
            "Use one of those."
        )
    return _merge_range(where, base, override)


def _check_member(where: str, base: HpDef, value: Any) -> None:
    """One fixed or choice value (or a default) against the type and bounds of ``base``."""
    kind = base.expected_type
    scalar = isinstance(value, int | float | str) and not (
        isinstance(value, float) and not math.isfinite(value)
    )
    ok = {
        "int": _is_int(value),
        "float": _is_number(value),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        None: scalar,
    }[kind]
    if not ok:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        hint = number_hint(value, integer=kind == "int") if kind in ("int", "float") else ""
        raise ConfigError(
            f"{where}: expected {TYPE_WORDS[kind]} for {base.name!r}, got {shown}{hint}. "
            "Fix the value."
        )
    if base.allowed and value not in base.allowed:
        raise ConfigError(
            f"{where}: {value!r} is not supported for {base.name!r}"
            f"{suggest(str(value), [str(a) for a in base.allowed]) or '.'} "
            f"Expected one of: {', '.join(map(str, base.allowed))}. Use one of those."
        )
    if _is_number(value) and not base.bounds.contains(value):
        raise ConfigError(
            f"{where}: {base.name!r} {base.bounds.describe()}, got {value!r}. Fix the value."
        )


def _merge_range(where: str, base: HpDef, override: Mapping[str, Any]) -> HpDef:
    lo = override.get("min", base.min)
    hi = override.get("max", base.max)
    step = override.get("step", base.step)
    sampling = override.get("sampling", base.sampling)
    integer = base.kind == "int"
    check = _is_int if integer else _is_number
    for key, value in (("min", lo), ("max", hi)):
        if not check(value):
            raise ConfigError(
                f"{where}.{key}: expected {'an integer' if integer else 'a number'}, "
                f"got {value!r}{number_hint(value, integer=integer)}. Fix the value."
            )
        if not base.bounds.contains(value):
            raise ConfigError(
                f"{where}.{key}: {base.name!r} {base.bounds.describe()}, got {value!r}. Fix {key}."
            )
    if step is not None and (not check(step) or step <= 0):
        raise ConfigError(
            f"{where}.step: expected a positive number, got {step!r}"
            f"{number_hint(step, integer=integer)}. Fix the step."
        )
    if sampling not in _SAMPLINGS:
        raise ConfigError(
            f"{where}.sampling: expected one of {', '.join(_SAMPLINGS)}, got {sampling!r}"
            f"{suggest(str(sampling), _SAMPLINGS) or '.'} Use one of those."
        )
    if lo > hi:
        raise ConfigError(
            f"{where}: `min <= max` must hold, but got (min={lo}, max={hi}). Swap them."
        )
    if sampling != "linear" and lo <= 0:
        raise ConfigError(
            f"{where}: sampling {sampling!r} needs min > 0, got min={lo}; "
            "expected min > 0. Raise min or use sampling: linear."
        )
    if integer and not (lo >= limits.MIN_INT and hi <= limits.MAX_INT):
        raise ConfigError(
            f"{where}: expected integers between {limits.MIN_INT} and {limits.MAX_INT}, got "
            f"(min={lo}, max={hi}). Narrow the range."
        )
    if not math.isfinite(float(hi) - float(lo)):
        # Keras Tuner samples min + (max - min) * u: an infinite width is NaN.
        raise ConfigError(
            f"{where}: `max - min` must be a finite number, but got (min={lo}, max={hi}). "
            "Narrow the range."
        )
    if base.kind == "int":
        lo, hi = int(lo), int(hi)
        step = int(step) if step is not None else None
    elif step is not None and sampling != "linear" and step <= 1:
        # Keras Tuner treats a Float step under log sampling as a multiplicative factor.
        raise ConfigError(
            f"{where}.step: with sampling {sampling!r} the step is a factor and must be > 1, "
            f"got {step}. Drop step or use sampling: linear."
        )
    default = override.get("default", base.default)
    if "default" in override and not (check(default) and lo <= default <= hi):
        raise ConfigError(
            f"{where}.default: expected a number in [{lo}, {hi}], got {default!r}. Fix the default."
        )
    if not (isinstance(default, int | float) and lo <= default <= hi):
        default = lo
    if base.kind == "int":
        default = int(default)
    return replace(base, min=lo, max=hi, step=step, sampling=sampling, default=default)


def resolve_space(
    space: SpaceSpec, overrides: Mapping[str, Any], options: Mapping[str, Any]
) -> dict[str, HpDef]:
    """Validate ``overrides`` and ``options`` against ``space``; the effective defs by name.

    Definitions flagged ``only_when_overridden`` (``batch_size``) appear only when
    overridden.
    """
    for key in options:
        if key not in space.options:
            known = ", ".join(space.options) or "(none)"
            raise ConfigError(
                f"search.yaml: hypermodel.options.{key}: unknown option for "
                f"{space.hypermodel!r}{suggest(str(key), list(space.options)) or '.'} Expected one "
                f"of: {known}. Fix the name or remove it."
            )
    resolved: dict[str, HpDef] = {}
    for name, override in overrides.items():
        resolved[str(name)] = effective_def(space, str(name), override)
    out: dict[str, HpDef] = {}
    for hp in space.hps:
        if hp.name in resolved:
            out[hp.name] = resolved[hp.name]
        elif not hp.only_when_overridden:
            out[hp.name] = hp
    return out


def upper_bound(hp: HpDef) -> int:
    """The largest integer value ``hp`` can take (sizes per-index declarations)."""
    if hp.kind in ("int", "float"):
        return int(math.floor(hp.max or 0))
    return int(max(int(v) for v in hp.values))


def declare(hp: Any, definition: HpDef, name: str | None = None) -> Any:
    """Register ``definition`` on a Keras Tuner ``HyperParameters`` and return its value.

    ``name`` overrides the registered name (``filters_1`` for the ``filters``
    template). Works on any object with Keras Tuner's ``hp.*`` methods, so this
    module never imports keras_tuner itself.
    """
    hp_name = name or definition.name
    kind = definition.kind
    if kind == "fixed":
        return hp.Fixed(hp_name, definition.default)
    if kind == "choice":
        return hp.Choice(hp_name, list(definition.values), default=definition.default)
    if kind == "boolean":
        return hp.Boolean(hp_name, default=bool(definition.default))
    if kind == "int":
        return hp.Int(
            hp_name,
            int(definition.min or 0),
            int(definition.max or 0),
            step=int(definition.step) if definition.step is not None else 1,
            sampling=definition.sampling,
            default=int(definition.default) if definition.default is not None else None,
        )
    return hp.Float(
        hp_name,
        float(definition.min or 0.0),
        float(definition.max or 0.0),
        step=definition.step,
        sampling=definition.sampling,
        default=float(definition.default) if definition.default is not None else None,
    )


def generic_def(name: str, override: Any) -> HpDef:
    """The definition an override declares for a user hypermodel, whose space is unknown.

    ``{value}`` is a Fixed, ``{values}`` a Choice, and a range needs ``min`` and
    ``max``: an Int when both (and ``step``) are integers, else a Float. Keras
    Tuner keeps the first declaration of a name, so declaring these before the
    user's ``build`` runs overrides the user's own ranges.
    """
    where = f"search.yaml: hypermodel.overrides.{name}"
    if not isinstance(override, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping such as {{min: .., max: ..}}, {{values: [..]}} "
            f"or {{value: ..}}, got {override!r}. Write the override as a mapping."
        )
    if "value" in override:
        base = HpDef(name, "fixed", default=override["value"])
    elif "values" in override:
        values = override["values"]
        first = values[0] if isinstance(values, list | tuple) and values else None
        base = HpDef(name, "boolean" if isinstance(first, bool) else "choice", default=first)
        if isinstance(first, int | float) and not isinstance(first, bool):
            base = HpDef(name, "float")
    else:
        missing = [key for key in ("min", "max") if key not in override]
        if missing:
            raise ConfigError(
                f"{where}: a range for a user hypermodel needs both min and max "
                f"(missing {', '.join(missing)}); the default range is unknown to ktcluster."
            )
        ints = all(_is_int(override.get(k)) for k in ("min", "max")) and (
            override.get("step") is None or _is_int(override.get("step"))
        )
        base = HpDef(name, "int" if ints else "float", min=override["min"], max=override["max"])
    space = SpaceSpec("user hypermodel", (base,))
    return effective_def(space, name, override)
