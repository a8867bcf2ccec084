"""``python -m orchestrator.report DIR``: write a search's report and TensorBoard
summaries, in a process of its own.

This is what the refresher of a running search starts (matplotlib and the
protobuf work stay out of the chief's process), and what the benchmark times.
Users run ``ktc report DIR``. Exit status: 0 written, 2 bad input (not a
search directory), 1 any other failure; the reason goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from orchestrator.errors import InputError, KtClusterError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.report", description=__doc__)
    parser.add_argument("search_dir", metavar="DIR")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-tensorboard", action="store_true", help="the HTML report only")
    which.add_argument("--only-tensorboard", action="store_true", help="the summaries only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from orchestrator.report.build import build_report
    from orchestrator.report.data import read_report_data
    from orchestrator.report.tensorboard import write_tensorboard

    try:
        data = read_report_data(args.search_dir)
        if not args.only_tensorboard:
            build_report(args.search_dir, data=data)
        if not args.no_tensorboard:
            write_tensorboard(data)
    except KtClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
