"""The Keras built-in datasets (mnist, fashion_mnist, cifar10): cache, download, load.

A built-in is read from the Keras cache (``<keras home>/datasets``, the files
``keras.datasets.<name>.load_data`` keeps). When a file is missing, it is
downloaded with ``keras.utils.get_file`` into that same cache, so a node with
internet fetches it once and every later load (Keras' own included) finds it.
A node that cannot download gets a :class:`DatasetError` naming the dataset,
the cache path, and the fixes (copy the file there, or use digits/npz).

``KTC_KERAS_DATASETS_ORIGIN`` replaces Keras' download base URL (a mirror, or
a local server in tests): each file is fetched as ``<origin><remote name>``
and, since a mirror's bytes are its own, without Keras' hash check. The
environment is passed in (``environ``), never read inside a loop.

Each loader returns the source's own test split too: the search tunes on a
validation split of the training set, and the test set stays a clean final
check that training and validation never see.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.datasets.cache import keras_cache_dir
from workers.datasets.dataset import DatasetError, RawData

log = logging.getLogger(__name__)

ORIGIN_ENV = "KTC_KERAS_DATASETS_ORIGIN"
# A stalled connection must end as an error, not hang the worker's first trial
# (urllib's urlretrieve, which get_file uses, has no timeout of its own).
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0

_GOOGLE = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@dataclass(frozen=True)
class CacheFile:
    """One file of a built-in, as ``keras.datasets`` fetches it (keras 3.15)."""

    cache_name: str  # under <keras home>/datasets
    remote_name: str  # the file name at the origin
    origin: str  # Keras' own URL
    file_hash: str | None = None  # Keras' sha256, checked only for Keras' own origin
    extract: bool = False


_FASHION = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)

# keras/src/datasets/*.py: cifar10 is fetched with extract=True and an fname
# without a dot, so get_file keeps the archive as "<fname>_archive".
KERAS_FILES: dict[str, tuple[CacheFile, ...]] = {
    "mnist": (
        CacheFile(
            "mnist.npz",
            "mnist.npz",
            f"{_GOOGLE}mnist.npz",
            "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
        ),
    ),
    "fashion_mnist": tuple(
        CacheFile(os.path.join("fashion-mnist", name), name, f"{_GOOGLE}{name}")
        for name in _FASHION
    ),
    "cifar10": (
        CacheFile(
            "cifar-10-batches-py-target_archive",
            "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            extract=True,
        ),
    ),
}
KERAS_DATASET_FILES: dict[str, tuple[str, ...]] = {
    source: tuple(f.cache_name for f in files) for source, files in KERAS_FILES.items()
}


def keras_dataset_missing(source: str, environ: Mapping[str, str] | None = None) -> list[Path]:
    """The cache files of a Keras built-in dataset that are not on this machine."""
    base = keras_cache_dir(environ) / "datasets"
    return [base / f.cache_name for f in KERAS_FILES[source] if not (base / f.cache_name).is_file()]


def download_origin(environ: Mapping[str, str] | None = None) -> str | None:
    """The replacement download base URL (``KTC_KERAS_DATASETS_ORIGIN``), or None."""
    env = os.environ if environ is None else environ
    origin = env.get(ORIGIN_ENV, "").strip()
    if not origin:
        return None
    return origin if origin.endswith("/") else origin + "/"


def fetch_keras_dataset(source: str, environ: Mapping[str, str] | None = None) -> None:
    """Download the missing cache files of ``source``; DatasetError when it cannot."""
    missing = keras_dataset_missing(source, environ)
    if not missing:
        return
    import keras

    origin_base = download_origin(environ)
    home = keras_cache_dir(environ)
    try:
        # get_file falls back to /tmp/.keras when its base does not exist yet;
        # create it so the file lands where Keras' own loaders look.
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"dataset {source!r}: cannot create the Keras cache {home} ({exc.strerror or exc}); "
            "expected a writable folder. Set KERAS_HOME to one, or use dataset: digits or npz."
        ) from exc
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        for file in KERAS_FILES[source]:
            target = home / "datasets" / file.cache_name
            if target.is_file():
                continue
            url = file.origin if origin_base is None else origin_base + file.remote_name
            subdir = os.path.join("datasets", os.path.dirname(file.cache_name))
            fname = os.path.basename(file.cache_name)
            if file.extract:
                fname = fname.removesuffix("_archive")
            log.info("dataset %r: downloading %s into %s", source, url, target)
            try:
                # get_file draws a progress bar on stdout: keep it off the worker's output.
                with contextlib.redirect_stdout(io.StringIO()):
                    keras.utils.get_file(
                        fname=fname,
                        origin=url,
                        cache_dir=str(home),
                        cache_subdir=subdir.rstrip(os.sep),
                        file_hash=file.file_hash if origin_base is None else None,
                        extract=file.extract,
                    )
            except Exception as exc:  # get_file raises bare Exception on URL errors
                raise DatasetError(_offline_message(source, missing, url, exc, environ)) from exc
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _offline_message(
    source: str,
    missing: list[Path],
    url: str,
    exc: BaseException,
    environ: Mapping[str, str] | None,
) -> str:
    cache = keras_cache_dir(environ) / "datasets"
    origins = ", ".join(f.origin for f in KERAS_FILES[source])
    return (
        f"dataset {source!r}: not in the Keras cache and the download failed, so this node "
        f"cannot reach the internet; missing {', '.join(str(p) for p in missing)}; download of "
        f"{url} failed: {type(exc).__name__}: {str(exc)[:300]}. Copy the file(s) there from a "
        f"machine with internet ({origins}; or run keras.datasets.{source}.load_data() there "
        f"and copy {cache}), set {ORIGIN_ENV} to a mirror, or use dataset: digits or npz."
    )


def load_keras_dataset(source: str, environ: Mapping[str, str] | None = None) -> RawData:
    """mnist, fashion_mnist or cifar10, downloaded first when missing, with its test split."""
    fetch_keras_dataset(source, environ)
    if source == "mnist":
        # Read directly: Keras' loader re-checks Google's hash and would try to
        # download again over a mirror's file.
        path = keras_cache_dir(environ) / "datasets" / "mnist.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (KeyError, OSError, ValueError) as exc:
            raise DatasetError(
                f"dataset 'mnist': cannot read {path} ({type(exc).__name__}: {exc}); expected "
                "an .npz with x_train, y_train, x_test and y_test. Delete it to download it again."
            ) from exc
        return RawData(
            arrays["x_train"], arrays["y_train"], x_test=arrays["x_test"], y_test=arrays["y_test"]
        )
    import keras

    module = getattr(keras.datasets, source)
    (x_train, y_train), (x_test, y_test) = module.load_data()
    return RawData(
        np.asarray(x_train),
        np.asarray(y_train),
        x_test=np.asarray(x_test),
        y_test=np.asarray(y_test),
    )
