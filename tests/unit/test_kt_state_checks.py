"""check_hyperparameters and check_assigned_values: what Keras Tuner parses but
its oracles cannot use is refused, and what a real search sends passes."""

from __future__ import annotations

import re
from typing import Any

import keras_tuner
import pytest

from orchestrator.errors import InvalidRequestError
from orchestrator.protocol.kt_state import (
    canonical_hyperparameters,
    check_assigned_values,
    check_hyperparameters,
)
from tests.helpers import make_search


def _space() -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    hp.Int("layers", 1, 3)
    hp.Float("lr", 1e-4, 1e-2, sampling="log")
    hp.Choice("act", ["relu", "tanh"])
    hp.Choice("units", [16, 32])
    hp.Boolean("bn")
    hp.Fixed("seed", 7)
    with hp.conditional_scope("act", ["relu"]):
        hp.Float("slope", 0.0, 0.3)
    return hp


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("layers", 2.0, None),  # an integral float is an Int's value
        ("layers", 2.5, "expected an integer in [1, 3]"),
        ("layers", True, "expected an integer"),  # a bool is not an int here
        ("layers", 4, "expected an integer in [1, 3]"),
        ("lr", 0.1, "expected a number in [0.0001, 0.01]"),
        ("act", "sigmoid", "expected one of the choices"),
        ("units", 32.0, None),
        ("units", True, "expected one of the choices"),
        ("bn", 1, "expected a bool"),
        ("seed", 8, "expected the Fixed value 7"),
        ("slope", 0.1, None),
        ("tuner/epochs", 3, None),  # a value with no hyperparameter: Hyperband's
        ("tuner/trial_id", None, None),
        ("tuner/trial_id", {"a": 1}, "expected an int, float, str, bool or null"),
    ],
)
def test_values_are_checked_against_their_hyperparameter(
    name: str, value: Any, problem: str | None
) -> None:
    hp = _space()
    hp.values[name] = value
    if problem is None:
        check_hyperparameters(hp, where="state")
    else:
        expected = re.escape(f"state.values[{name!r}]: {problem}")
        with pytest.raises(InvalidRequestError, match=expected):
            check_hyperparameters(hp, where="state")


@pytest.mark.parametrize("hypermodel", ["cnn", "mlp"])
def test_the_builtin_hypermodels_spaces_pass(hypermodel: str) -> None:
    """What a real CNN search sends (conditional scopes included) is accepted as is."""
    from workers.hypermodels import resolve_hypermodel

    spec = make_search().hypermodel.model_copy(update={"name": hypermodel})
    hp = keras_tuner.HyperParameters()
    resolve_hypermodel(spec, (8, 8), 10).build(hp)
    config = hp.get_config()
    assert canonical_hyperparameters(config, where="x") == canonical_hyperparameters(
        canonical_hyperparameters(config, where="x"), where="x"
    )


def test_assigned_values_must_come_back_unchanged() -> None:
    assigned = {"layers": 2, "act": "relu", "lr": 0.001}
    check_assigned_values({"layers": 2.0, "act": "relu", "new": 5}, assigned, where="s")
    with pytest.raises(InvalidRequestError, match=r"s.values\['act'\]: the oracle assigned 'relu'"):
        check_assigned_values({"act": "tanh"}, assigned, where="s")
    with pytest.raises(InvalidRequestError, match="the oracle assigned 2"):
        check_assigned_values({"layers": True}, {"layers": 2}, where="s")


def test_names_and_values_from_an_old_ledger_print_without_terminal_controls() -> None:
    """A ledger written before the chief refused them may hold ESC or a bidi override."""
    from orchestrator.cli.render import format_hyperparameters

    text = format_hyperparameters({"x\u202e": "\x1b]0;title\x07\x1b[2J", "y": 0.5})
    assert text == "x\\u202e=\\x1b]0;title\\x07\\x1b[2J y=0.5"
    assert text.isprintable()
