"""``ktc scale`` / ``ktc cancel``: argument errors, no live chief, and the RPC plumbing
against an in-process chief whose control handler is a test fake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.cli.main import main
from orchestrator.protocol.auth import TOKEN_FILE_NAME
from tests.helpers import float_space, make_search

REPO = Path(__file__).resolve().parents[2]


class FakeControl:
    """Records what the control RPCs received."""

    def __init__(self) -> None:
        self.scales: list[Any] = []
        self.cancels: list[bool] = []

    def status_document(self) -> dict[str, Any]:
        return {"state": "running"}

    def scale(self, request: Any) -> str:
        self.scales.append(request)
        return f"fleet: {request.total_workers} worker(s) requested"

    def cancel(self, now: bool) -> str:
        self.cancels.append(now)
        return f"search cancelled (now={now})"


@pytest.fixture
def stopped_search(tmp_path: Path) -> Path:
    """A search directory whose chief never served (no chief.json)."""
    directory = tmp_path / "stopped"
    chief = Chief.create(make_search(), directory, initial_space=float_space())
    chief.close(grace_s=0.1)
    return directory


@pytest.fixture
def live(start_chief: Any, search_dir: Path) -> tuple[Any, FakeControl]:
    chief, _ = start_chief(make_search(), initial_space=float_space(), long_poll_s=0.2)
    fake = FakeControl()
    chief.control.handler = fake
    return chief, fake


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --workers N, --node NAME=N .* got none"),
        (["--workers", "2", "--node", "a=1"], "got --workers and --node"),
        (["--workers", "2", "--apply", "c.yaml"], "got --workers and --apply"),
        (["--workers", "-1"], "--workers: expected a number of workers >= 0, got -1"),
        (["--workers", "two"], "--workers: expected a whole number of workers >= 0, got 'two'"),
        (["--node", "gpu-a"], "--node 'gpu-a': expected NAME=N"),
        (["--node", "=3"], "--node '=3': expected NAME=N"),
        (["--node", "gpu-a=x"], "--node gpu-a: expected a whole number of workers >= 0, got 'x'"),
        (["--node", "gpu-a=-2"], "--node gpu-a: expected a number of workers >= 0, got -2"),
        (["--node", "a=1", "--node", "a=2"], "node 'a' is given twice"),
        (
            ["--apply", "/nonexistent/cluster.yaml"],
            "--apply /nonexistent/cluster.yaml: does not exist",
        ),
    ],
)
def test_scale_argument_errors(
    stopped_search: Path, capsys: Any, args: list[str], message: str
) -> None:
    code, out, err = _run(capsys, "scale", str(stopped_search), *args)
    assert code == 2
    assert out == ""
    import re

    assert re.search(message, err), err


def test_scale_apply_invalid_cluster_file_is_refused_before_sending(
    live: Any, search_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    _, fake = live
    bad = tmp_path / "bad-cluster.yaml"
    bad.write_text("kind: cluster\nname: x\nnodes: 5\n")
    code, _, err = _run(capsys, "scale", str(search_dir), "--apply", str(bad))
    assert code == 2
    assert "bad-cluster.yaml" in err and "nodes" in err
    assert fake.scales == []


def test_scale_without_live_chief(stopped_search: Path, capsys: Any) -> None:
    code, _, err = _run(capsys, "scale", str(stopped_search), "--workers", "2")
    assert code == 1
    assert (
        f"no live chief for {stopped_search}; scaling needs a running search "
        f"(resume it with `ktc resume {stopped_search}`)"
    ) in err


def test_cancel_without_live_chief(stopped_search: Path, capsys: Any) -> None:
    code, _, err = _run(capsys, "cancel", str(stopped_search))
    assert code == 1
    assert f"no live chief for {stopped_search}; nothing to cancel" in err


def test_scale_and_cancel_not_a_search_dir(tmp_path: Path, capsys: Any) -> None:
    for argv in (["scale", str(tmp_path), "--workers", "1"], ["cancel", str(tmp_path)]):
        code, _, err = _run(capsys, *argv)
        assert code == 2  # a wrong path is bad input
        assert "not a search directory" in err


def test_scale_workers_reaches_the_handler(live: Any, search_dir: Path, capsys: Any) -> None:
    _, fake = live
    code, out, _ = _run(capsys, "scale", str(search_dir), "--workers", "3", "--now")
    assert code == 0
    assert "fleet: 3 worker(s) requested" in out
    (request,) = fake.scales
    assert request.total_workers == 3 and request.now is True
    assert dict(request.node_workers) == {} and request.cluster_yaml == ""


def test_scale_nodes_reaches_the_handler(live: Any, search_dir: Path, capsys: Any) -> None:
    _, fake = live
    code, _, _ = _run(capsys, "scale", str(search_dir), "--node", "gpu-a=2", "--node", "gpu-b=0")
    assert code == 0
    (request,) = fake.scales
    assert request.total_workers == -1  # "not given" on the wire
    assert dict(request.node_workers) == {"gpu-a": 2, "gpu-b": 0}
    assert request.now is False  # drain by default


def test_scale_apply_sends_text_and_path(live: Any, search_dir: Path, capsys: Any) -> None:
    _, fake = live
    cluster_file = REPO / "configs" / "local.yaml"
    code, _, _ = _run(capsys, "scale", str(search_dir), "--apply", str(cluster_file))
    assert code == 0
    (request,) = fake.scales
    assert request.cluster_yaml == cluster_file.read_text()
    assert request.cluster_yaml_path == str(cluster_file.resolve())


def test_cancel_now_and_drain(live: Any, search_dir: Path, capsys: Any) -> None:
    _, fake = live
    code, out, _ = _run(capsys, "cancel", str(search_dir))
    assert code == 0
    assert "search cancelled (now=True)" in out
    assert f"every result is kept; continue with `ktc resume {search_dir}`" in out
    code, out, _ = _run(capsys, "cancel", str(search_dir), "--drain")
    assert code == 0
    assert fake.cancels == [True, False]


def test_wrong_token_is_refused(live: Any, search_dir: Path, capsys: Any) -> None:
    _, fake = live
    (search_dir / TOKEN_FILE_NAME).write_text("not-the-token\n")
    for argv in (["scale", str(search_dir), "--workers", "1"], ["cancel", str(search_dir)]):
        code, _, err = _run(capsys, *argv)
        assert code == 1
        assert "refused the token" in err
    assert fake.scales == [] and fake.cancels == []


def test_chief_without_handler(start_chief: Any, search_dir: Path, capsys: Any) -> None:
    start_chief(make_search(), initial_space=float_space(), long_poll_s=0.2)
    code, _, err = _run(capsys, "cancel", str(search_dir))
    assert code == 1
    # UNIMPLEMENTED comes back as UnimplementedError with the chief's own message.
    assert err.startswith("error: this chief runs without a fleet (no control handler)")
    assert "Traceback" not in err
