"""The search spaces and option keys of the built-in hypermodels (TF-free data).

``workers/hypermodels/README.md`` renders the same tables for users; a unit
test keeps them in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError
from workers.hypermodels.space import HpDef, SpaceSpec

ACTIVATIONS = ("relu", "elu", "tanh", "selu", "gelu", "swish", "sigmoid", "leaky_relu")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw", "nadam", "adagrad")

_LEARNING_RATE = HpDef(
    "learning_rate", "float", default=1e-3, min=1e-4, max=1e-2, sampling="log",
    doc="optimizer learning rate",
)  # fmt: skip
_BATCH_SIZE = HpDef(
    "batch_size", "choice", default=32, values=(32,), only_when_overridden=True,
    doc="tuned only when overridden ({values: [...]}); else training.batch_size",
)  # fmt: skip

CNN_SPACE = SpaceSpec(
    "cnn",
    (
        HpDef("conv_blocks", "int", default=2, min=1, max=3, doc="number of conv blocks"),
        HpDef(
            "filters",
            "int",
            default=32,
            min=16,
            max=128,
            step=16,
            per_index=True,
            doc="filters of conv block i, declared as filters_0, filters_1, ...",
        ),  # fmt: skip
        HpDef("kernel_size", "choice", default=3, values=(3, 5), doc="conv kernel size"),
        HpDef(
            "activation",
            "choice",
            default="relu",
            values=("relu", "elu", "tanh"),
            allowed=ACTIVATIONS,
            doc="activation of conv and dense layers",
        ),  # fmt: skip
        HpDef(
            "pooling",
            "choice",
            default="max",
            values=("max", "avg"),
            allowed=("max", "avg"),
            doc="pooling after each block (skipped once the map is smaller than pool_size)",
        ),  # fmt: skip
        HpDef("pool_size", "choice", default=2, values=(2,), doc="pooling window and stride"),
        HpDef("batch_norm", "boolean", default=False, doc="BatchNormalization after each conv"),
        HpDef("dense_layers", "int", default=1, min=1, max=2, doc="hidden dense layers"),
        HpDef(
            "units",
            "int",
            default=128,
            min=32,
            max=256,
            step=32,
            per_index=True,
            doc="units of dense layer i, declared as units_0, units_1, ...",
        ),  # fmt: skip
        HpDef(
            "dropout",
            "float",
            default=0.2,
            min=0.0,
            max=0.5,
            step=0.1,
            doc="dropout before the output layer",
        ),  # fmt: skip
        HpDef(
            "optimizer",
            "choice",
            default="adam",
            values=("adam", "sgd", "rmsprop"),
            allowed=OPTIMIZERS,
            doc="optimizer",
        ),  # fmt: skip
        _LEARNING_RATE,
        _BATCH_SIZE,
    ),
    options={},
)

MLP_SPACE = SpaceSpec(
    "mlp",
    (
        HpDef("units", "int", default=128, min=16, max=512, step=16, doc="hidden units"),
        HpDef("dropout", "float", default=0.2, min=0.0, max=0.5, step=0.1, doc="dropout rate"),
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
        ),  # fmt: skip
        _LEARNING_RATE,
        HpDef("dropout", "float", default=0.2, min=0.0, max=0.5, step=0.1, doc="head dropout"),
        _BATCH_SIZE,
    ),
    options={
        "weights": "imagenet (default; the file must be cached offline) or null (random init)",
        "image_size": "side the input is resized to (int or [h, w], >= 32; default 96)",
        "alpha": "MobileNetV2 width multiplier (default 1.0)",
    },
)

SLEEP_SPACE = SpaceSpec(
    "sleep",
    (
        HpDef("x", "float", default=0.5, min=0.0, max=1.0, doc="bowl coordinate (best 0.3)"),
        HpDef("y", "float", default=0.5, min=0.0, max=1.0, doc="bowl coordinate (best 0.7)"),
        HpDef("units", "int", default=128, min=16, max=512, step=16, doc="small bonus near 128"),
        HpDef(
            "optimizer",
            "choice",
            default="adam",
            values=("adam", "sgd", "rmsprop"),
            doc="small bonus for adam",
        ),  # fmt: skip
    ),
    options={
        "epoch_s": "seconds slept per epoch (float >= 0, default 0.5)",
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
                f"{where}.image_size: expected an integer or [height, width], got {value!r}. "
                "Fix the value."
            )
        if min(size) < 32:
            raise ConfigError(
                f"{where}.image_size: MobileNetV2 needs at least 32x32, got {size[0]}x{size[1]}; "
                "expected each side >= 32. Use 96 (the default) or larger."
            )
        alpha = options.get("alpha", 1.0)
        if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
            raise ConfigError(
                f"{where}.alpha: expected a number > 0, got {alpha!r}. Fix the value."
            )
        if weights == "imagenet" and float(alpha) not in IMAGENET_ALPHAS:
            raise ConfigError(
                f"{where}.alpha: ImageNet weights exist only for alpha in {list(IMAGENET_ALPHAS)}, "
                f"got {alpha}; expected one of those. Pick one or set weights: null."
            )
        return cls(weights, size, float(alpha))
