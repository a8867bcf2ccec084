"""Bayesian optimization's GP step, in a helper process.

Keras Tuner's ``BayesianOptimizationOracle.populate_space`` fits a Gaussian
process (20 optimizer restarts) and then runs 50 L-BFGS-B restarts over the
acquisition function: hundreds of milliseconds to seconds of pure-Python and
NumPy work that holds the chief's GIL in long stretches. The broker never
waits on the oracle *lock* for Report or EndTrial, but every gRPC thread
still needs the GIL, so during a fit their p99 latency rose to 130 ms
(BENCHMARKS.md, section 3).

:class:`GpProcess` moves that step to a child process
(``python -m orchestrator.chief.gp_process``). The child imports NumPy, SciPy and
scikit-learn only (no TensorFlow), talks length-prefixed pickle frames over
its stdin and stdout, and exits when its stdin closes, so it cannot outlive
the chief. The parent keeps everything that carries state (the trials, the
random generator that draws the restart seeds, the hallucinated scores of
running trials), so the proposal is the one Keras Tuner would make inline:
:func:`propose` is the same code on both sides, and the parent falls back to
it inline when the child cannot be used.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")
_MAX_FRAME = 256 * 1024 * 1024
NUM_RESTARTS = 50  # Keras Tuner 1.4.8, BayesianOptimizationOracle.populate_space


class GpProcessError(RuntimeError):
    """The helper process could not answer; the caller computes inline."""


@dataclass(frozen=True)
class GpRequest:
    """One GP step: fit ``gpr`` on (x, y), then minimise the UCB from each seed."""

    gpr: Any  # an unfitted or previously fitted sklearn GaussianProcessRegressor
    x: Any  # np.ndarray (n, d)
    y: Any  # np.ndarray (n,)
    x_seeds: Any  # np.ndarray (NUM_RESTARTS, d), drawn by the parent's generator
    bounds: Any  # np.ndarray (d, 2)
    beta: float


@dataclass(frozen=True)
class GpAnswer:
    optimal_x: Any  # np.ndarray (d,)
    gpr: Any  # the fitted regressor, for the parent's hallucinated scores


def propose(request: GpRequest) -> GpAnswer:
    """Keras Tuner's GP step (fit, then the best of the L-BFGS-B restarts)."""
    import numpy as np
    import scipy.optimize

    gpr = request.gpr
    gpr.fit(request.x, request.y)

    def upper_confidence_bound(x: Any) -> Any:
        mu, sigma = gpr.predict(x.reshape(1, -1), return_std=True)
        return mu - request.beta * sigma

    optimal_val = float("inf")
    optimal_x = None
    for x_try in request.x_seeds:
        result = scipy.optimize.minimize(
            upper_confidence_bound, x0=x_try, bounds=request.bounds, method="L-BFGS-B"
        )
        value = float(np.asarray(result.fun).reshape(-1)[0])  # a scalar, or KT's fun[0]
        if value < optimal_val:
            optimal_val = value
            optimal_x = result.x
    return GpAnswer(optimal_x=optimal_x, gpr=gpr)


# ------------------------------------------------------------------ framing


def _write_frame(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("stream closed")
    (size,) = _HEADER.unpack(header)
    if size > _MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the {_MAX_FRAME}-byte cap")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("stream closed mid-frame")
    return pickle.loads(data)


# ------------------------------------------------------------------- parent


class GpProcess:
    """The parent's handle on one helper process. Thread-safe; one call at a time.

    The process starts on :meth:`start` (cheap, non-blocking: it imports in
    the background) or on the first :meth:`propose`. A call that fails
    (the child died, or raised) kills the child and raises
    :class:`GpProcessError`; the next call starts a new one.
    """

    def __init__(self, *, timeout_s: float = 600.0) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        self.calls = 0  # answered by the child (tests read it)
        _LIVE.add(self)

    def start(self) -> None:
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> subprocess.Popen[bytes]:
        if self._closed:
            raise GpProcessError("the GP process was closed")
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = ""  # the chief's helpers never touch a GPU
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.chief.gp_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # its warnings go where the chief's go
            env=env,
            close_fds=True,
            # Ctrl-C on `ktc submit` goes to the terminal's process group; the
            # chief handles it, and the child ends when the chief closes its stdin.
            start_new_session=True,
        )
        return self._proc

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def propose(self, request: GpRequest) -> GpAnswer:
        """Run :func:`propose` in the child; raises :class:`GpProcessError`."""
        with self._lock:
            proc = self._start_locked()
            assert proc.stdin is not None and proc.stdout is not None
            timer = threading.Timer(self.timeout_s, proc.kill)
            timer.daemon = True
            timer.start()
            try:
                _write_frame(proc.stdin, request)
                kind, payload = _read_frame(proc.stdout)
            except Exception as exc:  # a dead child, a broken pipe, an unloadable frame
                self._kill_locked()
                raise GpProcessError(
                    f"GP helper process (pid {proc.pid}) stopped answering: {exc}"
                ) from exc
            finally:
                timer.cancel()
            if kind != "ok":
                # The child is fine; the request was not. Inline will raise the same.
                raise GpProcessError(f"GP helper process raised: {payload}")
            self.calls += 1
            return payload  # type: ignore[no-any-return]

    def _kill_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        """Close the child's stdin (it exits), then reap it; kill it if it lingers."""
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


_LIVE: weakref.WeakSet[GpProcess] = weakref.WeakSet()


@atexit.register
def close_all() -> None:
    """Close every helper this process started (at exit, and between tests).

    A helper also ends on its own when this process dies (its stdin closes);
    closing here reaps it, so a normal exit leaves no zombie or straggler.
    """
    for helper in list(_LIVE):
        helper.close()


# -------------------------------------------------------------------- child


def main() -> int:
    """The child's loop: a request frame in, ("ok", answer) or ("error", text) out."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the chief decides when we stop
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Anything else that prints (a library warning) must not corrupt the frames.
    sys.stdout = sys.stderr
    import warnings

    import sklearn.exceptions
    import sklearn.gaussian_process  # noqa: F401  (import before the first request)

    # A length scale at its bound is routine on small searches; KT's users
    # cannot act on it, and it would print through the live progress display.
    warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)

    while True:
        try:
            request = _read_frame(stdin)
        except EOFError:
            return 0
        try:
            answer: tuple[str, Any] = ("ok", propose(request))
        except Exception as exc:  # reported to the parent, which computes inline
            answer = ("error", f"{type(exc).__name__}: {exc}")
        try:
            _write_frame(stdout, answer)
        except OSError:  # the chief is gone (its end of the pipe closed)
            return 0


if __name__ == "__main__":
    # Run the module's own copy, not __main__'s, so the answers pickle as
    # orchestrator.chief.gp_process.GpAnswer, which the parent can load.
    from orchestrator.chief.gp_process import main as module_main

    sys.exit(module_main())
