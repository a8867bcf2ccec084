"""YAML 1.1 reads ``1e12`` as text, not a number: wherever a number was expected
and such text was given, the message says how to write it (``1.0e+12``)."""

from __future__ import annotations

import pytest

from orchestrator.config import parse_cluster, parse_search
from orchestrator.config.errors_format import number_hint
from orchestrator.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "integer", "hint"),
    [
        ("1e12", False, "write 1.0e+12"),
        ("5E-3", False, "write 5.0e-3"),
        ("1e3", True, "write the integer 1000"),
        ("12", False, "remove the quotes"),
        ("2.5e-3", False, "remove the quotes"),
        ("nan", False, ""),
        ("abc", False, ""),
        (12, False, ""),
    ],
)
def test_number_hint(value: object, integer: bool, hint: str) -> None:
    got = number_hint(value, integer=integer)
    assert (hint in got) if hint else got == ""


def test_hint_wherever_a_number_was_expected() -> None:
    with pytest.raises(
        ConfigError,
        match=r"nodes\[0\]\.cpus: expected an integer, got '1e3' \(str\) \(YAML reads 1e3 as "
        r"text; write the integer 1000\)\. Fix the value\.",
    ):
        parse_cluster("nodes:\n  - {name: a, cpus: 1e3}\n")
    with pytest.raises(ConfigError, match=r"epoch_s: .*got '1e1' .*write 1\.0e\+1\)"):
        check_search_text("hypermodel: {name: sleep, options: {epoch_s: 1e1}}\n")
    with pytest.raises(
        ConfigError,
        match=r"units: expected numeric min and max, got min=16, max='1e2' \(YAML reads",
    ):
        check_search_text("hypermodel: {name: mlp, overrides: {units: {min: 16, max: 1e2}}}\n")


def check_search_text(text: str) -> None:
    """Load ``text`` and check its hypermodel the way validate and submit do."""
    from workers.hypermodels import validate_overrides

    validate_overrides(parse_search(text).hypermodel)
