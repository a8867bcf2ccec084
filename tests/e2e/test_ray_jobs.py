"""Issue 16: searches submitted as Ray jobs, on a real Ray head with its dashboard
and Ray's token auth on.

One head for the module (:func:`ray_head`): a child process runs
``ray.init(include_dashboard=True, dashboard_host="127.0.0.1")`` with
``RAY_AUTH_MODE=token`` and a token of its own, in a private temp dir, and
``ray.shutdown()`` when its stdin closes; any process of its tree that
outlives that is killed by pid. ``make test`` sets ``RAY_AUTH_MODE=disabled``
for everything else: the head turns token auth on itself, and every ``ktc``
here sends the token it was given (``RAY_AUTH_TOKEN``), as a user's machine
with a copy of the head's token would.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from orchestrator.errors import NotFoundError
from tests.e2e.conftest import KTC, REPO, digits_search, ktc_env, sleep_search
from tests.helpers import final_counts, wait_until

pytestmark = pytest.mark.slow

HEAD_START_TIMEOUT_S = 90.0

# The head: a driver that started Ray (dashboard included) and holds it until
# its stdin closes; ray.shutdown() then stops every process it started.
_HEAD = """
import json, sys
import ray
import ray._private.parameter as parameter

# ray.init has no argument for the dashboard agent's HTTP port, and its
# default (52365) is taken whenever another Ray with a dashboard runs on this
# machine: the job server then has no agent and refuses every job. A free port.
_init = parameter.RayParams.__init__
def _own_agent_port(self, *args, **kwargs):
    kwargs["dashboard_agent_listen_port"] = int(sys.argv[3])
    _init(self, *args, **kwargs)
parameter.RayParams.__init__ = _own_agent_port
ray.init(
    num_cpus=2,
    resources={"ktc_node_head": 1000},
    include_dashboard=True,
    dashboard_host="127.0.0.1",
    dashboard_port=int(sys.argv[1]),
    _temp_dir=sys.argv[2],
    logging_level="ERROR",
)
gcs = ray.get_runtime_context().gcs_address
# What `ray start` does and ray.init does not: record this cluster in its temp
# dir, where the job supervisor resolves "auto" for each job's driver. Without
# it Ray falls back to any GCS process on the machine (another test's).
ray._private.utils.write_ray_address(gcs, sys.argv[2])
print(json.dumps({"gcs": gcs}), flush=True)
sys.stdin.read()
ray.shutdown()
"""


@dataclass(frozen=True)
class RayHead:
    """The module's Ray head and what a ``ktc`` needs to reach it."""

    gcs_address: str
    dashboard: str
    token: str
    root: Path  # the module's folder (cluster file, storage)

    def env(self, **extra: str) -> dict[str, str]:
        """A ``ktc`` environment holding the head's token (auth stays on at the head)."""
        return ktc_env({"RAY_AUTH_TOKEN": self.token, **extra})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """A Ray head with its dashboard on 127.0.0.1 and token auth on, for this module."""
    root = tmp_path_factory.mktemp("rayjobs")
    temp_dir = tempfile.mkdtemp(prefix="ktcj-", dir="/tmp")  # short: Ray's sockets live here
    token = secrets.token_hex(32)
    port = _free_port()
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        # Job entrypoints run `python` and `ktc` from the head's PATH: this venv's.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=str(REPO),
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _HEAD, str(port), temp_dir, str(_free_port())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    tree: set[int] = set()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"the Ray head did not start (exit {proc.poll()})"
        gcs = json.loads(line)["gcs"]
        yield RayHead(gcs, f"127.0.0.1:{port}", token, root)
    finally:
        # Every process the head started, recorded before it stops them.
        with _suppress_gone():
            tree = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in tree:
            with _suppress_gone():
                psutil.Process(pid).kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


class _suppress_gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, psutil.Error)


def _cluster_file(head: RayHead, folder: Path, **ray: object) -> Path:
    data = {
        "kind": "cluster",
        "name": "jobs-test",
        "ray": {"address": head.gcs_address, "dashboard": head.dashboard, **ray},
        "storage": str(head.root / "storage"),
        "chief": {"host": "127.0.0.1", "port": 0},
        "fleet": {"cpus_per_worker": 1, "recycle_after_trials": 0, "warm_spares": False},
        "nodes": [{"name": "head", "host": "127.0.0.1", "cpus": 2, "cpu_workers": 1}],
    }
    path = folder / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _project(tmp_path: Path, name: str, *, max_trials: int = 2) -> Path:
    """A user's project folder: the search file and a module of their own."""
    project = tmp_path / "project"
    project.mkdir()
    search = sleep_search(name, max_trials=max_trials, epochs=1, epoch_s=0.05)
    (project / "search.yaml").write_text(yaml.safe_dump(search, sort_keys=False))
    (project / "notes.txt").write_text("shipped with the job\n")
    return project


def _ktc(
    head: RayHead,
    *args: str | Path,
    cwd: Path,
    timeout: float = 120.0,
    config: Path | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``ktc ARGS`` with the head's token; ``config``: its XDG_CONFIG_HOME (``ktc use``)."""
    extra = {} if config is None else {"XDG_CONFIG_HOME": str(config)}
    return subprocess.run(
        [str(KTC), *(str(a) for a in args)],
        cwd=cwd,
        env=head.env(**extra, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _submit(
    head: RayHead, *args: str | Path, cwd: Path, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``ktc submit ARGS``: detached, as the cluster's ray.address is a remote head."""
    return _ktc(head, "submit", *args, cwd=cwd, config=config)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _search_id(stdout: str) -> str:
    first = stdout.splitlines()[0]
    assert first.startswith("submitted search "), stdout
    return first.split()[2]


def test_submit_detached_list_logs_and_completion(ray_head: RayHead, tmp_path: Path) -> None:
    project = _project(tmp_path, "sleepy")
    cluster = _cluster_file(ray_head, tmp_path)
    # The user's own settings: `ktc use` remembers the cluster file for every verb.
    config = tmp_path / "config"
    _ok(_ktc(ray_head, "use", cluster, cwd=tmp_path, config=config))
    started = time.monotonic()
    out = _ok(_submit(ray_head, "search.yaml", cwd=project, config=config))
    submit_s = time.monotonic() - started
    search_id = _search_id(out)
    assert search_id.startswith("sleepy-")
    # The CLI returned with the id and the commands that follow, long before the search ends.
    assert f"ktc logs {search_id} --follow " in out and f"ktc cancel {search_id} " in out
    assert "--cluster" not in out  # the remembered file needs none
    assert submit_s < 30, f"the detached submit took {submit_s:.1f} s"

    # From another folder, with no search directory here: the cluster file only.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = json.loads(_ok(_ktc(ray_head, "list", "--cluster", cluster, "--json", cwd=elsewhere)))
    mine = [row for row in listed if row["search_id"] == search_id]
    assert mine and mine[0]["search"] == "sleepy", listed
    assert mine[0]["search_dir"] == str(ray_head.root / "storage" / search_id)
    assert not any(row["search_id"].startswith("ktc-check-") for row in listed)

    # --follow prints the chief's output until the search ends.
    follow = _ok(
        _ktc(ray_head, "logs", search_id, "--follow", cwd=elsewhere, timeout=150, config=config)
    )
    assert "search directory:" in follow, follow
    table = _ok(_ktc(ray_head, "list", cwd=elsewhere, config=config))
    row = next(line for line in table.splitlines() if line.startswith(search_id))
    assert " finished " in row, table
    # The search ran on the head: its directory is under storage, its trials completed.
    search_dir = ray_head.root / "storage" / search_id
    assert (search_dir / "ledger.db").is_file()
    status = json.loads(_ok(_ktc(ray_head, "status", search_dir, "--json", cwd=elsewhere)))
    assert status["state"] == "completed", status
    logs = _ok(_ktc(ray_head, "logs", search_id, cwd=elsewhere, config=config))
    assert "search directory:" in logs
    # The search token stays on the head: not in the job's log, the one channel out.
    search_token = (search_dir / "token").read_text().strip()
    assert search_token and search_token not in logs and search_token not in follow
    # A worker's own log, from Ray's log files on its node, through the same dashboard.
    worker = _ktc(ray_head, "logs", search_id, "--worker", "head-w0", cwd=elsewhere, config=config)
    assert worker.returncode == 0 and ":actor_name:WorkerProcess" in worker.stdout, worker
    # Its Python logging, trial by trial, not only its warnings.
    assert re.search(r"INFO \[head-w0\] \S+: trial \S+ attempt 1: ended COMPLETED", worker.stdout)
    assert "# worker head-w0, process 1 (pid " in worker.stderr
    nosuch = _ktc(ray_head, "logs", search_id, "--worker", "w9", cwd=elsewhere, config=config)
    assert nosuch.returncode == 2  # bad input: it names no worker of the search
    assert f"--worker w9: search {search_id} has no such worker" in nosuch.stderr
    assert "(head-w0)" in nosuch.stderr


def test_version_mismatch_is_refused_before_anything_starts(
    ray_head: RayHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.job_submission import JobSubmissionClient

    from orchestrator import head_jobs, jobs
    from orchestrator.config.loader import load_cluster

    cluster = load_cluster(_cluster_file(ray_head, tmp_path))
    client = jobs.ClusterJobs.connect(cluster, ray_head.env())
    ray_jobs = JobSubmissionClient(
        f"http://{ray_head.dashboard}", headers={"Authorization": f"Bearer {ray_head.token}"}
    )
    before = {job.submission_id for job in ray_jobs.list_jobs()}
    head_version = re.escape(jobs.__version__)
    monkeypatch.setattr(head_jobs, "__version__", "0.0.0-other")  # the check's own
    with pytest.raises(
        jobs.JobsApiError,
        match=rf"the head runs ktcluster {head_version}, this machine 0\.0\.0-other; expected "
        r"the same version.*Nothing was submitted",
    ):
        client.check_head()
    # Nothing is left on the cluster: the check job is deleted, no search was submitted
    # (older helper jobs may have been swept up with it).
    assert {job.submission_id for job in ray_jobs.list_jobs()} <= before


def test_stop_ends_the_search_job(ray_head: RayHead, tmp_path: Path) -> None:
    from orchestrator import jobs
    from orchestrator.config.loader import load_cluster

    project = _project(tmp_path, "stopme", max_trials=200)
    cluster_file = _cluster_file(ray_head, tmp_path)
    client = jobs.ClusterJobs.connect(load_cluster(cluster_file), ray_head.env())
    submitted = client.submit_search(
        cluster=load_cluster(cluster_file),
        search_name="stopme",
        search_file=project / "search.yaml",
        working_dir=project,
    )
    assert client.search(submitted.search_id).state in (
        jobs.JobState.STARTING,
        jobs.JobState.RUNNING,
    )
    assert client.stop(submitted.search_id)
    client.wait(submitted.search_id, timeout_s=60)
    assert client.search(submitted.search_id).state is jobs.JobState.STOPPED
    with pytest.raises(NotFoundError, match=r"search 'nosuch-1': no such job on the cluster"):
        client.search("nosuch-1")


def test_a_search_that_cannot_start_shows_failed_with_its_cause(
    ray_head: RayHead, tmp_path: Path
) -> None:
    from orchestrator import jobs
    from orchestrator.config.loader import load_cluster

    project = _project(tmp_path, "nostore")
    cluster_file = _cluster_file(ray_head, tmp_path)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where storage should be")
    data = yaml.safe_load(cluster_file.read_text())
    data["storage"] = str(blocked)
    cluster_file.write_text(yaml.safe_dump(data))
    client = jobs.ClusterJobs.connect(load_cluster(cluster_file), ray_head.env())
    submitted = client.submit_search(
        cluster=load_cluster(cluster_file),
        search_name="nostore",
        search_file=project / "search.yaml",
        working_dir=project,
    )
    client.wait(submitted.search_id, timeout_s=60)
    assert client.search(submitted.search_id).state is jobs.JobState.FAILED
    logs = _ktc(ray_head, "logs", submitted.search_id, "--cluster", cluster_file, cwd=tmp_path)
    assert logs.returncode == 0
    assert f"{blocked} is a file; expected a folder" in logs.stdout
    assert f"# search {submitted.search_id} failed: " in logs.stderr
    assert "exit code 2" in logs.stderr


def test_a_killed_chief_is_resumed_as_a_new_job_with_no_trial_lost_or_rerun(
    ray_head: RayHead, tmp_path: Path
) -> None:
    from orchestrator import jobs
    from orchestrator.config.loader import load_cluster

    max_trials = 6
    project = tmp_path / "project"
    project.mkdir()
    search = sleep_search("phoenix", max_trials=max_trials, epochs=2, epoch_s=0.2)
    (project / "search.yaml").write_text(yaml.safe_dump(search, sort_keys=False))
    cluster = load_cluster(_cluster_file(ray_head, tmp_path))
    client = jobs.ClusterJobs.connect(cluster, ray_head.env())
    submitted = client.submit_search(
        cluster=cluster,
        search_name="phoenix",
        search_file=project / "search.yaml",
        working_dir=project,
    )
    search_dir = Path(submitted.search_dir)
    ledger = search_dir / "ledger.db"

    def completed() -> int:
        if not ledger.exists():
            return 0
        return sum(n for (_, kind), n in final_counts(ledger).items() if kind == "completed")

    wait_until(lambda: completed() >= 2, 90, interval_s=0.2, what="two completed trials")
    # The chief's driver dies without a word (SIGKILL), mid-search.
    chief = json.loads((search_dir / "chief.json").read_text())
    os.kill(int(chief["pid"]), 9)
    client.wait(submitted.search_id, timeout_s=60)
    died = client.search(submitted.search_id)
    assert died.state is jobs.JobState.FAILED, died
    assert completed() < max_trials

    # From the user's machine: status names the dead chief and the command that
    # brings it back; `ktc resume ID` submits the chief's next job.
    config = tmp_path / "config"
    _ok(_ktc(ray_head, "use", tmp_path / "cluster.yaml", cwd=tmp_path, config=config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status = _ok(_ktc(ray_head, "status", submitted.search_id, cwd=elsewhere, config=config))
    assert f"chief's job: {submitted.search_id} failed" in status, status
    assert f"`ktc resume {submitted.search_id}` submits its chief again" in status, status
    # One line for the dead job, where its whole log is, and no path on the head (U4).
    assert f"its full log: `ktc logs {submitted.search_id}`" in status, status
    assert str(search_dir) + "`" not in status and len(status) < 4000, status
    out = _ok(_ktc(ray_head, "resume", submitted.search_id, cwd=elsewhere, config=config))
    resumed_id = f"{submitted.search_id}-r1"
    assert f"as job {resumed_id}" in out, out
    assert client.search(submitted.search_id).runs == 2
    client.wait(resumed_id, timeout_s=120)
    done = client.search(submitted.search_id)
    assert done.state is jobs.JobState.FINISHED, client.logs(submitted.search_id)[-3000:]
    # Every trial completed exactly once across the two chiefs; none failed.
    counts = final_counts(ledger)
    assert sorted(counts.values()) == [1] * max_trials, counts
    assert {kind for _, kind in counts} == {"completed"}
    # One search in the list, its logs the two jobs' in order.
    assert [s.search_id for s in client.searches()].count(submitted.search_id) == 1
    assert f"# ---- resumed: job {submitted.search_id}-r1 ----" in client.logs(submitted.search_id)
    # A completed search: refused as a local resume refuses it, and nothing is submitted (B4).
    again = _ktc(ray_head, "resume", submitted.search_id, cwd=elsewhere, config=config)
    assert again.returncode == 2, again
    assert again.stderr == (
        f"error: {submitted.search_id}: the search already completed; nothing to resume. "
        f"See the results with `ktc results {submitted.search_id}`.\n"
    )
    assert client.search(submitted.search_id).runs == 2
    assert client.search(submitted.search_id).state is jobs.JobState.FINISHED


MY_MODELS = """\
import keras


def build_model(hp):
    model = keras.Sequential([keras.layers.Flatten()])
    model.add(keras.layers.Dense(hp.Choice("units", [16, 32]), activation="relu"))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
"""


def test_every_verb_works_from_another_machine_by_search_id(
    ray_head: RayHead, tmp_path: Path
) -> None:
    """status, results, report, export, evaluate and cancel of a digits search whose
    hypermodel is the user's own module, from a folder with no search directory:
    each runs on the head as a short job (orchestrator/remote_verbs.py), with the
    remembered cluster file (or --cluster) and Ray's token only. export and evaluate
    import the code the search shipped, never a module of that name elsewhere (B2)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_models.py").write_text(MY_MODELS)
    search = digits_search(
        "remote",
        oracle={"type": "random", "max_trials": 2},
        epochs=1,
        hypermodel="my_models:build_model",
    )
    (project / "search.yaml").write_text(yaml.safe_dump(search, sort_keys=False))
    cluster = _cluster_file(ray_head, tmp_path)
    config = tmp_path / "config"
    _ok(_ktc(ray_head, "use", cluster, cwd=tmp_path, config=config))
    search_id = _search_id(_ok(_submit(ray_head, "search.yaml", cwd=project, config=config)))
    here = tmp_path / "laptop"
    here.mkdir()
    # After the submit, the user's folder changes; a verb must not import this.
    (project / "my_models.py").write_text("raise ImportError('changed after the submit')\n")
    (here / "my_models.py").write_text("raise ImportError('not the search s code')\n")

    def ktc(*args: str | Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return _ktc(ray_head, *args, cwd=here, timeout=timeout, config=config)

    _ok(ktc("logs", search_id, "--follow", timeout=240))  # until the search ends
    status = json.loads(_ok(ktc("status", search_id, "--json")))
    assert status["state"] == "completed" and status["counts"]["COMPLETED"] == 2, status
    assert status["job"]["id"] == search_id and status["job"]["state"] == "finished"
    # The follow-up commands with --cluster instead of `ktc use` (B3).
    nothing_remembered = tmp_path / "no-config"
    rows = json.loads(
        _ok(
            _ktc(
                ray_head,
                *("results", search_id, "--json", "--cluster", cluster),
                cwd=here,
                config=nothing_remembered,
            )
        )
    )
    assert sorted(r["status"] for r in rows) == ["COMPLETED"] * 2
    # ktc list reads every search's progress and best score on the head, in one job.
    listed = json.loads(_ok(ktc("list", "--json")))
    mine = next(row for row in listed if row["search_id"] == search_id)
    assert mine["progress"]["completed"] == 2 and mine["progress"]["max_trials"] == 2, mine
    best = max(r["score"] for r in rows)
    assert mine["progress"]["best"] == pytest.approx(best)
    table = _ok(ktc("list"))
    line = next(row for row in table.splitlines() if row.startswith(search_id))
    assert " 2/2 " in line and f"val_accuracy {best:.4f}" in line, table
    # Files the verbs write come back here; nothing of the search is on this disk otherwise.
    report = _ok(ktc("report", search_id))
    assert (here / f"{search_id}-report" / "index.html").is_file(), report
    assert list((here / f"{search_id}-report").glob("*.png")), report
    # The best model, exported on the head and written here: a Keras archive.
    _ok(ktc("export", search_id, "--out", "best.keras", timeout=180))
    assert zipfile.is_zipfile(here / "best.keras")
    with zipfile.ZipFile(here / "best.keras") as archive:
        assert "model.weights.h5" in archive.namelist(), archive.namelist()
    # The best model on the held-out test split, scored by a worker of the cluster
    # that the verb's job on the head starts; its results stay with the search.
    evaluated = _ok(ktc("evaluate", search_id, timeout=240))
    assert "test accuracy" in evaluated, evaluated
    assert (ray_head.root / "storage" / search_id / "evaluation.json").is_file()
    # Bad ids and unknown searches are refused before anything runs.
    unknown = ktc("status", "nosuch-20000101-000000")
    assert unknown.returncode == 2 and "`ktc list`" in unknown.stderr, unknown.stderr
    # A finished search: cancel has no live chief to ask (the head's own message).
    cancel = ktc("cancel", search_id)
    assert cancel.returncode != 0 and cancel.stderr.startswith("error: "), cancel
    assert not list(here.glob("*/ledger.db"))


def test_scale_by_id_and_a_second_search_waits_for_what_the_first_holds(
    ray_head: RayHead, tmp_path: Path
) -> None:
    """From the user's machine, by search id: scale a running search up to the
    whole head and back down to half of it; submit a second search of two
    workers beside it: one gets the CPU left, the other shows as pending, the
    reason naming the first search by its id. Cancel both. No trial of either
    is lost or run twice."""
    cluster = _cluster_file(ray_head, tmp_path)  # the head: 2 CPUs, 1 worker of 1 CPU
    config = tmp_path / "config"
    _ok(_ktc(ray_head, "use", cluster, cwd=tmp_path, config=config))
    here = tmp_path / "laptop"
    here.mkdir()

    def ktc(*args: str | Path, cwd: Path = here) -> subprocess.CompletedProcess[str]:
        return _ktc(ray_head, *args, cwd=cwd, config=config)

    def status(search_id: str) -> dict[str, object]:
        proc = ktc("status", search_id, "--json")
        if proc.returncode == 1 and f"search {search_id} has not started yet" in proc.stderr:
            return {"workers": []}  # submitted; its chief has not made its directory yet
        return json.loads(_ok(proc))

    def workers(doc: dict[str, object]) -> list[dict[str, object]]:
        return list(doc["workers"])  # type: ignore[call-overload]

    def wait_status(search_id: str, ok: object, what: str, timeout: float = 90.0) -> dict:
        seen: dict[str, object] = {}

        def check() -> bool:
            seen.update(status(search_id))
            return bool(ok(seen))  # type: ignore[operator]

        wait_until(check, timeout, interval_s=0.5, what=f"{what} (last: {seen})")
        return seen

    first_project = tmp_path / "first"
    first_project.mkdir()
    long = sleep_search("wide", max_trials=500, epochs=2, epoch_s=0.25)
    (first_project / "search.yaml").write_text(yaml.safe_dump(long, sort_keys=False))
    first = _search_id(_ok(_submit(ray_head, "search.yaml", cwd=first_project, config=config)))
    wait_status(first, lambda d: any(w["trial_id"] for w in workers(d)), "a busy worker")

    scaled = ktc("scale", first, "--workers", "2")
    out = _ok(scaled)
    # The head's advice names the search by its id here, not by its directory there.
    assert f"`ktc status {first} --watch`" in out and str(ray_head.root) not in out, out
    wait_status(
        first,
        lambda d: sum(1 for w in workers(d) if w["trial_id"]) == 2,
        "both workers of the first search busy",
    )

    # Scaled back down by id: one worker drains and its CPU goes back to the cluster.
    _ok(ktc("scale", first, "--workers", "1"))
    wait_status(
        first,
        lambda d: sum(1 for w in workers(d) if w["state"] != "stopped") == 1,
        "the first search back at one worker",
    )

    second_project = tmp_path / "second"
    second_project.mkdir()
    short = sleep_search("narrow", max_trials=200, epochs=2, epoch_s=0.25)
    (second_project / "search.yaml").write_text(yaml.safe_dump(short, sort_keys=False))
    submitted = _submit(
        ray_head, "search.yaml", "--workers", "2", cwd=second_project, config=config
    )
    second = _search_id(_ok(submitted))

    def one_placed_one_pending(d: dict[str, object]) -> bool:
        states = sorted(str(w["state"]) for w in workers(d))
        placed = [s for s in states if s in ("running", "idle")]
        return len(states) == 2 and states.count("pending") == 1 and len(placed) == 1

    waiting = wait_status(second, one_placed_one_pending, "one worker placed, one pending")
    pending = next(w for w in workers(waiting) if w["state"] == "pending")
    reason = str(pending["pending_reason"])
    assert "the worker needs 1 CPU" in reason and "2 CPU, 0 GPU in total" in reason, reason
    assert f"1 CPU by ktcluster search {first} (" in reason, reason
    assert "1 CPU by this search's other workers" in reason, reason

    from orchestrator import jobs
    from orchestrator.config.loader import load_cluster

    client = jobs.ClusterJobs.connect(load_cluster(cluster), ray_head.env())
    cancelled = _ok(ktc("cancel", second))
    assert f"continue with `ktc resume {second}`" in cancelled, cancelled
    client.wait(second, timeout_s=60)  # a cancelled chief exits 0: its job finished
    assert client.search(second).state is jobs.JobState.FINISHED

    _ok(ktc("cancel", first))
    client.wait(first, timeout_s=60)
    assert status(first)["state"] == "cancelled"
    for search_id in (first, second):
        ledger = ray_head.root / "storage" / search_id / "ledger.db"
        counts = final_counts(ledger)
        # No trial ended twice; none failed.
        assert all(n == 1 for n in counts.values()), counts
        assert {kind for _, kind in counts} <= {"completed"}, counts
    assert not list(here.glob("**/ledger.db"))


def test_attach_runs_the_chief_here_against_the_remote_head(
    ray_head: RayHead, tmp_path: Path
) -> None:
    """``--attach``: the chief in this process, its directory on this disk, its
    workers on the head; no job is submitted."""
    from ray.job_submission import JobSubmissionClient

    from orchestrator import head_jobs

    project = _project(tmp_path, "attached")
    cluster = _cluster_file(ray_head, tmp_path)
    ray_jobs = JobSubmissionClient(
        f"http://{ray_head.dashboard}", headers={"Authorization": f"Bearer {ray_head.token}"}
    )

    def searches() -> set[str]:  # ktcluster's helper jobs (verbs, version checks) aside
        return {
            str(job.submission_id)
            for job in ray_jobs.list_jobs()
            if not str(job.submission_id).startswith(head_jobs.HELPER_PREFIXES)
        }

    before = searches()
    attach = ("submit", "search.yaml", "--cluster", cluster, "--attach", "--no-progress")
    # This process joins the head's Ray itself: with Ray's token auth on, as a
    # user's machine has it by default.
    out = _ok(
        _ktc(ray_head, *attach, "--dir", "run", cwd=project, timeout=180, RAY_AUTH_MODE="token")
    )
    assert "search completed" in out, out
    counts = final_counts(project / "run" / "ledger.db")
    assert sorted(counts.values()) == [1, 1] and {k for _, k in counts} == {"completed"}
    assert searches() == before
