"""The verbs on a search that lives on the cluster (``orchestrator/remote_verbs.py``):
what travels to the head and back, and when a verb goes there at all. The round
trip through a real head's Jobs API is in ``tests/e2e/test_ray_jobs.py``."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import pytest

from orchestrator.errors import KtClusterError, SearchDirError
from orchestrator.remote_verbs import (
    ANSWER_MARK,
    TMP,
    Answer,
    Request,
    _extract_one,
    _extract_tree,
    _replace_value,
    commands_by_id,
    remote_search_id,
    serve,
)

REPO = Path(__file__).resolve().parents[2]


def test_a_request_round_trips() -> None:
    request = Request(
        ["scale", "/s/x", "--apply", f"{TMP}/a.yaml"], {"a.yaml": b"\x00yaml"}, ["p"], 99
    )
    assert Request.decode(request.encode()) == request


def test_the_head_runs_ktc_with_files_in_and_out(tmp_path: Path) -> None:
    cluster = (REPO / "configs" / "local.yaml").read_bytes()
    answer = serve(
        Request(["validate", f"{TMP}/c.yaml"], {"c.yaml": cluster}, [f"{TMP}/c.yaml"], 120)
    )
    assert answer.code == 0, answer.stderr
    assert "valid cluster file" in answer.stdout
    # What the head sends back is written here as it was there.
    _extract_one(answer.files[f"{TMP}/c.yaml"], tmp_path / "back.yaml")
    assert (tmp_path / "back.yaml").read_bytes() == cluster


def test_the_heads_errors_keep_their_exit_code_and_message() -> None:
    answer = serve(Request(["status", "/no/such/search"], {}, [], 120))
    assert answer.code == 2
    assert answer.stderr.startswith("error: ") and "/no/such/search" in answer.stderr
    # A request naming a file name with a path keeps it in the head's temporary folder.
    answer = serve(Request(["validate", f"{TMP}/x.yaml"], {"../../x.yaml": b"kind: nope"}, [], 80))
    assert answer.code == 2 and "x.yaml" in answer.stderr


def test_the_answer_is_found_among_the_jobs_other_lines() -> None:
    answer = Answer(3, "out\n", "err\n", {"f": b"\x01"})
    logs = f"ray noise\n{ANSWER_MARK}{answer.encode()}\nmore noise\n"
    assert Answer.from_logs(logs, what="ktc status x") == answer
    with pytest.raises(KtClusterError, match="(?s)printed no answer.*Traceback: boom"):
        Answer.from_logs("starting\nTraceback: boom\n", what="ktc status x")


def test_local_files_in_the_arguments_are_replaced() -> None:
    assert _replace_value(["x", "--out", "a.keras", "--rank", "2"], "--out", "T") == [
        "x",
        "--out",
        "T",
        "--rank",
        "2",
    ]
    assert _replace_value(["--out=a.keras"], "--out", "T") == ["--out=T"]


def test_a_verb_goes_to_the_cluster_only_for_a_search_id_with_a_cluster_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.config.user_settings import remember_cluster

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(verb="status", search_dir=Path("digits-cnn-20261130-120000"))
    # An id with no cluster to look it up on: bad input naming both ways to give one.
    with pytest.raises(
        SearchDirError,
        match=r"digits-cnn-20261130-120000: neither a search directory here nor a search id "
        r"with a cluster.*Pass --cluster CLUSTER\.yaml, or run `ktc use CLUSTER\.yaml` once",
    ):
        remote_search_id(args)
    # --cluster names the cluster, for every verb that takes a search (B3).
    for verb in ("status", "results", "report", "export", "evaluate", "scale", "cancel", "logs"):
        explicit = argparse.Namespace(verb=verb, search_dir=Path("x-1"), cluster="lab.yaml")
        if verb == "logs":
            explicit = argparse.Namespace(verb=verb, search_id=Path("x-1"), cluster="lab.yaml")
        assert remote_search_id(explicit) == "x-1", verb
    resume = argparse.Namespace(verb="resume", dir=Path("x-1"), cluster="lab.yaml")
    assert remote_search_id(resume) == "x-1"
    remember_cluster(REPO / "configs" / "local.yaml", {"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert remote_search_id(args) == "digits-cnn-20261130-120000"
    (tmp_path / "digits-cnn-20261130-120000").mkdir()
    assert remote_search_id(args) is None  # a folder here wins
    for odd in ("../etc", "a/b", "-rf", "", "gridrun", "searches/digits-cnn-20261130-120000"):
        # A path, or no id's shape: a search directory to the verb, never the cluster's.
        assert remote_search_id(argparse.Namespace(verb="status", search_dir=Path(odd))) is None
    assert remote_search_id(argparse.Namespace(verb="space", target=Path("x"))) is None


def test_every_verb_that_takes_a_search_takes_cluster(tmp_path: Path) -> None:
    """B3: the follow-up commands `ktc submit` prints (`ktc status ID --cluster F`) parse,
    for every verb that takes a search id, from one definition."""
    from orchestrator.cli.main import build_parser

    parser = build_parser()
    for verb in ("status", "results", "report", "evaluate", "scale", "cancel", "resume", "logs"):
        args = parser.parse_args([verb, "s-20261130-120000", "--cluster", "../lab.yaml"])
        assert args.cluster == "../lab.yaml", verb
    args = parser.parse_args(["export", "s-1", "--out", "b.keras", "--cluster", "lab.yaml"])
    assert args.cluster == "lab.yaml"


def test_a_path_that_is_no_search_says_so_with_a_cluster_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """D2: `ktc status gridrun` before gridrun exists, with a cluster remembered whose
    dashboard does not answer: "not a search directory", not a connection error."""
    from orchestrator.cli.main import main
    from orchestrator.config.user_settings import remember_cluster

    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.chdir(tmp_path)
    cluster = tmp_path / "lab.yaml"
    cluster.write_text(
        "kind: cluster\nname: lab\nray: {address: '10.0.0.1:6379', dashboard: '127.0.0.1:1'}\n"
        "nodes: [{name: a, host: 10.0.0.1, cpus: 2}]\n"
    )
    remember_cluster(cluster, {"XDG_CONFIG_HOME": str(config)})
    for target in ("gridrun", "runs/gridrun"):
        assert main(["status", target]) == 2
        err = capsys.readouterr().err
        assert f"{target}: not a search directory" in err, err
        assert "dashboard" not in err


def test_the_head_summarises_several_searches_at_once(tmp_path: Path) -> None:
    """What `ktc list` asks: each search's progress, or why it has none."""
    import json

    from orchestrator.remote_verbs import summaries_request

    answer = serve(summaries_request([str(tmp_path / "nosuch")]))
    assert answer.code == 0
    summary = json.loads(answer.stdout)[str(tmp_path / "nosuch")]
    assert "error" in summary and "nosuch" in summary["error"]


def test_the_heads_advice_names_the_search_by_id_here() -> None:
    head_dir = "/mnt/ktc/runs/digits-20261130-101010"
    text = (
        f"every result is kept; continue with `ktc resume {head_dir}`\n"
        f"watch the fleet with `ktc status {head_dir} --watch`\n"
        f"the ledger: {head_dir}/ledger.db\n"
        f"`ktc status {head_dir}-r1` is another search\n"
    )
    here = commands_by_id(text, head_dir, "digits-20261130-101010")
    assert here.splitlines() == [
        "every result is kept; continue with `ktc resume digits-20261130-101010`",
        "watch the fleet with `ktc status digits-20261130-101010 --watch`",
        f"the ledger: {head_dir}/ledger.db",  # a path on the head, not a command
        f"`ktc status {head_dir}-r1` is another search",
    ]


def _tar(*members: tuple[str, bytes | None, bytes]) -> bytes:
    """A tar.gz of (name, file content or None for a symlink, link target)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content, target in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.linkname = tarfile.SYMTYPE, target.decode()
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.mark.parametrize("with_data_filter", [True, False])
def test_a_folder_from_the_head_is_written_only_inside_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_data_filter: bool
) -> None:
    """The head's answer is untrusted input: the report folder it sends is written
    under its target only, on a Python with tarfile's data filter or without."""
    import tarfile

    if not with_data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    good = _tar(("report/index.html", b"<html>", b""), ("report/a.png", b"png", b""))
    _extract_tree(good, tmp_path / "here")
    assert (tmp_path / "here" / "report" / "index.html").read_bytes() == b"<html>"
    for bad in (
        _tar(("../escaped.txt", b"x", b"")),
        _tar(("report/link", None, b"/etc/passwd")),
    ):
        with pytest.raises((KtClusterError, tarfile.TarError)):
            _extract_tree(bad, tmp_path / "there")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "there" / "report" / "link").exists()
    # An absolute name: refused, or (the data filter) made relative to the target.
    outside = tmp_path / "absolute.txt"
    with contextlib.suppress(KtClusterError):
        _extract_tree(_tar((str(outside), b"x", b"")), tmp_path / "there")
    assert not outside.exists()


def test_status_of_a_search_whose_chief_has_not_started_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ktc status ID` right after a detached submit: the head has no directory
    yet (the verb there exits 2); while the chief's job runs, that is "not
    started yet" (exit 1), and --watch waits for it instead."""
    from types import SimpleNamespace

    from orchestrator import remote_verbs
    from orchestrator.jobs import JobState

    monkeypatch.setattr(remote_verbs, "WATCH_INTERVAL_S", 0.0)
    missing = Answer(2, "", "error: /srv/ktc/s-1: not a search directory (no ledger.db)\n", {})
    job = SimpleNamespace(
        search_id="s-1",
        search_dir="/srv/ktc/s-1",
        state=JobState.STARTING,
        job_id="s-1",
        message="",
    )

    class Jobs:
        def __init__(self, answers: list[Answer]) -> None:
            self.answers = answers

        def run_on_head(self, entrypoint: str, *, what: str) -> Answer:
            return self.answers.pop(0)

        def search(self, search_id: str) -> object:
            return job

    request = Request(["status", "/srv/ktc/s-1", "--json"])
    args = argparse.Namespace(json=True, watch=False)
    assert remote_verbs._status(Jobs([missing]), job, request, args) == 1
    err = capsys.readouterr().err
    assert "search s-1 has not started yet: its chief's job is starting" in err
    assert "`ktc logs s-1 --follow`" in err
    # --watch: it asks again until the directory is there.
    doc = {"state": "completed"}
    monkeypatch.setattr(
        "orchestrator.protocol.status_document.StatusDocument.from_json",
        classmethod(lambda cls, data: SimpleNamespace(state=SimpleNamespace(is_terminal=True),
                                                      to_json=lambda: data)),
    )  # fmt: skip
    found = Answer(0, json.dumps(doc), "", {})
    watch = argparse.Namespace(json=True, watch=True)
    assert remote_verbs._status(Jobs([missing, missing, found]), job, request, watch) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "completed"
    # Once the job ended without a directory, the head's own error stands (exit 2).
    job.state = JobState.FAILED
    assert remote_verbs._status(Jobs([missing]), job, request, args) == 2
    assert "not a search directory" in capsys.readouterr().err


def _document(state: str, message: str, running: int) -> dict[str, object]:
    from orchestrator.protocol.status_document import StatusDocument
    from orchestrator.protocol.trials import SearchState, TrialStatus

    return StatusDocument(
        state=SearchState(state),
        message=message,
        search_dir=Path("/srv/ktc/s-20261130-120000"),
        search_id="abc",
        objective="val_accuracy",
        direction="max",
        max_trials=4,
        counts={TrialStatus.RUNNING: running, TrialStatus.COMPLETED: 1},
    ).to_json()


class _FakeJobs:
    """The Jobs API of a cluster whose search's job ended (a fake: answers in order)."""

    def __init__(self, job: object, answers: list[Answer]) -> None:
        self.job = job
        self.answers = answers
        self.asked: list[str] = []
        self.resumed = False

    def run_on_head(self, entrypoint: str, *, what: str) -> Answer:
        self.asked.append(entrypoint)
        return self.answers.pop(0)

    def search(self, search_id: str) -> object:
        return self.job

    def resume_search(self, **kwargs: object) -> object:
        self.resumed = True
        return self.job


def _dead_job(message: str) -> object:
    from types import SimpleNamespace

    from orchestrator.jobs import JobState, end_reason

    return SimpleNamespace(
        search_id="s-20261130-120000",
        search_dir="/srv/ktc/s-20261130-120000",
        state=JobState.FAILED,
        job_id="s-20261130-120000",
        message=message,
        end_reason=end_reason(message),
    )


def test_status_of_a_search_whose_chief_died_names_it_by_id_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """U4: the head's `ktc resume <its directory>` becomes the id; Ray's 20,000
    characters of log tail become one line and where the whole log is; the trials
    that were in flight show as to re-run on resume, not running."""
    from orchestrator import remote_verbs

    tail = "\n".join(f"trial {i} epoch 1 done" for i in range(2000))
    message = (
        "Job entrypoint command failed with exit code -9, last available logs (truncated "
        f"to 20,000 chars):\n{tail}\nRuntimeError: the worker pool broke\nbye\n"
    )
    job = _dead_job(message)
    head_message = (
        "no live chief; the search stopped without finishing (last: running). Continue it "
        "with `ktc resume /srv/ktc/s-20261130-120000`"
    )
    answer = Answer(0, json.dumps(_document("interrupted", head_message, 2)), "", {})
    request = Request(["status", "/srv/ktc/s-20261130-120000", "--json"])
    args = argparse.Namespace(json=False, watch=False)
    assert remote_verbs._status(_FakeJobs(job, [answer]), job, request, args) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps at its width
    assert "ktc resume /srv/ktc" not in out, out
    assert "Continue it with `ktc resume s-20261130-120000`" in out, out
    assert out[out.index("chief's job:") :] == (
        "chief's job: s-20261130-120000 failed (Job entrypoint command failed with exit code "
        "-9: RuntimeError: the worker pool broke; its full log: `ktc logs s-20261130-120000`); "
        "the search did not end: `ktc resume s-20261130-120000` submits its chief again"
    )
    assert len(out) < 1000, out
    assert "2 interrupted (to re-run on resume)" in out and "2 running" not in out, out


def test_list_shows_trials_in_flight_with_no_chief_as_interrupted() -> None:
    from orchestrator.cli.list_cmd import _trials_and_best

    summary = {"completed": 1, "running": 2, "max_trials": 4, "objective": "acc", "best": 0.5}
    assert _trials_and_best({**summary, "state": "running"})[0] == "1/4 (2 running)"
    assert _trials_and_best({**summary, "state": "interrupted"})[0] == "1/4 (2 interrupted)"


def test_resume_of_a_completed_search_is_refused_before_anything_is_submitted() -> None:
    """B4: as a local resume refuses it (exit 2, the same words), and no job is submitted."""
    from orchestrator import remote_verbs
    from orchestrator.cli.main import exit_code
    from orchestrator.errors import NothingToResumeError

    job = _dead_job("")
    job.state = __import__("orchestrator.jobs", fromlist=["JobState"]).JobState.FINISHED  # type: ignore[attr-defined]
    jobs = _FakeJobs(job, [Answer(0, json.dumps(_document("completed", "done", 0)), "", {})])
    cluster = argparse.Namespace(name="lab", ray=argparse.Namespace(working_dir=None))
    with pytest.raises(
        NothingToResumeError,
        match=r"^s-20261130-120000: the search already completed; nothing to resume\. See the "
        r"results with `ktc results s-20261130-120000`\.$",
    ) as refused:
        remote_verbs._resume(jobs, cluster, job, argparse.Namespace(workers=None))
    assert exit_code(refused.value) == 2
    assert not jobs.resumed
    # An interrupted one is resumed.
    jobs = _FakeJobs(job, [Answer(0, json.dumps(_document("interrupted", "", 1)), "", {})])
    assert remote_verbs._resume(jobs, cluster, job, argparse.Namespace(workers=None)) == 0
    assert jobs.resumed


def test_the_verb_runs_in_the_searchs_kept_code_never_the_heads_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B2: `module:attr` imports from the code the search's job kept, whatever the
    head's working directory holds; with no code kept, nothing else is imported."""
    import sys

    from orchestrator.search_code import CODE_DIR, keep_code

    module = "kept_models_b2"
    project = tmp_path / "shipped"
    project.mkdir()
    (project / f"{module}.py").write_text("def build_model(hp):\n    return None\n")
    search_dir = tmp_path / "storage" / "s-20261130-120000"
    search_dir.parent.mkdir()
    code = keep_code(project, search_dir)
    assert code == search_dir / CODE_DIR and (code / f"{module}.py").is_file()
    (project / f"{module}.py").write_text("raise ImportError('changed since')\n")
    assert keep_code(project, search_dir) == code  # kept once: a resume keeps the first
    # The head's own folder holds another module of that name.
    head_cwd = tmp_path / "head"
    head_cwd.mkdir()
    (head_cwd / f"{module}.py").write_text("raise ImportError('the head s decoy')\n")
    monkeypatch.chdir(head_cwd)
    search = f"kind: search\nname: s\nhypermodel: {module}:build_model\nobjective: val_loss\n"
    files = {"s.yaml": search.encode()}
    try:
        answer = serve(Request(["validate", f"{TMP}/s.yaml"], files, [], 120, str(code)))
        assert answer.code == 0, answer.stderr
        assert Path(sys.modules[module].__file__ or "").parent == code
        del sys.modules[module]
        missing = str(tmp_path / "storage" / "old-20261130-120000" / CODE_DIR)
        answer = serve(Request(["validate", f"{TMP}/s.yaml"], files, [], 120, missing))
        assert answer.code == 2
        assert f"cannot import module '{module}'" in answer.stderr, answer.stderr
        assert "decoy" not in answer.stderr
        assert f"this search's code is not kept on the head ({missing} is missing" in answer.stderr
    finally:
        sys.modules.pop(module, None)
    assert Path.cwd() == head_cwd
