"""Entry point of the ``ktc`` console script.

Library code never prints; this module and the verb modules render. A
:class:`~orchestrator.errors.KtClusterError` is shown as its message only, never
as a traceback. One rule sets the exit code, for every verb:

- 2: bad input, an :class:`~orchestrator.errors.InputError` (a malformed file
  or argument, a path that is not a search directory, a request the chief
  refused as invalid: ``ktc scale DIR --node nosuch=1``), or an argument
  argparse refuses;
- 1: any other KtClusterError, a runtime failure (no live chief, a refused
  token, a fleet that cannot start);
- 130: interrupted.

``ktc submit`` and ``ktc resume`` end their process with
:func:`end_process` once the session is closed: the exit handlers run (Ray's
among them), output is flushed, and the interpreter's finalisation is
skipped. That finalisation only tears down modules; with TensorFlow loaded
it took 1.5 to 2.8 s after the last line was printed on 2 cores, 5.9 s on
the same cores under load (BENCHMARKS.md, "the user's clock"). ``main(argv)`` called with arguments (the
tests) never ends the process.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

# Before anything imports grpc. Its fork handlers exist for children that use
# gRPC after fork(); ours never do (Ray and the GP helper exec at once), and
# with gRPC threads busy they only print "skipping fork() handlers" to the
# user's terminal for every process Ray starts.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from orchestrator.cli.quiet_terminal import quiet_terminal  # noqa: E402
from orchestrator.errors import InputError, KtClusterError  # noqa: E402

# Each module defines register(subparsers) and sets `func` on its parser.
VERB_MODULES: tuple[str, ...] = (
    "orchestrator.cli.validate",
    "orchestrator.cli.submit",
    "orchestrator.cli.resume",
    "orchestrator.cli.status",
    "orchestrator.cli.results",
    "orchestrator.cli.report",
    "orchestrator.cli.space",
    "orchestrator.cli.evaluate",
    "orchestrator.cli.export",
    "orchestrator.cli.scale",
    "orchestrator.cli.cancel",
    "orchestrator.cli.cluster",
    "orchestrator.cli.use",
    "orchestrator.cli.list_cmd",
    "orchestrator.cli.logs",
)

EXIT_OK = 0
EXIT_RUNTIME_ERROR = 1
EXIT_BAD_INPUT = 2


def exit_code(exc: KtClusterError) -> int:
    """2 for bad input, 1 for a runtime failure (the rule in the module docstring)."""
    return EXIT_BAD_INPUT if isinstance(exc, InputError) else EXIT_RUNTIME_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ktc",
        description="ktcluster: run Keras Tuner searches across a Ray cluster of GPU machines.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # verb not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, own_process: bool | None = None) -> int:
    """Run one verb; returns its exit code.

    ``own_process`` (default: ``argv is None``, i.e. the ``ktc`` command
    itself) lets a verb that asks for it (``end_process_fast``) end the
    process with :func:`end_process` instead of returning.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # TensorFlow's, absl's and Ray's start-up lines stay off the terminal unless -v.
    quiet_terminal(args.verbose)
    code = _run(args, list(sys.argv[1:] if argv is None else argv))
    if (argv is None if own_process is None else own_process) and getattr(
        args, "end_process_fast", False
    ):
        end_process(code)
    return code


def _run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run the parsed verb (``argv``: its command line, default ``sys.argv[1:]``)."""
    try:
        # A search id instead of a local DIR, with a cluster known (`ktc use`):
        # the verb runs on the cluster's head (orchestrator/remote_verbs.py).
        from orchestrator.remote_verbs import REMOTE_VERBS, remote_search_id, run_remote

        search_id = remote_search_id(args) if args.verb in REMOTE_VERBS else None
        if search_id is not None:
            return run_remote(args, sys.argv[1:] if argv is None else argv, search_id)
        return int(args.func(args) or 0)
    except KtClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and friends: stop quietly, like other CLIs.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def end_process(code: int) -> NoReturn:
    """End this process with ``code``: what ``sys.exit`` does, without the
    interpreter's finalisation (module teardown; see the module docstring).

    Everything a normal exit runs still runs, in the same order: the
    interpreter would join non-daemon threads first (if one still runs, this
    falls back to ``sys.exit``, which joins it), then the ``atexit`` handlers
    (Ray's shutdown, logging's flush and close). Files the verb left open
    would not be flushed by the skipped teardown: the session closes its own
    (ledger, logs) before it returns.
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if any(t.is_alive() for t in others):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or stream: nothing left to write.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
