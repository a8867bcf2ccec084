"""One loader per dataset source; each returns :class:`RawData` for :func:`prepare`.

The Keras built-ins live in :mod:`workers.datasets.keras_builtin`. Every
source may bring a test split: digits holds out a fixed stratified 20%, an
npz may hold ``x_test``/``y_test`` (or ``test_path`` names another file), an
image folder may name ``test_path``, and a user function may return a third
split.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from orchestrator.config.dataset import DIGITS_TEST_FRACTION, DIGITS_TEST_SEED
from orchestrator.config.user_code import UserCodeError, import_reference
from workers.datasets.dataset import DatasetError, RawData, as_array


class DatasetSpecLike(Protocol):
    """What the loaders read from ``orchestrator.config.DatasetSpec``."""

    @property
    def source(self) -> str: ...
    @property
    def path(self) -> str | None: ...
    @property
    def image_size(self) -> tuple[int, int] | None: ...
    @property
    def color_mode(self) -> str: ...
    @property
    def validation_split(self) -> float: ...
    @property
    def validation_path(self) -> str | None: ...
    @property
    def test_path(self) -> str | None: ...
    @property
    def seed(self) -> int: ...
    @property
    def labels(self) -> str | None: ...


def load_digits() -> RawData:
    """scikit-learn's 1797 8x8 digits (offline), as (8, 8, 1) images in [0, 1].

    A fixed, stratified 20% is held out as the test split first (seed
    ``DIGITS_TEST_SEED``, whatever ``dataset.seed``), so the train/validation
    split that follows never sees a test sample.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_TEST_SEED,
        shuffle=True,
        stratify=labels,
    )
    return RawData(x_train, y_train, pixel_max=1.0, x_test=x_test, y_test=y_test)


def _npz(path: str, role: str) -> dict[str, np.ndarray]:
    file = Path(path)
    if not file.is_file():
        raise DatasetError(
            f"dataset 'npz': {role} {str(file)!r} does not exist (cwd {os.getcwd()}); "
            "give an absolute path or a path relative to where ktc runs, present on every worker."
        )
    try:
        with np.load(file, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as exc:
        raise DatasetError(
            f"dataset 'npz': cannot read {role} {str(file)!r} as a numpy .npz: {exc}"
        ) from exc


def _matched(where: str, data: Mapping[str, np.ndarray], x_key: str, y_key: str) -> tuple[Any, Any]:
    """``data[x_key], data[y_key]``, checked to hold one label per sample, so
    the message names the file and its keys (not the split they end up in)."""
    x, y = data[x_key], data[y_key]
    if np.ndim(x) >= 1 and np.ndim(y) >= 1 and len(x) != len(y):
        raise DatasetError(
            f"{where}: expected one label per sample, but {x_key} has {len(x)} samples and "
            f"{y_key} has {len(y)} labels. Save arrays of the same length."
        )
    return x, y


def _pair(where: str, data: Mapping[str, np.ndarray], prefer: tuple[str, str]) -> tuple[Any, Any]:
    for x_key, y_key in (prefer, ("x", "y")):
        if x_key in data and y_key in data:
            return _matched(where, data, x_key, y_key)
    raise DatasetError(
        f"{where}: expected arrays {prefer[0]}/{prefer[1]} (or x/y), found keys "
        f"{sorted(data) or '(none)'}; save with np.savez(path, {prefer[0]}=..., {prefer[1]}=...)."
    )


def _optional_pair(
    where: str, data: Mapping[str, np.ndarray], x_key: str, y_key: str
) -> tuple[Any, Any]:
    if (x_key in data) != (y_key in data):
        raise DatasetError(
            f"{where} has only one of {x_key}/{y_key} (keys {sorted(data)}); save both or neither."
        )
    return _matched(where, data, x_key, y_key) if x_key in data else (None, None)


def load_npz(spec: DatasetSpecLike) -> RawData:
    """``x_train``/``y_train`` (+ optional ``x_val``/``y_val``, ``x_test``/``y_test``) or
    ``x``/``y`` from .npz files (``validation_path``, ``test_path``: other files)."""
    if not spec.path:
        raise DatasetError(
            "search.yaml: dataset.path: source npz needs a path to a .npz file; add path: data.npz."
        )
    data = _npz(spec.path, "path")
    x_train, y_train = _pair(f"dataset 'npz': {spec.path}", data, ("x_train", "y_train"))
    x_val = y_val = None
    if spec.validation_path:
        val = _npz(spec.validation_path, "validation_path")
        x_val, y_val = _pair(f"dataset 'npz': {spec.validation_path}", val, ("x_val", "y_val"))
    else:
        x_val, y_val = _optional_pair(f"dataset 'npz': {spec.path}", data, "x_val", "y_val")
    if spec.test_path:
        test = _npz(spec.test_path, "test_path")
        x_test, y_test = _pair(f"dataset 'npz': {spec.test_path}", test, ("x_test", "y_test"))
    else:
        x_test, y_test = _optional_pair(f"dataset 'npz': {spec.path}", data, "x_test", "y_test")
    return RawData(x_train, y_train, x_val, y_val, x_test=x_test, y_test=y_test)


def _directory_arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in dataset.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DatasetError("dataset 'image_directory': no images found in a split.")
    return np.concatenate(xs), np.concatenate(ys)


def load_image_directory(spec: DatasetSpecLike) -> RawData:
    """``keras.utils.image_dataset_from_directory`` (one sub-folder per class) as arrays."""
    if not spec.path or not Path(spec.path).is_dir():
        raise DatasetError(
            f"search.yaml: dataset.path: source image_directory needs a folder with one "
            f"sub-folder per class, got {spec.path!r} (cwd {os.getcwd()})."
        )
    import keras

    common: dict[str, Any] = {
        "labels": "inferred",
        "label_mode": "int",
        "color_mode": spec.color_mode,
        "image_size": tuple(spec.image_size) if spec.image_size else (256, 256),
        "batch_size": 256,
        "seed": spec.seed,
        "verbose": False,
    }
    try:
        if spec.validation_path:
            train = keras.utils.image_dataset_from_directory(spec.path, **common)
            val = keras.utils.image_dataset_from_directory(spec.validation_path, **common)
        else:
            train, val = keras.utils.image_dataset_from_directory(
                spec.path, validation_split=spec.validation_split, subset="both", **common
            )
        test = (
            keras.utils.image_dataset_from_directory(spec.test_path, shuffle=False, **common)
            if spec.test_path
            else None
        )
    except ValueError as exc:
        raise DatasetError(f"dataset 'image_directory': {spec.path}: {exc}") from exc
    _same_classes(spec, train, val, test)
    x_train, y_train = _directory_arrays(train)
    x_val, y_val = _directory_arrays(val)
    x_test, y_test = _directory_arrays(test) if test is not None else (None, None)
    # Decoded images are floats in [0, 255] whatever their content.
    return RawData(x_train, y_train, x_val, y_val, pixel_max=255.0, x_test=x_test, y_test=y_test)


def _same_classes(spec: DatasetSpecLike, train: Any, *others: Any) -> None:
    """Label i must mean one class in every folder (Keras numbers sub-folders by name)."""
    for other, key in zip(others, ("validation_path", "test_path"), strict=True):
        if other is not None and list(other.class_names) != list(train.class_names):
            raise DatasetError(
                f"search.yaml: dataset.{key}: its class folders {list(other.class_names)} differ "
                f"from path's {list(train.class_names)}; expected the same sub-folders in both. "
                "Make the folders match."
            )


def load_user_function(reference: str) -> RawData:
    """Call the user's ``module:function`` and validate what it returns."""
    try:
        function = import_reference(reference)
    except UserCodeError as exc:
        raise DatasetError(f"search.yaml: dataset.source: {exc}") from exc
    if not callable(function):
        raise DatasetError(
            f"search.yaml: dataset.source: {reference!r} is a {type(function).__name__}, "
            "expected a function taking no arguments."
        )
    result = function()
    return _user_result(reference, result)


_EXPECTED = (
    "expected (x_train, y_train, x_val, y_val[, x_test, y_test]), "
    "((x_train, y_train), (x_val, y_val)[, (x_test, y_test)]), (x, y) or a dict with "
    "x_train/y_train[/x_val/y_val][/x_test/y_test]"
)
_NAMES = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _arrays(where: str, values: Any) -> RawData:
    """RawData from 2, 4 or 6 arrays in ``_NAMES`` order (train, validation, test)."""
    arrays = [as_array(f"{where}: {n}", v) for n, v in zip(_NAMES, values, strict=False)]
    if len(arrays) == 2:
        return RawData(arrays[0], arrays[1])
    if len(arrays) == 4:
        return RawData(arrays[0], arrays[1], arrays[2], arrays[3])
    return RawData(arrays[0], arrays[1], arrays[2], arrays[3], x_test=arrays[4], y_test=arrays[5])


def _user_result(reference: str, result: Any) -> RawData:
    """What a user's dataset function returned, as RawData.

    The forms (the test split is optional; without it the search has none):
    ``(x_train, y_train, x_val, y_val[, x_test, y_test])``;
    ``((x_train, y_train), (x_val, y_val)[, (x_test, y_test)])``; ``(x, y)``
    (split for validation); or a dict with ``x_train``/``y_train`` (or
    ``x``/``y``) and optional ``x_val``/``y_val`` and ``x_test``/``y_test``.
    """
    where = f"dataset {reference!r}"
    if isinstance(result, Mapping):
        data = {str(k): v for k, v in result.items()}
        x, y = _pair(f"{where} returned a dict which", data, ("x_train", "y_train"))
        for x_key, y_key in (("x_val", "y_val"), ("x_test", "y_test")):
            if (x_key in data) != (y_key in data):
                raise DatasetError(f"{where}: the dict has only one of {x_key}/{y_key}; give both.")
        raw = _arrays(
            where, (x, y, data.get("x_val"), data.get("y_val"))[: 4 if "x_val" in data else 2]
        )
        if "x_test" not in data:
            return raw
        return RawData(
            raw.x_train,
            raw.y_train,
            raw.x_val,
            raw.y_val,
            x_test=as_array(f"{where}: x_test", data["x_test"]),
            y_test=as_array(f"{where}: y_test", data["y_test"]),
        )
    if isinstance(result, tuple | list):
        if len(result) in (4, 6):
            return _arrays(where, result)
        # Pairs are tuples, data is arrays or lists: ([[1, 2], [3]], [0, 1]) is (x, y).
        if len(result) in (2, 3) and all(isinstance(p, tuple) and len(p) == 2 for p in result):
            return _arrays(where, [a for pair in result for a in pair])
        if len(result) == 2:
            return RawData(as_array(f"{where}: x", result[0]), as_array(f"{where}: y", result[1]))
        raise DatasetError(f"{where}: {_EXPECTED}; got a {type(result).__name__} of {len(result)}.")
    raise DatasetError(f"{where}: {_EXPECTED}; got {type(result).__name__}.")
