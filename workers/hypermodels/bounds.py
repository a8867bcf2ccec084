"""What a built-in hyperparameter's values can mean: its type and its hard limits.

A search may override any built-in hyperparameter (``kernel_size: {value: 7}``),
but only with values the model can build and train with: a kernel size is an
integer >= 1, a dropout rate a number in [0, 1), a learning rate a number > 0.
Each :class:`~workers.hypermodels.space.HpDef` carries a :class:`Bounds` (and a
value type), and every override value (a fixed value, each choice, both ends
of a range and the default) is checked against them before anything starts.

The upper limits are generous but finite: a value past them cannot train (a
10,000-wide kernel, 10**5 conv blocks declaring 10**5 hyperparameters), so it
is refused while it is still a line in a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ValueType = Literal["int", "float", "str", "bool"]

TYPE_WORDS: dict[ValueType | None, str] = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    None: "an integer, a number, a string or true/false (what Keras Tuner takes)",
}


@dataclass(frozen=True)
class Bounds:
    """An interval of allowed numbers; a None end is unbounded, an open end excluded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """``must be >= 1``, ``must lie in [0, 1)``: the rule, for messages and docs."""
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"must lie in {left}{_shown(self.low)}, {_shown(self.high)}{right}"
        if self.low is not None:
            return f"must be {'>' if self.low_open else '>='} {_shown(self.low)}"
        if self.high is not None:
            return f"must be {'<' if self.high_open else '<='} {_shown(self.high)}"
        return "may be any number"


def _shown(value: float) -> str:
    """1048576, not 1.04858e+06; 0.5 as 0.5."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


ANY = Bounds()
UNIT_INTERVAL = Bounds(0, 1, high_open=True)
"""A rate such as dropout: 1.0 would drop every unit."""
LEARNING_RATE = Bounds(0, 10, low_open=True)
"""A learning rate: > 0; past 10 every optimizer here diverges at once."""
MAX_LAYERS = 32
"""Conv blocks or dense layers: each declares its own per-index hyperparameters."""
MAX_WIDTH = 65_536
"""Filters or units of one layer."""
MAX_WINDOW = 64
"""A kernel or pooling window side."""
