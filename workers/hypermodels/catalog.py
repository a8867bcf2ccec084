"""The search spaces and option keys of the built-in hypermodels (TF-free data).

``workers/hypermodels/README.md`` renders the same tables for users; a unit
test keeps them in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.config import limits
from orchestrator.config.errors_format import number_hint
from orchestrator.errors import ConfigError
from workers.hypermodels.bounds import (
    LEARNING_RATE,
    MAX_LAYERS,
    MAX_WIDTH,
    MAX_WINDOW,
    UNIT_INTERVAL,
    Bounds,
)
from workers.hypermodels.space import HpDef, SpaceSpec

ACTIVATIONS = ("relu", "elu", "tanh", "selu", "gelu", "swish", "sigmoid", "leaky_relu")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw", "nadam", "adagrad")
MAX_FINE_TUNE_LAYERS = 1_000
"""MobileNetV2 has about 150 layers; more than it has just means all of them."""
_COORDINATE = Bounds(-1e6, 1e6)
"""``sleep``'s bowl: its score squares the coordinate, which overflows near 1e154."""

_LEARNING_RATE = HpDef(
    "learning_rate", "float", default=1e-3, min=1e-4, max=1e-2, sampling="log",
    doc="optimizer learning rate", bounds=LEARNING_RATE,
)  # fmt: skip
_BATCH_SIZE = HpDef(
    "batch_size", "choice", default=32, values=(32,), only_when_overridden=True,
    doc="tuned only when overridden ({values: [...]}); else training.batch_size",
    value_type="int", bounds=Bounds(1, limits.MAX_BATCH_SIZE),
)  # fmt: skip
_LAYERS = Bounds(1, MAX_LAYERS)
_WIDTH = Bounds(1, MAX_WIDTH)
_WINDOW = Bounds(1, MAX_WINDOW)


def _dropout(doc: str) -> HpDef:
    """Every built-in's dropout rate: declared 0 to 0.5 by 0.1, 0.2 by default (Keras
    Tuner's stepped Float gives 0.0 to 0.4 here, never 0.5; `ktc space` lists them)."""
    return HpDef(
        "dropout", "float", default=0.2, min=0.0, max=0.5, step=0.1, doc=doc,
        bounds=UNIT_INTERVAL,
    )  # fmt: skip


CNN_SPACE = SpaceSpec(
    "cnn",
    (
        HpDef(
            "conv_blocks",
            "int",
            default=2,
            min=1,
            max=3,
            doc="number of conv blocks",
            bounds=_LAYERS,
        ),  # fmt: skip
        HpDef(
            "filters",
            "int",
            default=32,
            min=16,
            max=128,
            step=16,
            per_index=True,
            doc="filters of conv block i, declared as filters_0, filters_1, ...",
            bounds=_WIDTH,
        ),  # fmt: skip
        HpDef(
            "kernel_size",
            "choice",
            default=3,
            values=(3, 5),
            doc="conv kernel size",
            value_type="int",
            bounds=_WINDOW,
        ),  # fmt: skip
        HpDef(
            "activation",
            "choice",
            default="relu",
            values=("relu", "elu", "tanh"),
            allowed=ACTIVATIONS,
            doc="activation of conv and dense layers",
            value_type="str",
        ),  # fmt: skip
        HpDef(
            "pooling",
            "choice",
            default="max",
            values=("max", "avg"),
            allowed=("max", "avg"),
            doc="pooling after each block (skipped once the map is smaller than pool_size)",
            value_type="str",
        ),  # fmt: skip
        HpDef(
            "pool_size",
            "choice",
            default=2,
            values=(2,),
            doc="pooling window and stride",
            value_type="int",
            bounds=_WINDOW,
        ),  # fmt: skip
        HpDef("batch_norm", "boolean", default=False, doc="BatchNormalization after each conv"),
        HpDef(
            "dense_layers",
            "int",
            default=1,
            min=1,
            max=2,
            doc="hidden dense layers",
            bounds=_LAYERS,
        ),  # fmt: skip
        HpDef(
            "units",
            "int",
            default=128,
            min=32,
            max=256,
            step=32,
            per_index=True,
            doc="units of dense layer i, declared as units_0, units_1, ...",
            bounds=_WIDTH,
        ),  # fmt: skip
        _dropout("dropout before the output layer"),
        HpDef(
            "optimizer",
            "choice",
            default="adam",
            values=("adam", "sgd", "rmsprop"),
            allowed=OPTIMIZERS,
            doc="optimizer",
            value_type="str",
        ),  # fmt: skip
        _LEARNING_RATE,
        _BATCH_SIZE,
    ),
    options={},
)

MLP_SPACE = SpaceSpec(
    "mlp",
    (
        HpDef(
            "units",
            "int",
            default=128,
            min=16,
            max=512,
            step=16,
            doc="hidden units",
            bounds=_WIDTH,
        ),  # fmt: skip
        _dropout("dropout rate"),
        _LEARNING_RATE,
        _BATCH_SIZE,
    ),
    options={},
)

TRANSFER_SPACE = SpaceSpec(
    "transfer",
    (
        HpDef(
            "fine_tune_layers",
            "int",
            default=0,
            min=0,
            max=20,
            step=5,
            doc="how many top layers of the backbone are trainable (0 = frozen)",
            bounds=Bounds(0, MAX_FINE_TUNE_LAYERS),
        ),  # fmt: skip
        _LEARNING_RATE,
        _dropout("head dropout"),
        _BATCH_SIZE,
    ),
    options={
        "weights": "imagenet (default; the file must be cached offline) or null (random init)",
        "image_size": "side the input is resized to (int or [h, w], 32..1024; default 96)",
        "alpha": "MobileNetV2 width multiplier (default 1.0)",
    },
)

SLEEP_SPACE = SpaceSpec(
    "sleep",
    (
        HpDef(
            "x",
            "float",
            default=0.5,
            min=0.0,
            max=1.0,
            doc="bowl coordinate (best 0.3)",
            bounds=_COORDINATE,
        ),  # fmt: skip
        HpDef(
            "y",
            "float",
            default=0.5,
            min=0.0,
            max=1.0,
            doc="bowl coordinate (best 0.7)",
            bounds=_COORDINATE,
        ),  # fmt: skip
        HpDef(
            "units",
            "int",
            default=128,
            min=16,
            max=512,
            step=16,
            doc="small bonus near 128",
            bounds=_WIDTH,
        ),  # fmt: skip
        HpDef(
            "optimizer",
            "choice",
            default="adam",
            values=("adam", "sgd", "rmsprop"),
            doc="small bonus for adam",
            value_type="str",
        ),  # fmt: skip
    ),
    options={
        "epoch_s": "seconds slept per epoch (0..86400, default 0.5)",
        "fail_rate": "probability in [0, 1] that an attempt raises (deterministic hash)",
        "fail_on": "list of hp-value mappings; a trial whose values contain one always raises",
    },
)

SPACES: dict[str, SpaceSpec] = {
    "cnn": CNN_SPACE,
    "mlp": MLP_SPACE,
    "transfer": TRANSFER_SPACE,
    "sleep": SLEEP_SPACE,
}


# keras/src/applications/mobilenet_v2.py: the widths ImageNet weights exist for.
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


@dataclass(frozen=True)
class TransferOptions:
    """Validated ``hypermodel.options`` of ``transfer`` (checked without importing TF)."""

    weights: str | None = "imagenet"
    image_size: tuple[int, int] = (96, 96)
    alpha: float = 1.0

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> TransferOptions:
        """Validate the raw mapping; ConfigError names the key and the fix."""
        where = "search.yaml: hypermodel.options"
        weights = options.get("weights", "imagenet")
        if weights not in ("imagenet", None):
            raise ConfigError(
                f"{where}.weights: expected imagenet or null, got {weights!r}. Use one of those."
            )
        value = options.get("image_size", 96)
        if isinstance(value, int) and not isinstance(value, bool):
            size = (value, value)
        elif (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            size = (int(value[0]), int(value[1]))
        else:
            raise ConfigError(
                f"{where}.image_size: expected an integer or [height, width], got {value!r}"
                f"{number_hint(value, integer=True)}. Fix the value."
            )
        low, high = limits.MIN_TRANSFER_IMAGE_SIDE, limits.MAX_TRANSFER_IMAGE_SIDE
        if min(size) < low:
            raise ConfigError(
                f"{where}.image_size: MobileNetV2 needs at least {low}x{low}, got "
                f"{size[0]}x{size[1]}; expected each side >= {low}. Use 96 (the default) or larger."
            )
        if max(size) > high:
            raise ConfigError(
                f"{where}.image_size: expected each side <= {high} (ImageNet weights exist up to "
                f"224; larger inputs need gigabytes per batch), got {size[0]}x{size[1]}. Use 96 "
                "(the default) to 224."
            )
        alpha = options.get("alpha", 1.0)
        if (
            not isinstance(alpha, int | float)
            or isinstance(alpha, bool)
            or not 0 < alpha <= limits.MAX_TRANSFER_ALPHA
        ):
            raise ConfigError(
                f"{where}.alpha: expected a number > 0 and <= {limits.MAX_TRANSFER_ALPHA:g} "
                f"(MobileNetV2's width multiplier), got {alpha!r}{number_hint(alpha)}. "
                "Fix the value."
            )
        if weights == "imagenet" and float(alpha) not in IMAGENET_ALPHAS:
            raise ConfigError(
                f"{where}.alpha: ImageNet weights exist only for alpha in {list(IMAGENET_ALPHAS)}, "
                f"got {alpha}; expected one of those. Pick one or set weights: null."
            )
        return cls(weights, size, float(alpha))
