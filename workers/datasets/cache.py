"""Where Keras caches downloads (``keras.utils.get_file``), computed without importing Keras.

Mirrors ``keras/src/backend/config.py`` and ``keras/src/utils/file_utils.py``
(keras 3.15): the base is ``$KERAS_HOME`` or ``~/.keras`` (``/tmp/.keras``
when the home directory is not writable), and files land in
``<base>/<cache_subdir>``. We check the cache *before* calling Keras because
on an offline worker ``get_file`` would otherwise try a download and fail with
an opaque URL error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def keras_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory ``keras.utils.get_file`` uses as its cache base."""
    env = os.environ if environ is None else environ
    if "KERAS_HOME" in env:
        base = env["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    base = os.path.expanduser(base)
    if not os.access(base, os.W_OK) and os.path.isdir(base):
        base = os.path.join("/tmp", ".keras")
    return Path(base)
