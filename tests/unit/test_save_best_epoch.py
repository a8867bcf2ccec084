"""The runner's best-epoch checkpoint: Keras Tuner's file, written once per fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _model() -> object:
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(loss="mse")
    return model


def test_the_best_epochs_weights_are_written_once_at_the_end(tmp_path: Path) -> None:
    import keras_tuner

    from workers.kt_tuner import save_best_epoch_at_end_class

    model = _model()
    path = tmp_path / "checkpoint.weights.h5"
    callback = save_best_epoch_at_end_class()(
        objective=keras_tuner.Objective("val_loss", "min"), filepath=str(path)
    )
    callback.set_model(model)

    def weights(value: float) -> list[np.ndarray]:
        return [np.full(w.shape, value, dtype=w.dtype) for w in model.get_weights()]

    model.set_weights(weights(1.0))
    callback.on_epoch_end(0, {"val_loss": 0.5})  # the best
    model.set_weights(weights(2.0))
    callback.on_epoch_end(1, {"val_loss": 0.9})  # worse: not kept
    model.set_weights(weights(3.0))
    assert not path.exists()  # nothing written while training

    callback.on_train_end()
    assert path.exists()
    # The model keeps what training (or a user's EarlyStopping) left in it ...
    assert all(np.all(w == 3.0) for w in model.get_weights())
    # ... and the file holds the best epoch's weights, as Keras Tuner's would.
    reloaded = _model()
    reloaded.load_weights(str(path))
    assert all(np.all(w == 1.0) for w in reloaded.get_weights())

    # A fit with no better epoch writes nothing over it.
    path.unlink()
    callback.on_epoch_end(0, {"val_loss": 0.7})
    callback.on_train_end()
    assert not path.exists()
