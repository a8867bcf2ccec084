"""Keep TensorFlow's and Ray's start-up noise off the user's terminal (unless ``-v``).

Importing TensorFlow prints, from C++ and straight to file descriptor 2,
lines no Python setting reaches: absl's "All log messages before
absl::InitializeLog() is called are written to STDERR", oneDNN's notice and
the CUDA probe ("Could not find cuda drivers", "failed call to cuInit ...
(303)" on a CPU machine). They are written before TensorFlow reads
``TF_CPP_MIN_LOG_LEVEL``, so the variable alone does not help (measured with
TF 2.21: level 3 still printed the first three).

So, for every verb (``validate`` of a user module imports TensorFlow too):

- ``TF_CPP_MIN_LOG_LEVEL=3`` and ``GRPC_VERBOSITY=ERROR`` before anything
  imports TensorFlow or gRPC (the CLI never trains, so TensorFlow's own error
  lines carry nothing the user needs; a worker's go to its log file);
- the first ``import tensorflow`` (whoever triggers it: keras, keras_tuner,
  the user's module) runs with fd 2 sent to a temporary file; afterwards the
  lines that are not TensorFlow's absl-format log lines are written to the
  real stderr, so a genuine warning printed during the import still shows;
- Python loggers that speak at INFO by default (``ray``, ``absl``,
  ``tensorflow``) are held at WARNING.

Ray's own start-up line is held back by ``ray.init(logging_level=...)``
(orchestrator/fleet/embedded_ray.py), and workers' output never reaches the
terminal: ``log_to_driver=False``, and each worker logs to ``DIR/logs/``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

QUIET_ENV: dict[str, str] = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
}
CHATTY_LOGGERS: tuple[str, ...] = ("ray", "absl", "tensorflow", "h5py")

# absl's C++ log line before absl is initialised (the clock reads zero):
# "I0000 00:00:1796053859.491670    9998 port.cc:153] ...", and after it:
# "E1130 15:51:02.129418    9998 cuda_platform.cc:52] ...".
_ABSL_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] ")
_NOISE_LINES: tuple[re.Pattern[str], ...] = (
    _ABSL_LINE,
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
)


def is_noise(line: str) -> bool:
    """True for a line TensorFlow's native start-up writes to stderr."""
    return any(pattern.match(line) for pattern in _NOISE_LINES)


def filter_noise(text: str) -> str:
    """``text`` without its noise lines (:func:`is_noise`)."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_noise(line))


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Run the body with fd 2 captured; then write what was not noise to stderr."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = filter_noise(captured.read().decode("utf-8", errors="replace"))
            if kept:
                os.write(2, kept.encode("utf-8"))


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run under :func:`native_stderr_filtered`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Put the real loader back first: nothing after the import should see ours.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with native_stderr_filtered():
            self.loader.exec_module(module)


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of the first ``import tensorflow``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once is enough; the next finders do the finding
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_terminal(verbose: int, environ: Any = None) -> None:
    """Apply the module docstring's settings unless ``verbose`` (``-v``)."""
    if verbose:
        return
    env = os.environ if environ is None else environ
    # Set, not defaulted: "unless -v" is the one switch (an inherited
    # TF_CPP_MIN_LOG_LEVEL=0 would otherwise bring the cuInit line back).
    env.update(QUIET_ENV)
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    if "tensorflow" not in sys.modules and not any(
        isinstance(finder, QuietTensorFlowImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, QuietTensorFlowImport())
