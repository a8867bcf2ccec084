"""A render process that stays warm: ``python -m orchestrator.report --serve DIR``.

The refresher of a running search (:mod:`orchestrator.report.refresh`) starts
one of these when the search starts and asks it for every render, the final
one included. Importing matplotlib, TensorBoard's protobufs and the report's
modules costs 0.6 s of a render's 1.4 to 1.9 s on 2 cores (BENCHMARKS.md,
section 13); paid once here, it is off the path between the search's last
result and ``ktc submit``'s exit.

The protocol, one line each way: the refresher writes ``render`` to stdin; the
server renders DIR and answers one JSON line on stdout, ``{"code": C,
"error": TEXT}`` (C as ``python -m orchestrator.report DIR`` exits: 0 written,
2 bad input, 1 any other failure; TEXT the error's message, with the
traceback's tail for an unexpected one). It exits at the end of stdin. Its
own logging goes to stderr, whose tail the refresher logs if it dies.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from orchestrator.errors import InputError, KtClusterError

REQUEST = "render"
_TRACEBACK_CHARS = 2000


def render_once(
    search_dir: Path | str, *, html: bool = True, tensorboard: bool = True, processes: int = 1
) -> None:
    """Write the report and/or the TensorBoard summaries of ``search_dir`` (raises;
    ``processes=2``: the pictures drawn two at a time, plots.render_pictures)."""
    from orchestrator.report.build import build_report
    from orchestrator.report.data import read_report_data
    from orchestrator.report.tensorboard import write_tensorboard

    data = read_report_data(search_dir)
    if html:
        build_report(search_dir, data=data, processes=processes)
    if tensorboard:
        write_tensorboard(data)


def answer_for(search_dir: Path | str) -> dict[str, object]:
    """One render, as the answer line's fields (never raises). This process has
    one thread, so its pictures may be drawn in a forked copy too."""
    try:
        render_once(search_dir, processes=2)
    except KtClusterError as exc:
        return {"code": 2 if isinstance(exc, InputError) else 1, "error": f"error: {exc}"}
    except Exception as exc:  # noqa: BLE001 - the server outlives a bad render
        tail = traceback.format_exc()[-_TRACEBACK_CHARS:]
        return {"code": 1, "error": f"{type(exc).__name__}: {exc}\n{tail}"}
    return {"code": 0, "error": ""}


def warm_up() -> None:
    """Import what a render needs (matplotlib with Agg, TensorBoard's protobufs),
    so the first render pays no import."""
    import orchestrator.report.build  # noqa: F401
    import orchestrator.report.tensorboard  # noqa: F401


def serve(search_dir: Path | str, requests: Iterable[str], answers: TextIO) -> int:
    """Answer each ``render`` line with one render of ``search_dir``; 0 at the end."""
    warm_up()
    for line in requests:
        request = line.strip()
        if not request:
            continue
        if request != REQUEST:
            reply: dict[str, object] = {
                "code": 2,
                "error": f"error: unknown request {request[:80]!r}; expected {REQUEST!r}",
            }
        else:
            reply = answer_for(search_dir)
        answers.write(json.dumps(reply) + "\n")
        answers.flush()
    return 0
