"""Import modules in a background thread while the main thread starts Ray.

``ktc submit`` needs Keras Tuner (and with it Keras and TensorFlow) for the
chief's oracle: 2.5 s of imports on a 2-core machine. It also starts the
embedded Ray, 2 to 4 s spent mostly waiting for Ray's processes to start and
register. One after the other they were 6 to 7 s of every launch; the imports
now run in a thread while the main thread starts Ray (which must stay in the
main thread: ``ray.init`` installs signal handlers only there).

The thread starts only once ``after`` is set: the embedded Ray's start may
change ``os.environ`` (``CUDA_VISIBLE_DEVICES``, when it has GPUs), and
TensorFlow reads the environment while it is imported; ``connect_ray`` sets
the event when the environment is settled.

An import cannot be cancelled, so the thread is a daemon: a Ctrl-C while it
runs ends the process without waiting for TensorFlow.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence


class BackgroundImports:
    """Imports ``modules``, in order, in one daemon thread; :meth:`wait` joins
    it and raises the first import error in the caller's thread."""

    def __init__(self, modules: Sequence[str], *, after: threading.Event | None = None) -> None:
        self.modules = tuple(modules)
        self._after = after
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="ktc-background-imports", daemon=True
        )

    def start(self) -> BackgroundImports:
        """Start the thread (it first waits for ``after``); returns self."""
        self._thread.start()
        return self

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until every module is imported; re-raise an import's error.

        Raises TimeoutError when the imports are still running after ``timeout_s``.
        """
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(
                f"background imports of {', '.join(self.modules)} still running "
                f"after {timeout_s:g} s"
            )
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        if self._after is not None:
            self._after.wait()
        try:
            for name in self.modules:
                importlib.import_module(name)
        except BaseException as exc:  # re-raised by wait(), in the caller's thread
            self._error = exc
