"""Datasets: load a ``DatasetSpec`` once per process into numpy arrays.

Sources: ``digits`` (scikit-learn, offline), ``mnist``/``fashion_mnist``/
``cifar10`` (the Keras cache, downloaded into it when missing; a clear error
names the missing file when the node is offline), ``npz``,
``image_directory`` and the user's ``module:function``. Pixels are scaled to
[0, 1]; labels stay integer or one-hot as given unless ``dataset.labels``
says which. Every source may have a test split (``Dataset.x_test``), which
training and validation never see.
"""

from __future__ import annotations

import threading
from typing import Protocol

from workers.datasets.cache import keras_cache_dir
from workers.datasets.dataset import Dataset, DatasetError, LabelMode, RawData, prepare
from workers.datasets.keras_builtin import (
    KERAS_DATASET_FILES,
    keras_dataset_missing,
    load_keras_dataset,
)
from workers.datasets.sources import (
    DatasetSpecLike,
    load_digits,
    load_image_directory,
    load_npz,
    load_user_function,
)

__all__ = [
    "KERAS_DATASET_FILES",
    "Dataset",
    "DatasetError",
    "LabelMode",
    "clear_dataset_cache",
    "keras_cache_dir",
    "keras_dataset_missing",
    "load_dataset",
]


class _CacheableSpec(DatasetSpecLike, Protocol):
    @property
    def subset(self) -> int | None: ...
    def model_dump_json(self) -> str: ...


_cache: dict[str, Dataset] = {}
# Held while loading, so two threads of one worker never load the same data twice.
_cache_lock = threading.Lock()


def load_dataset(spec: _CacheableSpec) -> Dataset:
    """The dataset ``spec`` describes, loaded at most once per process (keyed on its JSON).

    Raises :class:`DatasetError` (a ``KtClusterError``) naming the source, the
    problem and the fix.
    """
    key = spec.model_dump_json()
    with _cache_lock:
        cached = _cache.get(key)
        if cached is None:
            cached = prepare(
                _raw(spec),
                source=spec.source,
                validation_split=spec.validation_split,
                subset=spec.subset,
                seed=spec.seed,
                labels=spec.labels,
            )
            _cache[key] = cached
        return cached


def clear_dataset_cache() -> None:
    """Forget every loaded dataset (tests; a worker that must free memory)."""
    with _cache_lock:
        _cache.clear()


def _raw(spec: _CacheableSpec) -> RawData:
    source = spec.source
    if source == "digits":
        return load_digits()
    if source in KERAS_DATASET_FILES:
        return load_keras_dataset(source)
    if source == "npz":
        return load_npz(spec)
    if source == "image_directory":
        return load_image_directory(spec)
    if ":" in source:
        return load_user_function(source)
    raise DatasetError(
        f"search.yaml: dataset.source: unknown source {source!r}; expected digits, mnist, "
        "fashion_mnist, cifar10, npz, image_directory or 'module:function'."
    )
