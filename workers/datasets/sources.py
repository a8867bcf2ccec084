"""One loader per dataset source; each returns :class:`RawData` for :func:`prepare`.

Built-in Keras datasets are checked in the Keras cache *before* Keras is asked
for them: workers usually have no internet, and ``keras.utils.get_file`` would
otherwise fail deep inside a trial with a URL error.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from workers.datasets.cache import keras_cache_dir
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
    def seed(self) -> int: ...


# keras/src/datasets/*.py (keras 3.15): the files get_file() looks for under
# <keras home>/datasets. cifar10 is fetched with extract=True and an fname
# without a dot, so get_file checks for "<fname>_archive" and re-extracts it.
KERAS_DATASET_FILES: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist.npz",),
    "fashion_mnist": tuple(
        os.path.join("fashion-mnist", name)
        for name in (
            "train-labels-idx1-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
        )
    ),
    "cifar10": ("cifar-10-batches-py-target_archive",),
}
_ORIGINS = {
    "mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "fashion_mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/<file>",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (saved under the name "
    "cifar-10-batches-py-target_archive)",
}


def load_digits() -> RawData:
    """scikit-learn's 1797 8x8 digits (offline), as (8, 8, 1) images in [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]
    return RawData(images, bunch.target.astype(np.int64), pixel_max=1.0)


def keras_dataset_missing(source: str) -> list[Path]:
    """The cache files of a Keras built-in dataset that are not on this machine."""
    base = keras_cache_dir() / "datasets"
    return [base / name for name in KERAS_DATASET_FILES[source] if not (base / name).is_file()]


def load_keras_dataset(source: str) -> RawData:
    """mnist, fashion_mnist or cifar10 from the Keras cache; the test split stays unused.

    The search tunes on a validation split of the training set, so the
    official test set remains a clean final check for the user.
    """
    missing = keras_dataset_missing(source)
    if missing:
        raise DatasetError(
            f"dataset {source!r}: not in the Keras cache and this worker is offline; missing "
            f"{', '.join(str(p) for p in missing)}. Copy the file(s) there from a machine with "
            f"internet ({_ORIGINS[source]}; or run keras.datasets.{source}.load_data() there and "
            f"copy {keras_cache_dir() / 'datasets'}), or use dataset: digits or npz."
        )
    import keras

    module = getattr(keras.datasets, source)
    (x_train, y_train), _test = module.load_data()
    return RawData(np.asarray(x_train), np.asarray(y_train))


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


def _pair(where: str, data: Mapping[str, np.ndarray], prefer: tuple[str, str]) -> tuple[Any, Any]:
    for x_key, y_key in (prefer, ("x", "y")):
        if x_key in data and y_key in data:
            return data[x_key], data[y_key]
    raise DatasetError(
        f"{where}: expected arrays {prefer[0]}/{prefer[1]} (or x/y), found keys "
        f"{sorted(data) or '(none)'}; save with np.savez(path, {prefer[0]}=..., {prefer[1]}=...)."
    )


def load_npz(spec: DatasetSpecLike) -> RawData:
    """``x_train``/``y_train`` (+ optional ``x_val``/``y_val``) or ``x``/``y`` from .npz files."""
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
    elif "x_val" in data or "y_val" in data:
        if not ("x_val" in data and "y_val" in data):
            raise DatasetError(
                f"dataset 'npz': {spec.path} has only one of x_val/y_val (keys {sorted(data)}); "
                "save both or neither."
            )
        x_val, y_val = data["x_val"], data["y_val"]
    return RawData(x_train, y_train, x_val, y_val)


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
    except ValueError as exc:
        raise DatasetError(f"dataset 'image_directory': {spec.path}: {exc}") from exc
    x_train, y_train = _directory_arrays(train)
    x_val, y_val = _directory_arrays(val)
    # Decoded images are floats in [0, 255] whatever their content.
    return RawData(x_train, y_train, x_val, y_val, pixel_max=255.0)


def load_user_function(reference: str) -> RawData:
    """Call the user's ``module:function`` and validate what it returns."""
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise DatasetError(
            f"search.yaml: dataset.source: cannot import module {module_name!r} for "
            f"{reference!r}: {type(exc).__name__}: {exc}. It must be importable on every worker: "
            f"run from its directory (cwd here is {os.getcwd()}) or add it to PYTHONPATH "
            f"(sys.path starts with {sys.path[:3]})."
        ) from exc
    function: Any = module
    for part in attribute.split("."):
        if not hasattr(function, part):
            raise DatasetError(
                f"search.yaml: dataset.source: module {module_name!r} has no attribute "
                f"{attribute!r}."
            )
        function = getattr(function, part)
    if not callable(function):
        raise DatasetError(
            f"search.yaml: dataset.source: {reference!r} is a {type(function).__name__}, "
            "expected a function taking no arguments."
        )
    result = function()
    return _user_result(reference, result)


_EXPECTED = (
    "expected (x_train, y_train, x_val, y_val), ((x_train, y_train), (x_val, y_val)), "
    "(x, y) or a dict with x_train/y_train[/x_val/y_val]"
)


def _user_result(reference: str, result: Any) -> RawData:
    where = f"dataset {reference!r}"
    if isinstance(result, Mapping):
        data = {str(k): v for k, v in result.items()}
        x, y = _pair(f"{where} returned a dict which", data, ("x_train", "y_train"))
        if ("x_val" in data) != ("y_val" in data):
            raise DatasetError(f"{where}: the dict has only one of x_val/y_val; give both.")
        if "x_val" in data:
            return RawData(
                as_array(f"{where}: x_train", x),
                as_array(f"{where}: y_train", y),
                as_array(f"{where}: x_val", data["x_val"]),
                as_array(f"{where}: y_val", data["y_val"]),
            )
        return RawData(as_array(f"{where}: x_train", x), as_array(f"{where}: y_train", y))
    if isinstance(result, tuple | list):
        if len(result) == 4:
            names = ("x_train", "y_train", "x_val", "y_val")
            x, y, xv, yv = (
                as_array(f"{where}: {n}", v) for n, v in zip(names, result, strict=True)
            )
            return RawData(x, y, xv, yv)
        # Pairs are tuples, data is arrays or lists: ([[1, 2], [3]], [0, 1]) is (x, y).
        if len(result) == 2 and all(isinstance(p, tuple) and len(p) == 2 for p in result):
            (x, y), (xv, yv) = result
            return RawData(
                as_array(f"{where}: x_train", x),
                as_array(f"{where}: y_train", y),
                as_array(f"{where}: x_val", xv),
                as_array(f"{where}: y_val", yv),
            )
        if len(result) == 2:
            return RawData(as_array(f"{where}: x", result[0]), as_array(f"{where}: y", result[1]))
        raise DatasetError(f"{where}: {_EXPECTED}; got a {type(result).__name__} of {len(result)}.")
    raise DatasetError(f"{where}: {_EXPECTED}; got {type(result).__name__}.")
