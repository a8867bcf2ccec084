"""``ktc`` exit codes, one rule for every verb: 2 for bad input (an InputError,
or an argument argparse refuses), 1 for a runtime failure. The control verbs
run against a real in-process chief whose control handler refuses input the
way the fleet does (no Ray)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.cli.main import EXIT_BAD_INPUT, EXIT_RUNTIME_ERROR, exit_code, main
from orchestrator.errors import (
    AuthenticationError,
    ChiefInternalError,
    ChiefUnavailableError,
    ConfigError,
    FleetError,
    InvalidRequestError,
    KtClusterError,
    SearchDirError,
    StaleLeaseError,
    UnimplementedError,
)
from orchestrator.protocol.error_codes import ERROR_CODES
from tests.helpers import float_space, make_search

REPO = Path(__file__).resolve().parents[2]
SEARCH_FILE = REPO / "configs" / "mnist-mlp.yaml"
NOT_A_SEARCH_DIR = "not a search directory"


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # submit and resume hide the GPUs from this process; undo it after each test.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a malformed cluster file and a non-YAML file."""
    (tmp_path / "bad-cluster.yaml").write_text("kind: cluster\nname: x\nnodes: 5\n")
    (tmp_path / "not-yaml.yaml").write_text("a: [1, 2\n")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def stopped_search(tmp_path: Path) -> Path:
    """A search directory whose chief is closed (a ledger, no live chief)."""
    directory = tmp_path / "stopped"
    chief = Chief.create(make_search(), directory, initial_space=float_space())
    chief.close(grace_s=0.1)
    return directory


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_the_rule_follows_the_exception_type() -> None:
    for error in (ConfigError, InvalidRequestError, SearchDirError):
        assert exit_code(error("x")) == EXIT_BAD_INPUT == 2, error
    for runtime in (
        KtClusterError,
        ChiefUnavailableError,
        AuthenticationError,
        StaleLeaseError,
        UnimplementedError,
        FleetError,
        ChiefInternalError,
    ):
        assert exit_code(runtime("x")) == EXIT_RUNTIME_ERROR == 1, runtime
    # Every type that travels as INVALID_ARGUMENT is bad input to the CLI too.
    for row in ERROR_CODES:
        assert (exit_code(row.error("x")) == 2) == (row.code.name == "INVALID_ARGUMENT"), row


BAD_INPUT = [
    (["validate", "nosuch.yaml"], r"nosuch\.yaml: does not exist"),
    (["submit", "nosuch.yaml"], r"nosuch\.yaml: does not exist"),
    (["submit", "not-yaml.yaml"], r"not-yaml\.yaml"),
    (["submit", str(SEARCH_FILE), "--cluster", "bad-cluster.yaml"], "nodes: expected a list"),
    (["resume", "nosuch"], NOT_A_SEARCH_DIR),
    (["resume", "empty"], NOT_A_SEARCH_DIR),
    (["status", "nosuch"], NOT_A_SEARCH_DIR),
    (["results", "nosuch"], NOT_A_SEARCH_DIR),
    (["export", "nosuch", "--out", "best.keras"], NOT_A_SEARCH_DIR),
    (["export", "nosuch", "--out", "best.txt"], r"--out best\.txt: the file name must end"),
    (["scale", "nosuch", "--workers", "1"], NOT_A_SEARCH_DIR),
    (["scale", "empty", "--workers", "-1"], "--workers: expected a number of workers >= 0"),
    (["scale", "empty", "--node", "a=-2"], "--node a: expected a number of workers >= 0"),
    (["scale", "empty", "--apply", "bad-cluster.yaml"], "nodes: expected a list"),
    (["cancel", "nosuch"], NOT_A_SEARCH_DIR),
    (["cluster", "render", "nosuch.yaml", "--format", "ray-up"], "does not exist"),
    (["cluster", "render", "bad-cluster.yaml", "--format", "ray-up"], "expected a list"),
    (["cluster", "up", "not-yaml.yaml", "--dry-run"], r"not-yaml\.yaml"),
    (["cluster", "down", "--local"], "pass the cluster YAML or --state-dir"),
]


@pytest.mark.parametrize(
    ("argv", "message"), BAD_INPUT, ids=[" ".join(argv) for argv, _ in BAD_INPUT]
)
def test_bad_input_exits_2(files: Path, capsys: Any, argv: list[str], message: str) -> None:
    code, err = _run(capsys, *argv)
    assert code == 2, err
    assert err.startswith("error: ") and re.search(message, err), err
    assert "Traceback" not in err


def test_bad_input_to_a_stopped_search_exits_2(
    stopped_search: Path, files: Path, capsys: Any
) -> None:
    for argv, message in (
        (["resume", str(stopped_search), "--cluster", "bad-cluster.yaml"], "expected a list"),
        (["results", str(stopped_search), "--top", "0"], "--top: expected a number of trials"),
        (["export", str(stopped_search), "--out", "m.keras", "--rank", "0"], "--rank: expected"),
        # No completed trial: bad input, as `ktc evaluate` says of the same search.
        (["export", str(stopped_search), "--out", "m.keras"], "no completed trial to export"),
    ):
        code, err = _run(capsys, *argv)
        assert code == 2, (argv, err)
        assert re.search(message, err), err


def test_an_argument_argparse_refuses_exits_2(capsys: Any) -> None:
    with pytest.raises(SystemExit, match="^2$"):
        main(["scale"])
    assert "the following arguments are required: DIR" in capsys.readouterr().err


def test_no_live_chief_is_a_runtime_failure(stopped_search: Path, capsys: Any) -> None:
    for argv in (["scale", str(stopped_search), "--workers", "1"], ["cancel", str(stopped_search)]):
        code, err = _run(capsys, *argv)
        assert code == 1, err
        assert f"no live chief for {stopped_search}" in err


# ----------------------------------------------------- against a live chief


class FleetLikeControl:
    """Refuses scale input as the fleet does (ConfigError naming the flag and
    the known nodes); a cluster text goes through the real parser."""

    nodes = ("gpu-a", "gpu-b")

    def __init__(self) -> None:
        self.fleet_running = True
        self.scaled: list[dict[str, int]] = []

    def status_document(self) -> dict[str, Any]:
        return {"state": "running"}

    def scale(self, request: Any) -> str:
        from orchestrator.config import parse_cluster

        if not self.fleet_running:
            raise FleetError("the fleet is not running")
        if request.cluster_yaml:
            parse_cluster(request.cluster_yaml, source=request.cluster_yaml_path)
        for node, count in request.node_workers.items():
            if node not in self.nodes:
                raise ConfigError(
                    f"--node {node}={count}: no node named {node!r} in the cluster file; "
                    f"known nodes: {', '.join(self.nodes)}"
                )
        self.scaled.append(dict(request.node_workers))
        return "scaled"

    def cancel(self, now: bool) -> str:
        return "cancelled"


@pytest.fixture
def live(start_chief: Any, search_dir: Path) -> FleetLikeControl:
    chief, _ = start_chief(make_search(), initial_space=float_space(), long_poll_s=0.2)
    control = FleetLikeControl()
    chief.control.handler = control
    return control


def test_scale_to_an_unknown_node_exits_2_with_the_chiefs_message(
    live: FleetLikeControl, search_dir: Path, capsys: Any
) -> None:
    code, err = _run(capsys, "scale", str(search_dir), "--node", "nosuch=1")
    assert code == 2
    # The chief's own message, with no header of the RPC layer in front of it.
    assert err == (
        "error: --node nosuch=1: no node named 'nosuch' in the cluster file; "
        "known nodes: gpu-a, gpu-b\n"
    )
    assert live.scaled == []


def test_runtime_failures_of_control_rpcs_exit_1(
    live: FleetLikeControl, search_dir: Path, capsys: Any
) -> None:
    live.fleet_running = False
    code, err = _run(capsys, "scale", str(search_dir), "--node", "gpu-a=1")
    assert (code, err) == (1, "error: the fleet is not running\n")


def test_control_rpcs_without_a_handler_exit_1(
    start_chief: Any, search_dir: Path, capsys: Any
) -> None:
    start_chief(make_search(), initial_space=float_space(), long_poll_s=0.2)
    for argv in (["cancel", str(search_dir)], ["scale", str(search_dir), "--workers", "1"]):
        code, err = _run(capsys, *argv)
        assert code == 1
        assert err.startswith("error: this chief runs without a fleet"), err


class PausingControl(FleetLikeControl):
    """A fleet whose target is what the last ``--workers`` asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.wanted = 2

    def status_document(self) -> dict[str, Any]:
        return {"state": "running", "workers_wanted": self.wanted}

    def scale(self, request: Any) -> str:
        before, self.wanted = self.wanted, request.total_workers
        return f"scaling down {before} -> {self.wanted}: draining local-w1, local-w0"


def test_scale_to_zero_workers_warns_that_nothing_progresses(
    start_chief: Any, search_dir: Path, capsys: Any
) -> None:
    chief, _ = start_chief(make_search(), initial_space=float_space(), long_poll_s=0.2)
    chief.control.handler = PausingControl()
    assert main(["scale", str(search_dir), "--workers", "0"]) == 0
    captured = capsys.readouterr()
    assert "scaling down 2 -> 0" in captured.out
    assert captured.err == (
        "warning: 0 workers wanted: nothing progresses until "
        f"`ktc scale {search_dir} --workers N`\n"
    )
    assert main(["scale", str(search_dir), "--workers", "1"]) == 0
    assert capsys.readouterr().err == ""


def test_cluster_down_local_with_nothing_running_is_a_no_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A second `down` (the state file is gone): the cluster is down, as asked.
    for _ in range(2):
        assert main(["cluster", "down", "--local", "--state-dir", str(tmp_path)]) == 0
        captured = capsys.readouterr()
        assert f"no local cluster is running from {tmp_path}; nothing to stop" in captured.out
        assert captured.err == ""


@pytest.mark.parametrize("verb", ["submit", "resume"])
def test_no_workers_at_start_is_refused(
    verb: str, files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # With 0 workers the search would sit RUNNING forever ("workers: none reported").
    target = str(SEARCH_FILE) if verb == "submit" else "empty"
    with pytest.raises(SystemExit, match="^2$"):
        main([verb, target, "--workers", "0"])
    err = capsys.readouterr().err
    assert "--workers: expected at least 1 worker, got 0" in err
    assert "`ktc scale DIR --workers N`" in err
