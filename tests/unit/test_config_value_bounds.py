"""Values a search file may hold only if they can run: every hypermodel override
checked against what the hyperparameter means, the objective by the chief's own
metric-name rule, and the numbers with no sane upper bound given one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.chief import request_checks
from orchestrator.cli.main import main
from orchestrator.config import parse_search
from orchestrator.errors import ConfigError, InvalidRequestError
from orchestrator.protocol import names
from workers.hypermodels import validate_overrides
from workers.hypermodels.catalog import SPACES
from workers.hypermodels.space import effective_def


def _check(name: str, overrides: dict[str, Any], options: dict[str, Any] | None = None) -> None:
    # Raw objects, as a worker sees a spec: the check must not rely on the config models.
    validate_overrides(SimpleNamespace(name=name, overrides=overrides, options=options or {}))


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("cnn", {"kernel_size": {"value": "abc"}}, r"kernel_size: expected an integer for "),
        ("cnn", {"kernel_size": {"value": {"a": 1}}}, r"expected an integer .* got \{'a': 1\}"),
        ("cnn", {"kernel_size": {"value": 0}}, r"'kernel_size' must lie in \[1, 64\], got 0"),
        ("cnn", {"kernel_size": {"value": True}}, r"expected an integer .* got True"),
        ("cnn", {"pool_size": {"values": [2, 1000]}}, r"'pool_size' must lie in \[1, 64\]"),
        ("cnn", {"pool_size": {"value": "2"}}, r"got '2' \(this is text, not a number; remove"),
        ("cnn", {"activation": {"value": 3}}, r"expected a string for 'activation', got 3"),
        ("cnn", {"conv_blocks": {"min": 1, "max": 10**5}}, r"conv_blocks\.max: .*\[1, 32\]"),
        ("cnn", {"filters": {"value": 10**9}}, r"'filters' must lie in \[1, 65536\]"),
        ("cnn", {"dropout": {"value": 1.0}}, r"'dropout' must lie in \[0, 1\), got 1\.0"),
        ("cnn", {"learning_rate": {"values": [0.01, 0]}}, r"'learning_rate' must lie in \(0, 10\]"),
        ("cnn", {"batch_size": {"values": [0, 32]}}, r"'batch_size' must lie in \[1, 1048576\]"),
        ("cnn", {"optimizer": {"values": [None]}}, r"expected a string for 'optimizer', got None"),
        ("mlp", {"units": {"min": 0, "max": 8}}, r"units\.min: 'units' must lie in \[1, 65536\]"),
        ("mlp", {"dropout": {"min": 0.1, "max": 0.4, "default": 0.9}}, r"default: expected a"),
        ("transfer", {"fine_tune_layers": {"value": -1}}, r"'fine_tune_layers' must lie in \[0, "),
        (
            "sleep",
            {"x": {"min": 0, "max": 1.0e300}},
            r"x\.max: 'x' must lie in \[-1000000, 1000000\]",
        ),
        ("sleep", {"optimizer": {"value": ["adam"]}}, r"expected a string for 'optimizer'"),
        ("json:loads", {"x": {"value": {"a": 1}}}, r"x: expected an integer, a number, a string "),
        ("json:loads", {"x": {"values": [1, [2]]}}, r"x: expected a number for 'x', got \[2\]"),
        ("json:loads", {"x": {"min": -1.0e308, "max": 1.0e308}}, r"expected integers between"),
        ("json:loads", {"x": {"min": -1e308, "max": 1e308, "step": 0.5}}, r"`max - min` must be"),
    ],
)
def test_override_values_are_checked_against_their_meaning(
    name: str, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=rf"hypermodel\.overrides\..*{message}"):
        _check(name, overrides)


def test_every_builtin_default_lies_in_its_own_bounds() -> None:
    for space in SPACES.values():
        for hp in space.hps:
            if hp.kind in ("int", "float"):
                effective_def(space, hp.name, {"min": hp.min, "max": hp.max})
            elif hp.kind in ("choice",):
                effective_def(space, hp.name, {"values": list(hp.values)})
            effective_def(space, hp.name, {"value": hp.default})


def test_sensible_overrides_still_pass() -> None:
    _check(
        "cnn",
        {
            "kernel_size": {"values": [3, 5, 7]},
            "pool_size": {"value": 2},
            "dropout": {"min": 0.0, "max": 0.5},
            "learning_rate": {"min": 1.0e-5, "max": 1.0e-1, "sampling": "log"},
            "batch_size": {"values": [16, 32]},
        },
    )
    _check("json:loads", {"width": {"values": ["a", "b"]}, "rate": {"min": 0.1, "max": 0.9}})


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("sleep", {"epoch_s": 1.0e300}, r"epoch_s: expected a number >= 0 and <= 86400"),
        ("sleep", {"epoch_s": "1e12"}, r"epoch_s: .*write 1\.0e\+12\)"),
        ("transfer", {"image_size": 10**8, "weights": None}, r"image_size: expected each side <="),
        ("transfer", {"image_size": [96, 4096], "weights": None}, r"image_size: .*got 96x4096"),
        ("transfer", {"alpha": 1.0e9, "weights": None}, r"alpha: expected a number > 0 and <= 4"),
    ],
)
def test_options_are_bounded(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"hypermodel\.options\.{message}"):
        _check(name, {}, options)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("failure: {lease_timeout_s: 0.000001}", r"lease_timeout_s: expected a number at least 1,"),
        (
            "failure: {lease_timeout_s: 1.0e+7}",
            r"lease_timeout_s: expected a number at most 604800",
        ),
        (
            "failure: {lease_timeout_s: 10, heartbeat_interval_s: 0.001}",
            r"heartbeat_interval_s: expected a number at least 0\.1,",
        ),
        ("oracle: {type: bayesian, max_trials: 5, beta: 1.0e+300}", r"beta: expected a number at"),
    ],
)
def test_search_numbers_are_bounded(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_search(f"hypermodel: sleep\n{section}\n")
    parse_search("hypermodel: sleep\nfailure: {lease_timeout_s: 1}\n")  # the minimum itself


BAD_METRIC_NAMES = ["", "val\x1b[31macc", "val\x00acc", "val\u202eacc", "a" * 201]


@pytest.mark.parametrize("name", BAD_METRIC_NAMES)
def test_objective_and_monitor_follow_the_chiefs_metric_rule(name: str) -> None:
    # The chief refuses these in every report ...
    with pytest.raises(InvalidRequestError, match="metric names must be printable text"):
        request_checks.check_metrics({name: 1.0})
    # ... so a search may not name them.
    for data in (
        {"hypermodel": "sleep", "objective": name},
        {"hypermodel": "sleep", "training": {"early_stopping": {"monitor": name}}},
    ):
        with pytest.raises(ConfigError, match=r"expected a metric name: printable text of 1-200"):
            parse_search(data)


def test_the_metric_rule_is_defined_once() -> None:
    assert request_checks.is_metric_name is names.is_metric_name
    assert not hasattr(request_checks, "MAX_METRIC_NAME_CHARS")
    assert parse_search({"hypermodel": "sleep", "objective": "a" * 200}).objective.name


def test_validate_never_prints_raw_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text('hypermodel: sleep\nobjective: "val\\e[31macc"\n')
    assert main(["validate", "s.yaml"]) == 2
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err
    assert r"got 'val\x1b[31macc'" in err
