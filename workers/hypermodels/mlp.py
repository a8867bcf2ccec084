"""``mlp``: Flatten -> Dense(units, relu) -> Dropout -> Dense(num_classes, softmax), Adam."""

from __future__ import annotations

import keras
import keras_tuner
from keras import layers

from workers.hypermodels.base import BuiltinHyperModel
from workers.hypermodels.catalog import MLP_SPACE


class MLPHyperModel(BuiltinHyperModel):
    """A one-hidden-layer perceptron; tunes ``units``, ``dropout`` and ``learning_rate``."""

    SPACE = MLP_SPACE

    def build_model(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build and compile one MLP for the values in ``hp``."""
        inputs = keras.Input(shape=self.input_shape)
        x = layers.Flatten()(inputs)
        x = layers.Dense(int(self.value(hp, "units")), activation="relu")(x)
        dropout = float(self.value(hp, "dropout"))
        if dropout > 0:
            x = layers.Dropout(dropout)(x)
        outputs = layers.Dense(self.num_classes, activation="softmax")(x)
        model = keras.Model(inputs, outputs, name="mlp")
        self.compile(model, hp, "adam")
        return model
