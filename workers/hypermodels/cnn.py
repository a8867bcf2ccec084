"""``cnn``: the classic convolutional search space, every range overridable.

Hyperparameters (see ``README.md`` for defaults): ``conv_blocks``,
``filters_{i}`` (override key ``filters`` applies to every block),
``kernel_size``, ``activation``, ``pooling``, ``pool_size``, ``batch_norm``,
``dense_layers``, ``units_{i}`` (override key ``units``), ``dropout``,
``optimizer``, ``learning_rate`` and, when overridden, ``batch_size``.

Small inputs never build an invalid graph: convolutions use ``padding="same"``
and a block pools only while both spatial sides are still ``>= pool_size``, so
8x8 digits with three blocks pool 8 -> 4 -> 2 -> 1 and stop there.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner
from keras import layers

from orchestrator.errors import ConfigError
from workers.hypermodels.base import BuiltinHyperModel
from workers.hypermodels.catalog import CNN_SPACE
from workers.hypermodels.space import upper_bound


class CNNHyperModel(BuiltinHyperModel):
    """Conv blocks (conv, optional batch norm, pooling) then dense layers and softmax.

    Per-block hyperparameters are declared inside ``hp.conditional_scope`` on
    ``conv_blocks``/``dense_layers``, so unused blocks are inactive in the
    trial (Keras Tuner does not sample or report them).
    """

    SPACE = CNN_SPACE

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> None:
        super().__init__(input_shape, num_classes, **kwargs)
        if len(self.input_shape) not in (2, 3):
            raise ConfigError(
                f"hypermodel 'cnn': expected image inputs of shape (H, W) or (H, W, C), got "
                f"{self.input_shape}; use hypermodel: mlp for flat feature vectors."
            )

    def build_model(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build and compile one CNN for the values in ``hp``."""
        shape = self.input_shape
        inputs = keras.Input(shape=shape)
        x = layers.Reshape((*shape, 1))(inputs) if len(shape) == 2 else inputs
        height, width = shape[0], shape[1]

        conv_blocks = int(self.value(hp, "conv_blocks"))
        kernel_size = int(self.value(hp, "kernel_size"))
        activation = str(self.value(hp, "activation"))
        pooling = str(self.value(hp, "pooling"))
        pool_size = int(self.value(hp, "pool_size"))
        batch_norm = bool(self.value(hp, "batch_norm"))
        max_blocks = upper_bound(self.defs["conv_blocks"])
        for i in range(max_blocks):
            with hp.conditional_scope("conv_blocks", list(range(i + 1, max_blocks + 1))):
                filters = self.value(hp, "filters", i)
            if i >= conv_blocks:
                continue
            x = layers.Conv2D(
                int(filters),
                kernel_size,
                padding="same",
                activation=None if batch_norm else activation,
            )(x)
            if batch_norm:
                x = layers.BatchNormalization()(x)
                x = layers.Activation(activation)(x)
            # Pool only while the map is still at least one window wide: by
            # construction no block can shrink a side to 0.
            if height >= pool_size and width >= pool_size:
                pool = layers.MaxPooling2D if pooling == "max" else layers.AveragePooling2D
                x = pool(pool_size)(x)
                height, width = height // pool_size, width // pool_size

        x = layers.Flatten()(x)
        dense_layers = int(self.value(hp, "dense_layers"))
        max_dense = upper_bound(self.defs["dense_layers"])
        for i in range(max_dense):
            with hp.conditional_scope("dense_layers", list(range(i + 1, max_dense + 1))):
                units = self.value(hp, "units", i)
            if i < dense_layers:
                x = layers.Dense(int(units), activation=activation)(x)
        dropout = float(self.value(hp, "dropout"))
        if dropout > 0:
            x = layers.Dropout(dropout)(x)
        outputs = layers.Dense(self.num_classes, activation="softmax")(x)
        model = keras.Model(inputs, outputs, name="cnn")
        self.compile(model, hp, str(self.value(hp, "optimizer")))
        return model
