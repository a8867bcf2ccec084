"""Built-in hypermodels, override validation, user-code loading and the sleep model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.config import HypermodelSpec
from orchestrator.errors import ConfigError
from workers.hypermodels import (
    BUILTIN_HYPERMODELS,
    needs_tensorflow,
    resolve_hypermodel,
    validate_overrides,
)
from workers.hypermodels.catalog import SPACES
from workers.hypermodels.sleep import (
    InjectedTrialFailure,
    SleepOptions,
    run_sleep_epoch,
    should_fail,
    sleep_score,
)

REPO = Path(__file__).resolve().parents[2]


def spec(name: str = "cnn", overrides: Any = None, options: Any = None) -> HypermodelSpec:
    return HypermodelSpec(name=name, overrides=overrides or {}, options=options or {})


# --- validation without TensorFlow -------------------------------------------------------


def test_unknown_override_name_suggests_the_close_one() -> None:
    with pytest.raises(
        ConfigError,
        match=r"search\.yaml: hypermodel\.overrides\.filtres: unknown hyperparameter for 'cnn'; "
        r"did you mean 'filters'\? Expected one of: conv_blocks, filters, ",
    ):
        validate_overrides(spec(overrides={"filtres": {"min": 8, "max": 32}}))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"filters": {"min": 64, "max": 32}}, r"filters: `min <= max` must hold.*min=64, max=32"),
        ({"filters": {"min": 8.5, "max": 32}}, r"filters\.min: expected an integer, got 8\.5"),
        ({"dropout": {"min": 0.0, "sampling": "log"}}, r"sampling 'log' needs min > 0"),
        ({"dropout": {"max": 1.5}}, r"'dropout' must lie in \[0, 1\)"),
        ({"units": {"value": 0}}, r"'units' must lie in \[1, 65536\], got 0"),
        ({"optimizer": {"values": ["adam", "adamm"]}}, r"'adamm' is not supported.*'adam'"),
        ({"activation": {"min": 1, "max": 2}}, r"a range .* applies only to Int and Float"),
        ({"batch_norm": {"value": "yes"}}, r"expected true or false for 'batch_norm'"),
        ({"conv_blocks": {"values": [1, 2], "default": 3}}, r"default: 3 is not one of \[1, 2\]"),
        ({"kernel_size": {"values": []}}, r"values: expected a non-empty list"),
    ],
)
def test_bad_overrides_are_config_errors(overrides: dict[str, Any], message: str) -> None:
    # Some of these are caught by the config models already; the worker must not rely on it.
    from types import SimpleNamespace

    raw = SimpleNamespace(name="cnn", overrides=overrides, options={})
    with pytest.raises(ConfigError, match=message):
        validate_overrides(raw)


def test_unknown_option_names_the_known_ones() -> None:
    with pytest.raises(
        ConfigError,
        match=r"hypermodel\.options\.weigths: unknown option for 'transfer'; did you mean "
        r"'weights'\? Expected one of: weights, image_size, alpha",
    ):
        validate_overrides(spec("transfer", options={"weigths": None}))
    with pytest.raises(ConfigError, match=r"options\.epoch_s: expected a number >= 0"):
        validate_overrides(spec("sleep", options={"epoch_s": -1}))


def test_every_builtin_has_a_space_and_a_readme_row() -> None:
    readme = (REPO / "workers" / "hypermodels" / "README.md").read_text()
    assert set(SPACES) == set(BUILTIN_HYPERMODELS)
    for name, space in SPACES.items():
        assert f"## `{name}`" in readme
        for hp in space.hps:
            assert f"`{hp.name}`" in readme, (name, hp.name)
        for option in space.options:
            assert f"`{option}`" in readme, (name, option)


def test_needs_tensorflow_only_false_for_sleep() -> None:
    assert [needs_tensorflow(spec(n)) for n in BUILTIN_HYPERMODELS] == [True, True, True, False]
    assert needs_tensorflow(spec("mymodels:build_model"))


def test_light_imports_do_not_import_tensorflow() -> None:
    code = textwrap.dedent(
        """
        import sys
        from types import SimpleNamespace
        import workers, workers.hypermodels as h
        from workers.hypermodels.sleep import run_sleep_epoch, declare_sleep_space
        s = SimpleNamespace(name="sleep", overrides={"x": {"max": 0.5}}, options={"epoch_s": 0})
        assert not h.needs_tensorflow(s)
        h.validate_overrides(s)
        h.validate_overrides(SimpleNamespace(name="cnn", overrides={"filters": {"max": 64}}, options={}))
        run_sleep_epoch({"x": 0.3, "y": 0.7}, 0, {"epoch_s": 0})
        heavy = sorted(m for m in ("tensorflow", "keras", "keras_tuner") if m in sys.modules)
        print(heavy)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- sleep -------------------------------------------------------------------------------


def test_sleep_is_deterministic_and_improves_with_epochs() -> None:
    naps: list[float] = []
    best = {"x": 0.3, "y": 0.7, "units": 128, "optimizer": "adam"}
    first = run_sleep_epoch(best, 0, {"epoch_s": 0.25}, sleep=naps.append)
    again = run_sleep_epoch(best, 0, {"epoch_s": 0.25}, sleep=naps.append)
    assert first == again
    assert naps == [0.25, 0.25]
    assert first["val_loss"] == pytest.approx(1 - first["val_accuracy"])
    scores = [sleep_score(best, e) for e in range(6)]
    assert scores == sorted(scores) and scores[-1] > 0.9
    assert sleep_score({"x": 1.0, "y": 0.0}, 5) < sleep_score(best, 5) - 0.5


def test_sleep_failures_are_deterministic_per_attempt() -> None:
    opts = SleepOptions.parse({"epoch_s": 0, "fail_rate": 0.5})
    grid = [{"x": i / 20, "y": 0.5} for i in range(40)]
    first = [should_fail(v, 0, opts) for v in grid]
    assert first == [should_fail(v, 0, opts) for v in grid]
    assert 5 < sum(first) < 35  # roughly the rate
    assert first != [should_fail(v, 1, opts) for v in grid]  # a retry draws again
    failing = grid[first.index(True)]
    with pytest.raises(InjectedTrialFailure, match=r"injected failure .* attempt 0"):
        run_sleep_epoch(failing, 0, opts)
    on = {"epoch_s": 0, "fail_on": [{"x": 0.25}]}
    with pytest.raises(InjectedTrialFailure):
        run_sleep_epoch({"x": 0.25, "y": 0.1}, 0, on)
    run_sleep_epoch({"x": 0.3, "y": 0.1}, 0, on)


def test_sleep_space_is_declared_with_overrides() -> None:
    import keras_tuner as kt

    from workers.hypermodels import declare_sleep_space

    hp = kt.HyperParameters()
    declare_sleep_space(hp, {"epoch_s": 0}, {"units": {"value": 64}})
    names = {p.name: p for p in hp.space}
    assert set(names) == {"x", "y", "units", "optimizer"}
    assert hp.values["units"] == 64
    model = resolve_hypermodel(spec("sleep", options={"epoch_s": 0}), (1,), 2)
    hp2 = kt.HyperParameters()
    assert model.build(hp2) is None
    assert model.fit(hp2, None, epochs=2)["val_accuracy"] > 0


# --- cnn -----------------------------------------------------------------------------------


def _random_values(space_hp: Any, seed: int) -> Any:
    """A random point of the space, respecting conditional scopes (as RandomSearch does)."""
    hp = space_hp.copy()
    for i, p in enumerate(hp.space):
        if hp.is_active(p):
            hp.values[p.name] = p.random_sample(seed * 100 + i)
    return hp


@pytest.mark.parametrize("shape", [(8, 8, 1), (8, 8), (28, 28, 1), (32, 32, 3)])
def test_cnn_builds_valid_models_for_random_points(shape: tuple[int, ...]) -> None:
    import keras_tuner as kt

    overrides = {"pool_size": {"values": [2, 3]}, "kernel_size": {"values": [3, 5, 7]}}
    model = resolve_hypermodel(spec(overrides=overrides), shape, 10)
    space = kt.HyperParameters()
    model.build(space)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    extreme = space.copy()
    extreme.values.update(conv_blocks=3, dense_layers=2, pool_size=2, kernel_size=7)
    for p in extreme.space:  # fill the blocks that just became active, as an oracle would
        if extreme.is_active(p) and p.name not in extreme.values:
            extreme.values[p.name] = p.default
    for hp in [extreme, *(_random_values(space, s) for s in range(8))]:
        built = model.build(hp)
        assert built(x).shape == (2, 10)


def test_cnn_eight_by_eight_never_pools_below_one() -> None:
    import keras_tuner as kt

    model = resolve_hypermodel(spec(overrides={"conv_blocks": {"value": 3}}), (8, 8, 1), 10)
    built = model.build(kt.HyperParameters())
    pools = [layer for layer in built.layers if "pooling" in layer.name]
    assert len(pools) == 3
    assert pools[-1].output.shape[1:3] == (1, 1)


def test_cnn_overrides_change_the_space() -> None:
    import keras_tuner as kt

    overrides = {
        "filters": {"min": 8, "max": 32, "step": 8},
        "conv_blocks": {"values": [1, 2]},
        "optimizer": {"value": "sgd"},
        "learning_rate": {"min": 0.001, "max": 0.1, "sampling": "log", "default": 0.01},
    }
    model = resolve_hypermodel(spec(overrides=overrides), (8, 8, 1), 10)
    hp = kt.HyperParameters()
    model.build(hp)
    space = {p.name: p for p in hp.space}
    assert "filters_2" not in space  # conv_blocks can no longer reach 3
    assert (space["filters_0"].min_value, space["filters_0"].max_value) == (8, 32)
    assert space["filters_1"].step == 8
    assert isinstance(space["conv_blocks"], kt.engine.hyperparameters.Choice)
    assert isinstance(space["optimizer"], kt.engine.hyperparameters.Fixed)
    assert hp.values["learning_rate"] == 0.01
    assert space["learning_rate"].sampling == "log"
    # filters_1 is conditional on conv_blocks == 2, so inactive at the default (1).
    assert not hp.is_active(space["filters_1"])


def test_batch_size_is_tuned_only_when_overridden() -> None:
    import keras_tuner as kt

    class Recorder:
        kwargs: dict[str, Any] = {}

        def fit(self, *args: Any, **kwargs: Any) -> None:
            Recorder.kwargs = kwargs

    plain = resolve_hypermodel(spec("mlp"), (8, 8, 1), 10)
    plain.fit(kt.HyperParameters(), Recorder(), batch_size=32)
    assert Recorder.kwargs["batch_size"] == 32
    tuned = resolve_hypermodel(spec("mlp", {"batch_size": {"values": [64, 128]}}), (8, 8, 1), 10)
    hp = kt.HyperParameters()
    tuned.build(hp)
    assert "batch_size" in hp.values
    hp.values["batch_size"] = 128
    tuned.fit(hp, Recorder(), batch_size=32)
    assert Recorder.kwargs["batch_size"] == 128


def test_cnn_learns_digits() -> None:
    import keras_tuner as kt

    from orchestrator.config import DatasetSpec
    from workers.datasets import load_dataset

    data = load_dataset(DatasetSpec(source="digits"))
    model = resolve_hypermodel(spec(), data.input_shape, data.num_classes)
    hp = kt.HyperParameters()
    built = model.build(hp)
    history = model.fit(
        hp,
        built,
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=2,
        batch_size=32,
        verbose=0,
    )
    assert history.history["val_accuracy"][-1] > 0.5


# --- mlp and transfer ---------------------------------------------------------------------


def test_mlp_compiles_with_the_loss_for_the_label_mode() -> None:
    import keras_tuner as kt

    sparse = resolve_hypermodel(spec("mlp"), (8, 8, 1), 10).build(kt.HyperParameters())
    onehot = resolve_hypermodel(spec("mlp"), (8, 8, 1), 10, label_mode="onehot")
    built = onehot.build(kt.HyperParameters())
    assert sparse.loss == "sparse_categorical_crossentropy"
    assert built.loss == "categorical_crossentropy"
    assert built(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"label_mode: expected one of int, onehot"):
        resolve_hypermodel(spec("mlp"), (8, 8, 1), 10, label_mode="sparse")


def test_transfer_without_weights_builds_for_small_grey_input() -> None:
    import keras_tuner as kt

    model = resolve_hypermodel(
        spec(
            "transfer",
            overrides={"fine_tune_layers": {"value": 5}},
            options={"weights": None, "image_size": 32, "alpha": 0.35},
        ),
        (8, 8),
        3,
    )
    built = model.build(kt.HyperParameters())
    assert built(np.zeros((2, 8, 8), np.float32)).shape == (2, 3)
    backbone = next(layer for layer in built.layers if layer.name.startswith("mobilenet"))
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert 0 < len(trainable) <= 5


def test_transfer_imagenet_offline_names_the_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(
        ConfigError,
        match=r"weights: imagenet needs mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1\.0_96"
        rf"_no_top\.h5 in {tmp_path}/models; this machine is offline — set "
        r"hypermodel\.options\.weights: null or copy the file there",
    ):
        resolve_hypermodel(spec("transfer"), (28, 28, 1), 10)


# --- user code ----------------------------------------------------------------------------

USER_MODULE = """
import keras
import keras_tuner


def build_model(hp):
    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(hp.Int("units", 8, 64, step=8), activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class MyHyperModel(keras_tuner.HyperModel):
    def build(self, hp):
        return build_model(hp)


INSTANCE = MyHyperModel(name="mine")
NOT_A_MODEL = 42


class Plain:
    pass
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"ktc_user_hm_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_user_function_is_wrapped_like_keras_tuner_does(user_module: str) -> None:
    import keras_tuner as kt
    from keras_tuner.src.engine.hypermodel import DefaultHyperModel

    model = resolve_hypermodel(spec(f"{user_module}:build_model"), (8, 8, 1), 10)
    assert isinstance(model, DefaultHyperModel)
    hp = kt.HyperParameters()
    assert model.build(hp)(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)
    assert hp.values["units"] == 8


def test_user_class_and_instance(user_module: str) -> None:
    cls_model = resolve_hypermodel(spec(f"{user_module}:MyHyperModel"), (8, 8, 1), 10)
    assert type(cls_model).__name__ == "MyHyperModel"
    instance = resolve_hypermodel(spec(f"{user_module}:INSTANCE"), (8, 8, 1), 10)
    assert instance.name == "mine"


def test_user_overrides_take_precedence(user_module: str) -> None:
    import keras_tuner as kt

    model = resolve_hypermodel(
        spec(f"{user_module}:build_model", overrides={"units": {"values": [32, 48]}}), (8, 8, 1), 10
    )
    hp = kt.HyperParameters()
    model.build(hp)
    assert isinstance(hp.space[0], kt.engine.hyperparameters.Choice)
    assert hp.values["units"] == 32


def test_user_reference_errors(user_module: str) -> None:
    with pytest.raises(ConfigError, match=r"'.*:NOT_A_MODEL' is a int \(42\); expected a build"):
        resolve_hypermodel(spec(f"{user_module}:NOT_A_MODEL"), (8, 8, 1), 10)
    with pytest.raises(ConfigError, match=r"is the class Plain, which is not a keras_tuner"):
        resolve_hypermodel(spec(f"{user_module}:Plain"), (8, 8, 1), 10)
    with pytest.raises(ConfigError, match=r"has no attribute 'build_modle'; did you mean 'build_"):
        resolve_hypermodel(spec(f"{user_module}:build_modle"), (8, 8, 1), 10)
    with pytest.raises(
        ConfigError,
        match=r"cannot import module 'no_such_pkg_xyz' for 'no_such_pkg_xyz:build': "
        r"ModuleNotFoundError: .*PYTHONPATH.*cwd here is ",
    ):
        resolve_hypermodel(spec("no_such_pkg_xyz:build"), (8, 8, 1), 10)
    with pytest.raises(ConfigError, match=r"options apply only to the built-in hypermodels"):
        validate_overrides(spec(f"{user_module}:build_model", options={"epoch_s": 1}))


def test_cnn_rejects_flat_inputs_and_unknown_builtins() -> None:
    from types import SimpleNamespace

    with pytest.raises(
        ConfigError, match=r"expected image inputs of shape \(H, W\).*use hypermodel: mlp"
    ):
        resolve_hypermodel(spec(), (64,), 10)
    with pytest.raises(
        ConfigError, match=r"unknown built-in hypermodel 'cnnn'; did you mean 'cnn'"
    ):
        validate_overrides(SimpleNamespace(name="cnnn", overrides={}, options={}))
