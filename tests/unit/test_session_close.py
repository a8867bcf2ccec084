"""SearchSession.close: the report's final render runs while Ray shuts down
(both are waited for), after the chief closed its ledger."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.fleet.session import SearchSession, SessionOptions


class _Report:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.rendering = threading.Event()
        self.finish = threading.Event()

    def close(self) -> None:
        self.events.append("render started")
        self.rendering.set()
        assert self.finish.wait(10), "the test never let the render finish"
        self.events.append("render finished")


def _session(events: list[str], *, ray_started: bool) -> SearchSession:
    chief = SimpleNamespace(search=None, cluster=None, close=lambda: events.append("chief closed"))
    session = SearchSession(chief, SessionOptions(), ray_started=ray_started)  # type: ignore[arg-type]
    return session


def test_final_render_overlaps_ray_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    events: list[str] = []
    session = _session(events, ray_started=True)
    report = _Report(events)
    session.report = report  # type: ignore[assignment]

    def shutdown(*args: Any, **kwargs: Any) -> None:
        # Ray's shutdown takes its time; the render is already under way.
        events.append("ray shutdown started")
        assert report.rendering.wait(10), "the final render waits for Ray's shutdown"
        events.append("ray shutdown finished")
        report.finish.set()

    monkeypatch.setattr(ray, "shutdown", shutdown)
    session.close()

    assert events[0] == "chief closed"  # the ledger is complete before the render
    assert set(events[1:]) == {
        "render started",
        "ray shutdown started",
        "ray shutdown finished",
        "render finished",
    }
    assert events[-1] == "render finished"  # close waited for the render


def test_a_session_that_did_not_start_ray_does_not_stop_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    events: list[str] = []
    session = _session(events, ray_started=False)
    monkeypatch.setattr(ray, "shutdown", lambda: events.append("ray shutdown"))
    session.close()
    assert events == ["chief closed"]
