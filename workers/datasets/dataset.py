"""The in-memory :class:`Dataset` a worker trains on, and how raw arrays become one.

Every source returns a :class:`RawData`; :func:`prepare` then applies the same
rules to all of them: labels checked (integer or one-hot, kept as given),
pixels scaled to [0, 1], a seeded stratified validation split when the source
has no validation set, and ``subset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from orchestrator.errors import KtClusterError

LabelMode = Literal["int", "onehot"]


class DatasetError(KtClusterError):
    """A dataset could not be loaded; the message names the source, what was wrong and the fix."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Training and validation arrays plus what a hypermodel needs to know about them.

    Labels keep the form they arrived in: ``label_mode`` says which, and
    :attr:`loss_name` is the matching cross-entropy. Plain numpy, so it pickles
    (the chief's fleet ``ray.put``s it for remote workers).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    label_mode: LabelMode

    @property
    def loss_name(self) -> str:
        """``sparse_categorical_crossentropy`` for integer labels, else ``categorical_...``."""
        if self.label_mode == "int":
            return "sparse_categorical_crossentropy"
        return "categorical_crossentropy"

    def __repr__(self) -> str:
        return (
            f"Dataset(train={len(self.x_train)}, val={len(self.x_val)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"label_mode={self.label_mode!r})"
        )


@dataclass(frozen=True, eq=False)
class RawData:
    """Arrays as a source produced them; ``x_val``/``y_val`` None means "split for me"."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    pixel_max: float | None = None  # e.g. 255 for decoded images stored as floats


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
    raw: RawData, *, source: str, validation_split: float, subset: int | None, seed: int
) -> Dataset:
    """Validate, scale, split and subset ``raw`` into a :class:`Dataset`."""
    where = f"dataset {source!r}"
    x_train = np.asarray(raw.x_train)
    if x_train.ndim < 2 or len(x_train) < 2:
        raise DatasetError(
            f"{where}: expected x_train of shape (N, ...) with N >= 2 samples, got {x_train.shape}."
        )
    y_train, mode = _labels(f"{where}: y_train", np.asarray(raw.y_train), len(x_train))
    if raw.x_val is None or raw.y_val is None:
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
    return Dataset(
        x_train=np.ascontiguousarray(x_train),
        y_train=np.ascontiguousarray(y_train),
        x_val=np.ascontiguousarray(x_val),
        y_val=np.ascontiguousarray(y_val),
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        label_mode=mode,
    )


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
