"""``python -m orchestrator.report DIR``: write a search's report and TensorBoard
summaries, in a process of its own.

This is what the benchmark times; users run ``ktc report DIR``. Exit status:
0 written, 2 bad input (not a search directory), 1 any other failure; the
reason goes to stderr.

``python -m orchestrator.report --serve DIR``: the warm render process that a
running search's refresher asks for each render (:mod:`.server`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from orchestrator.errors import InputError, KtClusterError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.report", description=__doc__)
    parser.add_argument("search_dir", metavar="DIR")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-tensorboard", action="store_true", help="the HTML report only")
    which.add_argument("--only-tensorboard", action="store_true", help="the summaries only")
    which.add_argument(
        "--serve", action="store_true", help="answer `render` lines on stdin (server.py)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from orchestrator.report import server

    if args.serve:
        server.serve(args.search_dir, sys.stdin, sys.stdout)
        # Nothing left to write: skip tearing down matplotlib's modules (the
        # refresher waits for this exit after the search's final render).
        sys.stderr.flush()
        os._exit(0)
    try:
        server.render_once(
            args.search_dir, html=not args.only_tensorboard, tensorboard=not args.no_tensorboard
        )
    except KtClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
