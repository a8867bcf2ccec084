"""Config files and the paths they name that are not regular files, one rule for all
(orchestrator/config/local_paths.py): a FIFO must not hang ``ktc validate``, and
a symlink loop and a folder must be named as such."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.config import parse_cluster, parse_search
from orchestrator.config.loader import load_cluster, load_cluster_text, load_search
from orchestrator.config.local_paths import path_problem
from orchestrator.errors import ConfigError

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def _within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread; fail the test (not hang it) if it blocks."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return outcome[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "search.yaml"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("load", [load_search, load_cluster, load_cluster_text])
def test_a_fifo_is_refused_without_opening_it(fifo: Path, load: Callable[[Path], object]) -> None:
    error = _within(5.0, lambda: load(fifo))
    assert isinstance(error, ConfigError)
    assert str(error).startswith(
        f"{fifo}: is a FIFO (named pipe), not a regular file; expected a readable YAML file "
        "(a regular file). Check the path"
    )


def test_validate_and_submit_refuse_a_fifo(
    fifo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(fifo.parent)
    for argv in (["validate", str(fifo)], ["submit", str(fifo), "--dir", "out"]):
        codes: list[int] = []
        assert _within(5.0, lambda argv=argv, codes=codes: codes.append(main(argv))) is None
        assert codes == [2]
        assert "is a FIFO (named pipe), not a regular file" in capsys.readouterr().err
    assert not (fifo.parent / "out").exists()


def test_a_symlink_loop_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    assert main(["validate", str(tmp_path / "a.yaml")]) == 2
    err = capsys.readouterr().err
    assert "a.yaml: is a symlink loop" in err
    assert "does not exist" not in err


def test_a_dangling_symlink_names_its_target(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").symlink_to("gone.yaml")
    assert path_problem(tmp_path / "s.yaml", "file") == (
        "is a symlink to 'gone.yaml', which does not exist"
    )


def test_tls_paths_say_what_they_are(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    os.mkfifo(tmp_path / "key.pem")
    (tmp_path / "loop.pem").symlink_to(tmp_path / "loop.pem")
    for cert, expect in (
        (str(tmp_path), "is a directory, not a file"),
        (str(tmp_path / "key.pem"), r"is a FIFO \(named pipe\), not a regular file"),
        (str(tmp_path / "loop.pem"), "is a symlink loop"),
    ):
        with pytest.raises(ConfigError, match=rf"chief\.tls\.cert: TLS file '.*' {expect} "):
            parse_cluster({"chief": {"tls": {"cert": cert, "key": str(pem), "ca": str(pem)}}})


def test_dataset_paths_use_the_same_rule(fifo: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"dataset\.path: path '.*' is a FIFO \(named pipe\), not a regular file"
    ):
        parse_search({"hypermodel": "cnn", "dataset": {"source": "npz", "path": str(fifo)}})
