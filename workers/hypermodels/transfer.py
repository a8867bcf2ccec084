"""``transfer``: a MobileNetV2 backbone with a small softmax head.

Inputs are resized to ``options.image_size`` (default 96, at least 32) and grey
images are repeated to 3 channels. ``options.weights: imagenet`` (the default)
needs the weights file already in the Keras cache: workers are often offline,
so we check before building and fail with the exact path instead of a URL
error in the middle of a trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import keras_tuner
from keras import layers

from orchestrator.errors import ConfigError
from workers.datasets.cache import keras_cache_dir
from workers.hypermodels.base import BuiltinHyperModel
from workers.hypermodels.catalog import TRANSFER_SPACE, TransferOptions

# keras/src/applications/mobilenet_v2.py: the sizes ImageNet weights exist for.
_WEIGHT_ROWS = (96, 128, 160, 192, 224)
_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"


def imagenet_weights_file(alpha: float, image_size: tuple[int, int]) -> str:
    """The file name ``keras.applications.MobileNetV2(include_top=False)`` loads."""
    rows, cols = image_size
    if rows != cols or rows not in _WEIGHT_ROWS:
        rows = 224  # Keras falls back to the 224 weights (with a warning).
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def imagenet_weights_path(alpha: float, image_size: tuple[int, int]) -> Path:
    """Where the Keras cache keeps that file (``<keras home>/models/<file>``)."""
    return keras_cache_dir() / "models" / imagenet_weights_file(alpha, image_size)


class TransferHyperModel(BuiltinHyperModel):
    """MobileNetV2 (frozen except its top ``fine_tune_layers``) + dropout + softmax."""

    SPACE = TRANSFER_SPACE

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> None:
        super().__init__(input_shape, num_classes, **kwargs)
        if len(self.input_shape) not in (2, 3) or (
            len(self.input_shape) == 3 and self.input_shape[2] not in (1, 3)
        ):
            raise ConfigError(
                f"hypermodel 'transfer': expected images of shape (H, W), (H, W, 1) or (H, W, 3), "
                f"got {self.input_shape}."
            )
        parsed = TransferOptions.parse(self.options)
        self.image_size = parsed.image_size
        self.alpha = parsed.alpha
        self.weights = parsed.weights
        if self.weights == "imagenet":
            self._check_weights_cached()

    def _check_weights_cached(self) -> None:
        path = imagenet_weights_path(self.alpha, self.image_size)
        if not path.is_file():
            raise ConfigError(
                f"hypermodel 'transfer': weights: imagenet needs {path.name} in {path.parent}; "
                f"this machine is offline — set hypermodel.options.weights: null or copy the file "
                f"there (it is downloadable from {_BASE_URL}{path.name})."
            )

    def build_model(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build and compile the backbone and head for the values in ``hp``."""
        shape = self.input_shape
        inputs = keras.Input(shape=shape)
        x = layers.Reshape((*shape, 1))(inputs) if len(shape) == 2 else inputs
        x = layers.Resizing(*self.image_size)(x)
        if (shape[2] if len(shape) == 3 else 1) == 1:
            x = layers.Concatenate(axis=-1)([x, x, x])
        # Datasets arrive scaled to [0, 1]; MobileNetV2 expects [-1, 1].
        x = layers.Rescaling(2.0, offset=-1.0)(x)
        backbone = keras.applications.MobileNetV2(
            input_shape=(*self.image_size, 3),
            include_top=False,
            weights=self.weights,
            alpha=self.alpha,
            pooling="avg",
        )
        fine_tune = int(self.value(hp, "fine_tune_layers"))
        backbone.trainable = fine_tune > 0
        if fine_tune > 0:
            for layer in backbone.layers[:-fine_tune]:
                layer.trainable = False
        # training=False keeps the backbone's BatchNorm statistics frozen while fine-tuning.
        x = backbone(x, training=False)
        dropout = float(self.value(hp, "dropout"))
        if dropout > 0:
            x = layers.Dropout(dropout)(x)
        outputs = layers.Dense(self.num_classes, activation="softmax")(x)
        model = keras.Model(inputs, outputs, name="transfer")
        self.compile(model, hp, "adam")
        return model
