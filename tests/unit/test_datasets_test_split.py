"""Issue 14 items 3, 7 and 10 at the dataset layer: every source's test split
(never in training or validation), ``dataset.labels: one_hot``, and Keras
built-ins downloaded into the cache (from a local HTTP server here)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from orchestrator.config import DatasetSpec
from workers.datasets import DatasetError, clear_dataset_cache, load_dataset
from workers.datasets.keras_builtin import keras_dataset_missing


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_dataset_cache()
    yield
    clear_dataset_cache()


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def test_digits_holds_out_a_fixed_stratified_test_split() -> None:
    first = load_dataset(DatasetSpec(source="digits", seed=0))
    other = load_dataset(DatasetSpec(source="digits", seed=5, validation_split=0.3))
    assert first.has_test and first.x_test is not None and first.y_test is not None
    assert len(first.x_test) == 360
    # Stratified: each class keeps its share (digits has 174..183 per class).
    assert set(np.bincount(first.y_test)) <= set(range(34, 38))
    # Fixed: the same samples whatever dataset.seed or validation_split says.
    assert np.array_equal(first.x_test, other.x_test)
    assert np.array_equal(first.y_test, other.y_test)
    # Never in training or validation (digits has a few duplicate images, so
    # count the samples rather than compare pixels).
    assert len(first.x_train) + len(first.x_val) + len(first.x_test) == 1797
    test_rows = _rows(first.x_test)
    seen = _rows(np.concatenate([first.x_train, first.x_val]))
    assert len(test_rows & seen) <= 2


def test_npz_test_arrays_leave_train_and_val_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 5, 5), dtype=np.uint8)
    y = np.arange(50) % 5
    xt = rng.integers(0, 256, size=(10, 5, 5), dtype=np.uint8)
    yt = np.arange(10) % 5
    np.savez(tmp_path / "plain.npz", x_train=x, y_train=y)
    np.savez(tmp_path / "with_test.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    plain = load_dataset(DatasetSpec(source="npz", path=str(tmp_path / "plain.npz")))
    with_test = load_dataset(DatasetSpec(source="npz", path=str(tmp_path / "with_test.npz")))
    assert not plain.has_test
    assert np.array_equal(plain.x_train, with_test.x_train)
    assert np.array_equal(plain.y_val, with_test.y_val)
    assert with_test.x_test is not None and with_test.x_test.dtype == np.float32
    assert np.allclose(with_test.x_test, xt / 255.0)
    # A separate file, like validation_path.
    np.savez(tmp_path / "test.npz", x=xt, y=yt)
    spec = DatasetSpec(
        source="npz", path=str(tmp_path / "plain.npz"), test_path=str(tmp_path / "test.npz")
    )
    assert load_dataset(spec).has_test
    np.savez(tmp_path / "half.npz", x_train=x, y_train=y, x_test=xt)
    with pytest.raises(DatasetError, match=r"has only one of x_test/y_test.*save both or neither"):
        load_dataset(DatasetSpec(source="npz", path=str(tmp_path / "half.npz")))
    np.savez(tmp_path / "shape.npz", x_train=x, y_train=y, x_test=xt[:, :4], y_test=yt)
    with pytest.raises(DatasetError, match=r"x_test samples have shape \(4, 5\) but x_train"):
        load_dataset(DatasetSpec(source="npz", path=str(tmp_path / "shape.npz")))
    np.savez(tmp_path / "extra.npz", x_train=x, y_train=y, x_test=xt, y_test=yt + 3)
    with pytest.raises(DatasetError, match=r"y_test has labels of 8 classes but training"):
        load_dataset(DatasetSpec(source="npz", path=str(tmp_path / "extra.npz")))


USER_DATA = """
import numpy as np

def _xy(n, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, 4)).astype("float32"), np.arange(n) % 2

def six():
    return (*_xy(20, 0), *_xy(6, 1), *_xy(8, 2))

def three_pairs():
    return _xy(20, 0), _xy(6, 1), _xy(8, 2)

def as_dict():
    x, y = _xy(20, 0)
    xt, yt = _xy(8, 2)
    return {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt}

def four():
    return (*_xy(20, 0), *_xy(6, 1))
"""


def test_user_function_third_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ktc_user_test_split_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    for fn in ("six", "three_pairs"):
        data = load_dataset(DatasetSpec(source=f"{name}:{fn}"))
        assert (len(data.x_train), len(data.x_val)) == (20, 6)
        assert data.x_test is not None and len(data.x_test) == 8
    split = load_dataset(DatasetSpec(source=f"{name}:as_dict", validation_split=0.5))
    assert (len(split.x_train), len(split.x_val)) == (10, 10)
    assert split.x_test is not None and len(split.x_test) == 8
    assert not load_dataset(DatasetSpec(source=f"{name}:four")).has_test  # the old form


def test_image_directory_test_path(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder, count in (("train", 5), ("test", 2)):
        for label in ("cat", "dog"):
            (tmp_path / folder / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / folder / label / f"{i}.png")
    spec = DatasetSpec(
        source="image_directory",
        path=str(tmp_path / "train"),
        test_path=str(tmp_path / "test"),
        image_size=(8, 8),
    )
    data = load_dataset(spec)
    assert len(data.x_train) + len(data.x_val) == 10
    assert data.x_test is not None and data.y_test is not None
    assert data.x_test.shape == (4, 8, 8, 3) and sorted(data.y_test.tolist()) == [0, 0, 1, 1]
    assert data.x_test.min() >= 0.0 and data.x_test.max() <= 1.0


def test_labels_one_hot_converts_every_split(tmp_path: Path) -> None:
    plain = load_dataset(DatasetSpec(source="digits"))
    data = load_dataset(DatasetSpec(source="digits", labels="one_hot"))
    assert data.label_mode == "onehot"
    assert data.loss_name == "categorical_crossentropy"
    assert data.y_train.shape == (len(plain.y_train), 10) and data.y_train.dtype == np.float32
    assert data.y_test is not None and data.y_test.shape == (360, 10)
    assert np.array_equal(data.y_val.argmax(axis=1), plain.y_val)
    assert np.array_equal(data.x_train, plain.x_train)  # only the labels change
    # labels: int turns one-hot labels back into integers.
    x = np.zeros((12, 3), dtype=np.float32)
    np.savez(tmp_path / "oh.npz", x=x, y=np.eye(3)[np.arange(12) % 3])
    ints = load_dataset(DatasetSpec(source="npz", path=str(tmp_path / "oh.npz"), labels="int"))
    assert ints.label_mode == "int" and ints.y_train.ndim == 1


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def mnist_server(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server serving a small mnist.npz (Keras' format) on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        served / "mnist.npz",
        x_train=rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8),
        y_train=(np.arange(40) % 10).astype(np.uint8),
        x_test=rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8),
        y_test=np.arange(10).astype(np.uint8),
    )
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_keras_dataset_downloads_into_the_cache(
    mnist_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "keras-home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("KTC_KERAS_DATASETS_ORIGIN", mnist_server)
    assert keras_dataset_missing("mnist") == [home / "datasets" / "mnist.npz"]
    data = load_dataset(DatasetSpec(source="mnist"))
    assert (home / "datasets" / "mnist.npz").is_file()
    assert keras_dataset_missing("mnist") == []
    assert data.input_shape == (28, 28) and data.num_classes == 10
    assert len(data.x_train) + len(data.x_val) == 40
    assert data.x_test is not None and len(data.x_test) == 10
    # Once cached, no server is needed.
    clear_dataset_cache()
    monkeypatch.setenv("KTC_KERAS_DATASETS_ORIGIN", "http://127.0.0.1:1/")
    assert load_dataset(DatasetSpec(source="mnist")).x_test is not None
