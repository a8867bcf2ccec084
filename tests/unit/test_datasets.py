"""Dataset sources, scaling, label forms, splits and the per-process cache."""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from orchestrator.config import DatasetSpec
from orchestrator.errors import KtClusterError
from workers.datasets import Dataset, DatasetError, clear_dataset_cache, load_dataset


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_dataset_cache()
    yield
    clear_dataset_cache()


def _images(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 256, size=(n, 6, 6, 1), dtype=np.uint8)
    return x, y


def test_digits_shape_scale_and_split() -> None:
    data = load_dataset(DatasetSpec(source="digits", validation_split=0.25, seed=3))
    assert data.input_shape == (8, 8, 1)
    assert data.num_classes == 10
    assert data.label_mode == "int"
    assert data.loss_name == "sparse_categorical_crossentropy"
    # 20% held out for the test split first, then the validation split of the rest.
    assert len(data.x_test) == 360
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 1797
    assert len(data.x_val) == pytest.approx(1437 * 0.25, abs=1)
    assert data.x_train.dtype == np.float32
    assert data.x_train.min() >= 0.0 and data.x_train.max() == 1.0
    # Stratified: every class is in the validation set.
    assert set(np.unique(data.y_val)) == set(range(10))
    restored = pickle.loads(pickle.dumps(data))
    assert isinstance(restored, Dataset) and np.array_equal(restored.x_val, data.x_val)


def test_loaded_once_per_process_and_seeded() -> None:
    spec = DatasetSpec(source="digits", subset=100)
    first = load_dataset(spec)
    assert load_dataset(DatasetSpec(source="digits", subset=100)) is first
    assert len(first.x_train) == 100
    other = load_dataset(DatasetSpec(source="digits", subset=100, seed=1))
    assert other is not first
    assert not np.array_equal(other.y_train, first.y_train)


def test_npz_round_trip_with_uint8_pixels(tmp_path: Path) -> None:
    x, y = _images(40, 4)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    data = load_dataset(DatasetSpec(source="npz", path=str(tmp_path / "d.npz"), subset=20))
    assert data.input_shape == (6, 6, 1)
    assert data.num_classes == 4
    assert len(data.x_train) == 20 and len(data.x_val) == 8
    assert data.x_train.max() <= 1.0 and data.x_train.dtype == np.float32
    assert np.allclose(data.x_val * 255, (data.x_val * 255).round(), atol=1e-3)  # uint8 / 255


def test_npz_onehot_labels_and_validation_path(tmp_path: Path) -> None:
    x, y = _images(30, 3)
    onehot = np.eye(3, dtype=np.float32)[y]
    xv, yv = _images(9, 3, seed=1)
    np.savez(tmp_path / "train.npz", x=x.astype(np.float32) * 2.0, y=onehot)
    np.savez(tmp_path / "val.npz", x_val=xv.astype(np.float32) * 2.0, y_val=np.eye(3)[yv])
    spec = DatasetSpec(
        source="npz", path=str(tmp_path / "train.npz"), validation_path=str(tmp_path / "val.npz")
    )
    data = load_dataset(spec)
    assert data.label_mode == "onehot"
    assert data.loss_name == "categorical_crossentropy"
    assert data.y_train.shape == (30, 3) and data.y_val.shape == (9, 3)
    assert data.num_classes == 3
    assert len(data.x_val) == 9  # the given validation set, not a split
    assert data.x_train.max() <= 1.0 and data.x_val.max() <= 1.0  # floats > 1 scaled by max


def test_npz_missing_keys_lists_what_was_found(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 2, 2)), labels=np.zeros(4))
    with pytest.raises(
        DatasetError,
        match=r"expected arrays x_train/y_train \(or x/y\), found keys \['images', 'labels'\]",
    ):
        load_dataset(DatasetSpec(source="npz", path=str(tmp_path / "bad.npz")))


def test_bad_labels_are_explained(tmp_path: Path) -> None:
    x, _ = _images(10, 2)
    np.savez(tmp_path / "frac.npz", x=x, y=np.linspace(0, 1, 10))
    with pytest.raises(DatasetError, match=r"y_train: expected integer class labels 0\.\."):
        load_dataset(DatasetSpec(source="npz", path=str(tmp_path / "frac.npz")))
    # The file and its keys are named, not only the split they would become.
    short = tmp_path / "short.npz"
    np.savez(short, x=x, y=np.zeros(7, dtype=int))
    with pytest.raises(
        DatasetError,
        match=rf"^dataset 'npz': {re.escape(str(short))}: expected one label per sample, but x "
        r"has 10 samples and y has 7 labels\. Save arrays of the same length\.$",
    ):
        load_dataset(DatasetSpec(source="npz", path=str(short)))
    np.savez(short, x_train=x, y_train=np.zeros(10, dtype=int), x_val=x, y_val=np.zeros(9))
    with pytest.raises(DatasetError, match=r"but x_val has 10 samples and y_val has 9 labels"):
        load_dataset(DatasetSpec(source="npz", path=str(short)))


@pytest.mark.parametrize(
    ("source", "missing"),
    [
        ("mnist", "datasets/mnist.npz"),
        ("fashion_mnist", "datasets/fashion-mnist/train-labels-idx1-ubyte.gz"),
        ("cifar10", "datasets/cifar-10-batches-py-target_archive"),
    ],
)
def test_keras_dataset_offline_names_the_cache_path(
    source: str, missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # Port 1 on loopback refuses at once: the download fails as on an offline node.
    monkeypatch.setenv("KTC_KERAS_DATASETS_ORIGIN", "http://127.0.0.1:1/")
    with pytest.raises(
        KtClusterError,
        match=rf"dataset '{source}': not in the Keras cache and the download failed.*"
        rf"missing {tmp_path}/{missing}.*or use dataset: digits",
    ):
        load_dataset(DatasetSpec(source=source))


USER_DATA = """
import numpy as np

def _xy(n, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, 4)).astype("float32"), np.arange(n) % 2

def four():
    return (*_xy(20, 0), *_xy(6, 1))

def nested():
    return _xy(20, 0), _xy(6, 1)

def as_dict():
    x, y = _xy(20, 0)
    return {"x_train": x, "y_train": y}

def bad():
    return "nope"

def ragged():
    return [[1, 2], [3]], [0, 1]
"""


def test_user_function_forms_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ktc_user_data_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    for fn in ("four", "nested"):
        data = load_dataset(DatasetSpec(source=f"{name}:{fn}"))
        assert (len(data.x_train), len(data.x_val), data.input_shape) == (20, 6, (4,))
    split = load_dataset(DatasetSpec(source=f"{name}:as_dict", validation_split=0.5))
    assert len(split.x_train) == len(split.x_val) == 10
    with pytest.raises(
        DatasetError,
        match=r"expected \(x_train, y_train, x_val, y_val\[, x_test, y_test\]\).*got str",
    ):
        load_dataset(DatasetSpec(source=f"{name}:bad"))
    with pytest.raises(DatasetError, match=r"x: expected a numeric array of one shape, got list"):
        load_dataset(DatasetSpec(source=f"{name}:ragged"))
    with pytest.raises(DatasetError, match=r"cannot import module 'no_such_data_mod'"):
        load_dataset(DatasetSpec(source="no_such_data_mod:load"))


def test_image_directory(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(5):
            pixels = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    spec = DatasetSpec(
        source="image_directory",
        path=str(tmp_path),
        image_size=(8, 8),
        color_mode="grayscale",
        validation_split=0.2,
    )
    data = load_dataset(spec)
    assert data.input_shape == (8, 8, 1)
    assert data.num_classes == 2
    assert len(data.x_train) + len(data.x_val) == 10 and len(data.x_val) == 2
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
