"""The in-memory :class:`Dataset` a worker trains on, and how raw arrays become one.

Every source returns a :class:`RawData`; :func:`prepare` then applies the same
rules to all of them: labels checked (integer or one-hot, kept as given unless
``dataset.labels`` asks for a form), pixels scaled to [0, 1], a seeded
stratified validation split when the source has no validation set, and
``subset``. A source's test split (when it has one) is scaled like the
training data and never enters training or validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from orchestrator.errors import KtClusterError

LabelMode = Literal["int", "onehot"]
# dataset.labels (orchestrator.config.dataset.LABEL_FORMS) -> the Dataset's label_mode.
_LABEL_FORM_MODES: dict[str, LabelMode] = {"int": "int", "one_hot": "onehot"}


class DatasetError(KtClusterError):
    """A dataset could not be loaded; the message names the source, what was wrong and the fix."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Training, validation and (optional) test arrays plus what a hypermodel needs.

    Labels keep the form they arrived in unless ``dataset.labels`` converts
    them: ``label_mode`` says which, and :attr:`loss_name` is the matching
    cross-entropy. ``x_test``/``y_test`` are None when the source has no test
    split; training and validation never see them. Plain numpy, so it pickles
    (the chief's fleet ``ray.put``s it for remote workers).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    label_mode: LabelMode
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def has_test(self) -> bool:
        """True when the source has a held-out test split."""
        return self.x_test is not None and self.y_test is not None

    @property
    def loss_name(self) -> str:
        """``sparse_categorical_crossentropy`` for integer labels, else ``categorical_...``."""
        if self.label_mode == "int":
            return "sparse_categorical_crossentropy"
        return "categorical_crossentropy"

    def __repr__(self) -> str:
        return (
            f"Dataset(train={len(self.x_train)}, val={len(self.x_val)}, "
            f"test={len(self.x_test) if self.x_test is not None else None}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"label_mode={self.label_mode!r})"
        )


@dataclass(frozen=True, eq=False)
class RawData:
    """Arrays as a source produced them; ``x_val``/``y_val`` None means "split for me",
    ``x_test``/``y_test`` None means the source has no test split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    pixel_max: float | None = None  # e.g. 255 for decoded images stored as floats
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def _labels(where: str, y: np.ndarray, n: int) -> tuple[np.ndarray, LabelMode]:
    if len(y) != n:
        raise DatasetError(f"{where}: expected one label per sample ({n}), got {len(y)} labels.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
            raise DatasetError(
                f"{where}: expected integer class labels, got dtype {y.dtype}; "
                "encode labels as 0..num_classes-1."
            )
        if not np.all(np.equal(np.mod(y, 1), 0)) or (y.size and y.min() < 0):
            raise DatasetError(
                f"{where}: expected integer class labels 0..num_classes-1, got values such as "
                f"{np.unique(y)[:5].tolist()}."
            )
        return y.astype(np.int64), "int"
    if y.ndim == 2:
        if not np.all((y == 0) | (y == 1)) or not np.all(y.sum(axis=1) == 1):
            raise DatasetError(
                f"{where}: 2-D labels must be one-hot (one 1 per row), got rows such as "
                f"{y[:1].tolist()}."
            )
        return y.astype(np.float32), "onehot"
    raise DatasetError(
        f"{where}: expected labels of shape (N,) or one-hot (N, classes), got {y.shape}."
    )


def _scale(x: np.ndarray, pixel_max: float | None) -> np.ndarray:
    if np.issubdtype(x.dtype, np.integer):
        return (x / 255.0).astype(np.float32)
    x = x.astype(np.float32)
    top = pixel_max if pixel_max is not None else float(x.max()) if x.size else 0.0
    return x / top if top > 1 else x


def _float_top(x: np.ndarray) -> float | None:
    """The maximum :func:`_scale` divides float data by (None for integer pixels)."""
    if np.issubdtype(x.dtype, np.integer) or not x.size:
        return None
    return float(np.asarray(x, dtype=np.float32).max())


def _split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, label_mode: LabelMode
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    classes = y if label_mode == "int" else y.argmax(axis=1)
    counts = np.bincount(classes)
    n_val = int(np.ceil(len(x) * fraction))
    stratify = (
        classes if counts[counts > 0].min() >= 2 and n_val >= np.count_nonzero(counts) else None
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=fraction, random_state=seed, shuffle=True, stratify=stratify
    )
    return x_train, y_train, x_val, y_val


def prepare(
    raw: RawData,
    *,
    source: str,
    validation_split: float,
    subset: int | None,
    seed: int,
    labels: str | None = None,
) -> Dataset:
    """Validate, scale, split and subset ``raw`` into a :class:`Dataset`.

    ``labels`` (``dataset.labels``): None keeps the labels' form, ``int`` or
    ``one_hot`` converts them (train, validation and test alike).
    """
    where = f"dataset {source!r}"
    x_train = np.asarray(raw.x_train)
    if x_train.ndim < 2 or len(x_train) < 2:
        raise DatasetError(
            f"{where}: expected x_train of shape (N, ...) with N >= 2 samples, got {x_train.shape}."
        )
    y_train, mode = _labels(f"{where}: y_train", np.asarray(raw.y_train), len(x_train))
    # The test split is scaled by what the training data is scaled by (the
    # same pixel maximum), so a model sees test inputs on the training's scale.
    test_top = raw.pixel_max
    if raw.x_val is None or raw.y_val is None:
        if test_top is None:
            test_top = _float_top(x_train)
        x_train = _scale(x_train, raw.pixel_max)
        x_train, y_train, x_val, y_val = _split(x_train, y_train, validation_split, seed, mode)
    else:
        x_val = np.asarray(raw.x_val)
        y_val, val_mode = _labels(f"{where}: y_val", np.asarray(raw.y_val), len(x_val))
        if val_mode != mode:
            raise DatasetError(
                f"{where}: y_train labels are {mode} but y_val labels are {val_mode}; "
                "use one form for both."
            )
        if x_val.shape[1:] != x_train.shape[1:]:
            raise DatasetError(
                f"{where}: x_val samples have shape {x_val.shape[1:]} but x_train samples have "
                f"{x_train.shape[1:]}; they must match."
            )
        scale_max = raw.pixel_max
        if scale_max is None and not np.issubdtype(x_train.dtype, np.integer) and x_train.size:
            scale_max = float(max(x_train.max(), x_val.max() if x_val.size else 0.0))
        test_top = scale_max
        x_train, x_val = _scale(x_train, scale_max), _scale(x_val, scale_max)
        order = np.random.default_rng(seed).permutation(len(x_train))
        x_train, y_train = x_train[order], y_train[order]
    if subset is not None:
        x_train, y_train = x_train[:subset], y_train[:subset]
    if mode == "onehot":
        num_classes = int(y_train.shape[1])
        if y_val.shape[1] != num_classes:
            raise DatasetError(
                f"{where}: y_train is one-hot over {num_classes} classes but y_val over "
                f"{y_val.shape[1]}."
            )
    else:
        num_classes = int(max(y_train.max(), y_val.max() if len(y_val) else 0)) + 1
    if num_classes < 2:
        raise DatasetError(f"{where}: expected at least 2 classes, got {num_classes}.")
    x_test, y_test = _test_split(where, raw, x_train.shape[1:], mode, num_classes, test_top)
    if labels is not None:
        if labels not in _LABEL_FORM_MODES:
            raise DatasetError(
                f"{where}: labels: expected one of {', '.join(_LABEL_FORM_MODES)}, got "
                f"{labels!r}. Fix dataset.labels."
            )
        wanted = _LABEL_FORM_MODES[labels]
        y_train, y_val = (_convert(y, mode, wanted, num_classes) for y in (y_train, y_val))
        if y_test is not None:
            y_test = _convert(y_test, mode, wanted, num_classes)
        mode = wanted
    return Dataset(
        x_train=np.ascontiguousarray(x_train),
        y_train=np.ascontiguousarray(y_train),
        x_val=np.ascontiguousarray(x_val),
        y_val=np.ascontiguousarray(y_val),
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        label_mode=mode,
        x_test=None if x_test is None else np.ascontiguousarray(x_test),
        y_test=None if y_test is None else np.ascontiguousarray(y_test),
    )


def _test_split(
    where: str,
    raw: RawData,
    sample_shape: tuple[int, ...],
    mode: LabelMode,
    num_classes: int,
    top: float | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The source's test split, checked against the training data and scaled like it."""
    if raw.x_test is None and raw.y_test is None:
        return None, None
    if raw.x_test is None or raw.y_test is None:
        raise DatasetError(f"{where}: expected both x_test and y_test, got only one; give both.")
    x_test = np.asarray(raw.x_test)
    y_test, test_mode = _labels(f"{where}: y_test", np.asarray(raw.y_test), len(x_test))
    if test_mode != mode:
        raise DatasetError(
            f"{where}: y_train labels are {mode} but y_test labels are {test_mode}; "
            "use one form for both."
        )
    if x_test.shape[1:] != sample_shape:
        raise DatasetError(
            f"{where}: x_test samples have shape {x_test.shape[1:]} but x_train samples have "
            f"{sample_shape}; they must match."
        )
    classes = int(y_test.shape[1]) if mode == "onehot" else int(y_test.max(initial=-1)) + 1
    if classes > num_classes:
        raise DatasetError(
            f"{where}: y_test has labels of {classes} classes but training and validation have "
            f"{num_classes}; expected test labels among the training classes."
        )
    return _scale(x_test, top), y_test


def _convert(y: np.ndarray, mode: LabelMode, wanted: LabelMode, num_classes: int) -> np.ndarray:
    """Labels in the ``wanted`` form (``keras.utils.to_categorical`` without importing Keras)."""
    if mode == wanted:
        return y
    if wanted == "onehot":
        return np.eye(num_classes, dtype=np.float32)[y]
    return np.asarray(y.argmax(axis=1), dtype=np.int64)


def as_array(where: str, value: Any) -> np.ndarray:
    """``np.asarray(value)`` with a clear error for things that are not arrays."""
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise DatasetError(
            f"{where}: expected a numeric array of one shape, got {type(value).__name__} ({exc}); "
            "return numpy arrays."
        ) from exc
    if array.dtype == object:
        raise DatasetError(
            f"{where}: expected a numeric array of one shape, got dtype object (ragged or mixed data of "
            f"type {type(value).__name__}); return numpy arrays of one shape."
        )
    return array
