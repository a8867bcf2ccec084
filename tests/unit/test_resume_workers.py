"""``ktc resume DIR --workers N`` is checked against ``fleet.max_workers`` before
the chief or Ray starts (issue 12.7): the cap of ``--cluster`` when given, else
of the cluster the search was submitted with. A refusal exits 2 and leaves the
search directory as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.cli.main import main
from orchestrator.config import parse_cluster
from tests.helpers import float_space, make_search


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # resume hides the GPUs from this process; undo it after each test.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stopped search submitted with ``fleet.max_workers: 3``; Chief.resume must not run."""
    cluster = parse_cluster(
        {"name": "c", "fleet": {"max_workers": 3}, "nodes": [{"name": "a", "cpus": 2}]}
    )
    directory = tmp_path / "stopped"
    chief = Chief.create(make_search(), directory, cluster=cluster, initial_space=float_space())
    chief.close(grace_s=0.1)

    def no_resume(*args: object, **kwargs: object) -> None:
        raise AssertionError("Chief.resume ran although --workers is refused")

    monkeypatch.setattr(Chief, "resume", no_resume)
    monkeypatch.chdir(tmp_path)
    return directory


def _digest(directory: Path) -> dict[str, str]:
    # Reading the ledger may add its -wal/-shm files (empty); it changes no file.
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def test_resume_beyond_the_stored_cap_exits_2(
    stopped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digest(stopped)
    assert main(["resume", str(stopped), "--workers", "4", "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"error: --workers 4: expected at most fleet.max_workers (3) of the cluster {stopped} "
        "was submitted with, got 4. Lower --workers, or resume with --cluster FILE whose "
        "fleet.max_workers is higher.\n"
    )
    assert _digest(stopped) == before


def test_resume_beyond_the_cap_of_cluster_exits_2(
    stopped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("c.yaml").write_text("fleet: {max_workers: 8}\nnodes:\n  - {name: a, cpus: 2}\n")
    before = _digest(stopped)
    code = main(["resume", str(stopped), "--cluster", "c.yaml", "--workers", "9", "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: --workers 9: expected at most fleet.max_workers (8) of the cluster file c.yaml, "
        "got 9. Lower --workers, or raise fleet.max_workers in the cluster file.\n"
    )
    assert _digest(stopped) == before


def test_a_negative_worker_count_is_refused_by_the_parser(
    stopped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match="^2$"):
        main(["resume", str(stopped), "--workers", "-1"])
    assert "expected a whole number from 1 to 65536" in capsys.readouterr().err
