"""Fixtures for the end-to-end tests: run ``ktc`` as a real subprocess, write
YAML files, and read a search directory's placement audit and results.

Every ``ktc submit`` started here brings up its own embedded Ray (and stops
it) unless the cluster file gives an address; the chief binds port 0.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KTC = Path(sys.executable).parent / "ktc"

RunKtc = Callable[..., subprocess.CompletedProcess[str]]
WriteYaml = Callable[[str, Mapping[str, Any]], Path]


_RAY_TMPDIRS: list[str] = []


def private_ray_tmpdir() -> str:
    """A short private ``RAY_TMPDIR`` for this test session (removed at exit).

    Other engineers' Ray clusters on this machine record themselves in
    /tmp/ray/ray_current_cluster; a private folder keeps this suite's embedded
    Rays and theirs apart. Short, because Ray's unix sockets live under it.
    """
    if not _RAY_TMPDIRS:
        path = tempfile.mkdtemp(prefix="ktce2e-", dir="/tmp")
        _RAY_TMPDIRS.append(path)
        atexit.register(shutil.rmtree, path, True)
    return _RAY_TMPDIRS[0]


@contextmanager
def ray_test_cluster(
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    head: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]] = (),
) -> Iterator[Any]:
    """A ``ray.cluster_utils.Cluster`` of its own: a head node with ``head``'s
    arguments (no dashboard) plus ``nodes``; shut down on exit.

    ``RAY_TMPDIR`` points at a private short folder (Ray's unix sockets live
    under it), so the cluster's address file never captures other processes'
    ``ray.init()``; GPUs are not hidden, or Ray would refuse logical ones.
    """
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # tests/conftest.py hides GPUs (""); Ray then refuses to advertise logical GPUs.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **head})
    try:
        for node in nodes:
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def ktc_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``ktc`` subprocess: no Ray auth, no GPUs, quiet TF,
    a private ``RAY_TMPDIR`` (unless the test set one)."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_TMPDIR", private_ray_tmpdir())
    env["RAY_AUTH_MODE"] = "disabled"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONUNBUFFERED"] = "1"
    # Workers inherit PYTHONPATH from the chief: make the repo importable from any cwd.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def ktc(
    *args: str | Path,
    cwd: Path,
    timeout: float = 300.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``ktc ARGS`` in ``cwd`` (``submit``/``resume`` get ``--no-progress``).

    Returns the CompletedProcess (text output) whatever the exit code; a
    timeout fails the test with the output so far.
    """
    argv = [str(KTC), *(str(a) for a in args)]
    if args and str(args[0]) in ("submit", "resume") and "--no-progress" not in argv:
        argv.append("--no-progress")
    try:
        return subprocess.run(
            argv,
            cwd=str(cwd),
            env=ktc_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(
            f"`ktc {' '.join(argv[1:])}` timed out after {timeout:g} s\n"
            f"stdout:\n{out}\nstderr:\n{(err or '')[-4000:]}"
        )


@pytest.fixture
def run_ktc(tmp_path: Path) -> RunKtc:
    """``run_ktc(*args, cwd=tmp_path, timeout=300, env=None)``: :func:`ktc` in tmp_path."""

    def run(
        *args: str | Path,
        cwd: Path | None = None,
        timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return ktc(*args, cwd=cwd or tmp_path, timeout=timeout, env=env)

    return run


@pytest.fixture
def write_yaml(tmp_path: Path) -> WriteYaml:
    """``write_yaml("search.yaml", {...}) -> path``: a YAML file in tmp_path."""

    def write(name: str, data: Mapping[str, Any]) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
        return path

    return write


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """Fail with the process's output unless it exited 0."""
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
    )


def read_workers(search_dir: Path) -> list[dict[str, Any]]:
    """The lines of ``workers.jsonl`` (one per started worker process)."""
    path = search_dir / "workers.jsonl"
    assert path.is_file(), f"{path} was not written"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def results_json(run: RunKtc, search_dir: Path) -> list[dict[str, Any]]:
    """``ktc results DIR --json``, parsed (best first)."""
    proc = run("results", search_dir, "--json", timeout=120)
    assert_ok(proc)
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def sleep_search(
    name: str, *, max_trials: int = 6, epochs: int = 2, epoch_s: float = 0.05
) -> dict[str, Any]:
    """A search document for the TF-free ``sleep`` hypermodel."""
    return {
        "kind": "search",
        "name": name,
        "hypermodel": {"name": "sleep", "options": {"epoch_s": epoch_s}},
        "objective": "val_accuracy",
        "oracle": {"type": "random", "max_trials": max_trials, "seed": 1},
        "training": {"epochs": epochs},
    }


def digits_search(
    name: str, *, oracle: Mapping[str, Any], epochs: int = 3, hypermodel: Any = None
) -> dict[str, Any]:
    """A small, fast search document on scikit-learn's digits."""
    return {
        "kind": "search",
        "name": name,
        "hypermodel": hypermodel
        or {
            "name": "cnn",
            "overrides": {
                "conv_blocks": {"value": 1},
                "filters": {"min": 16, "max": 32, "step": 16},
                "kernel_size": {"value": 3},
                "pool_size": {"value": 2},
                "dense_layers": {"value": 1},
                "units": {"min": 32, "max": 64, "step": 32},
                "activation": {"value": "relu"},
                "optimizer": {"value": "adam"},
                "learning_rate": {"values": [0.005]},
            },
        },
        "dataset": {"source": "digits", "validation_split": 0.2, "seed": 0},
        "objective": "val_accuracy",
        "oracle": dict(oracle),
        "training": {"epochs": epochs, "batch_size": 32},
        "failure": {"retries_per_trial": 1, "lease_timeout_s": 120},
    }


def local_cluster(name: str, nodes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A cluster document on an embedded local Ray."""
    return {
        "kind": "cluster",
        "name": name,
        "ray": {"address": "local"},
        "chief": {"host": "127.0.0.1", "port": 0},
        "fleet": {"cpus_per_worker": 1, "recycle_after_trials": 0},
        "nodes": [dict(n) for n in nodes],
    }


@dataclass(frozen=True)
class DigitsRun:
    """One small digits CNN search run through ``ktc submit`` (shared by tests)."""

    root: Path
    search_file: Path
    search_dir: Path
    proc: subprocess.CompletedProcess[str]
    max_trials: int


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> DigitsRun:
    """A real cnn-on-digits search (3 trials x 3 epochs, 2 CPU workers), run once per session."""
    root = tmp_path_factory.mktemp("digits")
    max_trials = 3
    search_file = root / "search.yaml"
    search_file.write_text(
        yaml.safe_dump(
            digits_search(
                "digits-e2e", oracle={"type": "random", "max_trials": max_trials, "seed": 3}
            )
        )
    )
    cluster_file = root / "cluster.yaml"
    cluster_file.write_text(
        yaml.safe_dump(
            local_cluster(
                "local2", [{"name": "local", "host": "127.0.0.1", "cpus": 2, "cpu_workers": 2}]
            )
        )
    )
    search_dir = root / "search"
    proc = ktc(
        "submit", search_file, "--cluster", cluster_file, "--dir", search_dir, cwd=root, timeout=400
    )
    return DigitsRun(root, search_file, search_dir, proc, max_trials)
