"""orchestrator/jobs.py, orchestrator/job_package.py and the detached submit's checks, without Ray's head:
the job's entrypoint, its cluster file, its package, states, and what ``ktc
submit`` refuses before it dials anything (the head is in tests/e2e/test_ray_jobs.py)."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import pytest
import yaml

from orchestrator import head_jobs, job_package, jobs
from orchestrator.cli.submit_job import detaches, submit_detached
from orchestrator.config import parse_cluster
from orchestrator.errors import ConfigError


def _cluster(**extra: object) -> dict[str, object]:
    return {
        "kind": "cluster",
        "name": "lab",
        "ray": {"address": "10.0.0.1:6379", "dashboard": "127.0.0.1:8265"},
        "storage": "/srv/ktc searches",
        "chief": {"host": "0.0.0.0", "insecure": True, "advertise": "10.0.0.1"},
        "nodes": [{"name": "a", "host": "10.0.0.1", "cpus": 4}],
        **extra,
    }


def test_entrypoint_makes_storage_then_runs_the_chief_in_it() -> None:
    entry = job_package.search_entrypoint("/srv/ktc searches/", "s-20261130-120000", workers=3)
    assert entry == (
        "python -m orchestrator.storage '/srv/ktc searches' && ktc submit "
        ".ktcluster-job/search.yaml --cluster .ktcluster-job/cluster.yaml --no-progress "
        "--dir '/srv/ktc searches/s-20261130-120000' --workers 3"
    )
    home = job_package.search_entrypoint("~/ktc", "s-1")
    assert 'storage "$HOME"/ktc &&' in home and '--dir "$HOME"/ktc/s-1' in home
    # A detached submit keeps the code it ships in the search directory first (B2).
    kept = job_package.search_entrypoint("/srv/ktc", "s-1", keep_code=True)
    assert kept.startswith(
        "python -m orchestrator.storage /srv/ktc && python -m orchestrator.search_code "
        "/srv/ktc/s-1 && ktc submit "
    ), kept


def test_job_cluster_file_joins_the_cluster_it_runs_in() -> None:
    spec = parse_cluster(_cluster())
    text = job_package.job_cluster_text(spec, "s-1")
    data = yaml.safe_load(text)
    assert data["ray"]["address"] == "auto"
    assert "dashboard" not in data["ray"]
    assert data["ray"]["working_dir"] is None
    assert data["chief"]["advertise"] == "10.0.0.1"  # the head's address as workers see it
    assert data["storage"] == "/srv/ktc searches"
    assert parse_cluster(data).ray.address == "auto"


def test_package_holds_the_folder_and_the_job_files(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / ".git" / "HEAD").write_text("ref")
    (project / "model.py").write_text("def build_model(hp): ...\n")
    (project / "big.npz").write_bytes(b"x" * 1000)
    (project / ".rayignore").write_text("*.npz\n")
    package = job_package.build_package(
        project, {"search.yaml": b"name: s\n"}, tmp_path / "p.zip", max_bytes=10**6
    )
    names = set(zipfile.ZipFile(package.path).namelist())
    assert "model.py" in names and ".ktcluster-job/search.yaml" in names
    assert not any(n.startswith(".git/") for n in names) and "big.npz" not in names
    assert package.size_bytes == (tmp_path / "p.zip").stat().st_size
    alone = job_package.build_package(
        None, {"search.yaml": b"x"}, tmp_path / "q.zip", max_bytes=10**6
    )
    assert zipfile.ZipFile(alone.path).namelist() == [".ktcluster-job/search.yaml"]


def test_too_big_package_names_the_limit_and_the_fix(tmp_path: Path) -> None:
    import os

    project = tmp_path / "project"
    project.mkdir()
    (project / "data.bin").write_bytes(os.urandom(300_000))
    with pytest.raises(
        ConfigError,
        match=r"ray.working_dir .*project: the job's package is 0\.3 MiB zipped; expected less "
        r"than 0\.2 MiB, the most Ray's Jobs API accepts.*Largest entries: data\.bin.*\.rayignore",
    ):
        job_package.build_package(
            project, {"search.yaml": b""}, tmp_path / "p.zip", max_bytes=200_000
        )
    # Ray 2.60: the dashboard takes request bodies up to 100 MiB, the GCS 512 MiB.
    assert job_package.max_package_bytes() == 100 * 1024**2


def test_states_follow_rays_job_status() -> None:
    assert {s.value for s in jobs.JobState} == {
        "starting",
        "running",
        "finished",
        "failed",
        "stopped",
    }
    assert not jobs.JobState.RUNNING.is_terminal and jobs.JobState.STOPPED.is_terminal


def test_only_a_remote_head_detaches(tmp_path: Path) -> None:
    assert detaches(parse_cluster(_cluster()))
    for address in ("local", "auto"):
        assert not detaches(parse_cluster(_cluster(ray={"address": address})))
    # A remote head with no job server named: the chief runs here, as before.
    assert not detaches(parse_cluster(_cluster(ray={"address": "10.0.0.1:6379"})))


def _args(search: Path, cluster: Path, **extra: object) -> argparse.Namespace:
    base = {
        "search": str(search),
        "cluster": str(cluster),
        "dir": None,
        "metrics_port": None,
        "on_interrupt": "requeue",
        "workers": None,
    }
    return argparse.Namespace(**{**base, **extra})


def test_detached_submit_refuses_foreground_options_before_dialling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    search = tmp_path / "search.yaml"
    search.write_text(
        yaml.safe_dump({"name": "s", "hypermodel": "sleep", "objective": "val_accuracy"})
    )
    cluster = tmp_path / "cluster.yaml"
    ray = {"address": "10.0.0.1:6379", "dashboard": "127.0.0.1:1"}  # nothing listens
    cluster.write_text(yaml.safe_dump(_cluster(ray=ray)))
    with pytest.raises(ConfigError, match=r"--dir d: a search submitted to a remote cluster"):
        submit_detached(_args(search, cluster, dir="d"))
    # No job server named: the chief runs in the foreground (None), --dir and all.
    headless = tmp_path / "headless.yaml"
    headless.write_text(yaml.safe_dump(_cluster(ray={"address": "10.0.0.1:6379"})))
    assert submit_detached(_args(search, headless, dir="d")) is None
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump(_cluster(ray={"address": "local"})))
    assert submit_detached(_args(search, local)) is None


def test_remote_working_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    search = tmp_path / "search.yaml"
    search.write_text(
        yaml.safe_dump({"name": "s", "hypermodel": "sleep", "objective": "val_accuracy"})
    )
    cluster = tmp_path / "cluster.yaml"
    ray = {"address": "10.0.0.1:6379", "dashboard": "127.0.0.1:1", "working_dir": "s3://b/c.zip"}
    cluster.write_text(yaml.safe_dump(_cluster(ray=ray)))
    with pytest.raises(ConfigError, match=r"ray.working_dir 's3://b/c.zip': a remote URI"):
        submit_detached(_args(search, cluster))


def test_worker_actor_names_and_the_newest_process() -> None:
    from orchestrator.worker_logs import _NAME, WorkerProcess, latest_process

    match = _NAME.match("ktc-0123abcd-a1b2c3-gpu-b-w2-3")
    assert match is not None and match["worker"] == "gpu-b-w2" and match["incarnation"] == "3"
    assert _NAME.match("JobSupervisor") is None
    processes = [
        WorkerProcess("a-w0", 1, "x1", "DEAD", 10, "n"),
        WorkerProcess("a-w0", 2, "x2", "ALIVE", 11, "n"),
        WorkerProcess("a-w1", 1, "x3", "ALIVE", 12, "n"),
    ]
    assert latest_process(processes, "a-w0", "s-1").actor_id == "x2"
    # An argument that names no worker: bad input (exit 2), listing the known ones.
    with pytest.raises(
        ConfigError, match=r"--worker b-w0: search s-1 has no such worker; .*\(a-w0, a-w1\)"
    ):
        latest_process(processes, "b-w0", "s-1")


def test_list_durations_read_at_a_glance() -> None:
    from orchestrator.cli.list_cmd import _duration

    assert [_duration(s) for s in (None, 5, 600, 3 * 3600, 3 * 86400)] == [
        "-",
        "5s",
        "10m",
        "3.0h",
        "3.0d",
    ]


def test_submit_attach_stays_in_the_foreground_on_a_remote_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.cli import submit_job
    from orchestrator.cli.main import build_parser
    from orchestrator.config import preflight

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    # submit hides GPUs from its own process first: restored after the test.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(_cluster()))

    class Foreground(Exception):
        pass

    def foreground(*args: object, **kwargs: object) -> None:
        raise Foreground

    def detached(args: argparse.Namespace) -> int:
        raise AssertionError("--attach must not submit a job")

    monkeypatch.setattr(preflight, "plan_submit", foreground)
    monkeypatch.setattr(submit_job, "submit_detached", detached)
    args = build_parser().parse_args(["submit", "s.yaml", "--cluster", str(cluster), "--attach"])
    with pytest.raises(Foreground):
        args.func(args)


def test_helper_jobs_are_deleted_and_earlier_ones_ray_brought_back_are_swept() -> None:
    """A helper job (a verb, the version check) is deleted once it ended. One
    deleted too early comes back as FAILED (Ray's job monitor rewrites its
    status); the next helper deletes those that ended a while ago, and nothing
    else: not a search, not a running helper, not one that just ended."""
    import time
    from types import SimpleNamespace

    from ray.job_submission import JobStatus

    now_ms = time.time() * 1000
    old_ms = now_ms - (head_jobs.HELPER_SWEEP_AFTER_S + 5) * 1000

    def job(job_id: str, status: JobStatus, end_ms: float | None, **meta: str) -> object:
        return SimpleNamespace(
            submission_id=job_id, status=status, end_time=end_ms, start_time=old_ms, metadata=meta
        )

    helper = {head_jobs.META_CHECK: "verb"}
    table = {
        # Brought back by Ray: no metadata left, its id tells.
        "ktc-verb-back": job("ktc-verb-back", JobStatus.FAILED, old_ms),
        "ktc-check-over": job("ktc-check-over", JobStatus.SUCCEEDED, old_ms, **helper),
        "ktc-verb-just-over": job("ktc-verb-just-over", JobStatus.SUCCEEDED, now_ms, **helper),
        "ktc-verb-running": job("ktc-verb-running", JobStatus.RUNNING, None, **helper),
        "digits-20261130-101010": job(
            "digits-20261130-101010", JobStatus.FAILED, old_ms, **{jobs.META_SEARCH: "digits"}
        ),
    }

    class FakeJobs:
        deleted: list[str] = []

        def submit_job(self, *, submission_id: str, **_: object) -> str:
            table[submission_id] = job(submission_id, JobStatus.SUCCEEDED, now_ms, **helper)
            return submission_id

        def get_job_status(self, job_id: str) -> JobStatus:
            return table[job_id].status  # type: ignore[attr-defined, no-any-return]

        def get_job_info(self, job_id: str) -> object:
            return table[job_id]

        def get_job_logs(self, job_id: str) -> str:
            return 'ktcluster-remote-answer {"code": 0, "stdout": "ok", "stderr": "", "files": {}}'

        def list_jobs(self) -> list[object]:
            return list(table.values())

        def delete_job(self, job_id: str) -> bool:
            self.deleted.append(job_id)
            del table[job_id]
            return True

    fake = FakeJobs()
    client = jobs.ClusterJobs(fake, "http://127.0.0.1:8265", "2.60.0")
    answer = client.run_on_head("python -m orchestrator.remote_verbs x", what="ktc status x")
    assert answer.code == 0 and answer.stdout == "ok"
    ran = next(d for d in fake.deleted if d.startswith("ktc-verb-2"))
    assert fake.deleted == [ran, "ktc-verb-back", "ktc-check-over"]
    assert sorted(table) == ["digits-20261130-101010", "ktc-verb-just-over", "ktc-verb-running"]


def test_a_jobs_end_in_one_line() -> None:
    """U4: Ray's message for a dead driver carries the job's log tail (up to 20,000
    characters); the reason shown is its first line and the last error line."""
    tail = "\n".join(f"line {i}" for i in range(3000))
    message = (
        "Job entrypoint command failed with exit code -9, last available logs (truncated to "
        f"20,000 chars):\n{tail}\nValueError: bad thing\nINFO shutting down\n"
    )
    assert jobs.end_reason(message) == (
        "Job entrypoint command failed with exit code -9: ValueError: bad thing"
    )
    assert jobs.end_reason("Job was intentionally stopped.") == "Job was intentionally stopped."
    assert jobs.end_reason("") == "no reason given"
    assert len(jobs.end_reason("x" * 5000)) == jobs.MAX_REASON_CHARS


def _local_search(tmp_path: Path) -> Path:
    search_dir = tmp_path / "run"
    (search_dir / "logs").mkdir(parents=True)
    (search_dir / "ledger.db").write_bytes(b"")
    (search_dir / "chief.log").write_text("search directory: run\nsearch completed\n")
    (search_dir / "logs" / "worker-local-w0.log").write_text("trial 0 attempt 1: ended COMPLETED\n")
    return search_dir


def test_logs_of_a_local_search_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """U7: `ktc logs DIR` prints DIR/chief.log (--follow too, here with no live chief)
    and says where the workers' logs are; --worker prints one; an unknown worker is
    bad input (exit 2) naming the known ones."""
    from orchestrator.cli.main import main

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no cluster known
    monkeypatch.chdir(tmp_path)
    _local_search(tmp_path)
    for follow in ([], ["--follow"]):
        assert main(["logs", "run", *follow]) == 0
        out, err = capsys.readouterr()
        assert out == "search directory: run\nsearch completed\n"
        assert "run/logs/worker-*.log" in err and "local-w0" in err, err
    assert main(["logs", "run", "--worker", "local-w0"]) == 0
    assert capsys.readouterr().out == "trial 0 attempt 1: ended COMPLETED\n"
    assert main(["logs", "run", "--worker", "w7"]) == 2
    err = capsys.readouterr().err
    assert "--worker w7: search run has no log of such a worker here; expected one of " in err
    assert "(local-w0)" in err
    # Neither a directory nor an id with a cluster to look it up on.
    assert main(["logs", "run-20261130-120000"]) == 2
    assert "`ktc use CLUSTER.yaml`" in capsys.readouterr().err
