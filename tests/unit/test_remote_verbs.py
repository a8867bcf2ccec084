"""The verbs on a search that lives on the cluster (``orchestrator/remote_verbs.py``):
what travels to the head and back, and when a verb goes there at all. The round
trip through a real head's Jobs API is in ``tests/e2e/test_ray_jobs.py``."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import pytest

from orchestrator.errors import KtClusterError
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
    assert remote_search_id(args) is None  # no cluster remembered: a local path, as before
    remember_cluster(REPO / "configs" / "local.yaml", {"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert remote_search_id(args) == "digits-cnn-20261130-120000"
    (tmp_path / "digits-cnn-20261130-120000").mkdir()
    assert remote_search_id(args) is None  # a folder here wins
    for odd in ("../etc", "a/b", "-rf", ""):
        assert remote_search_id(argparse.Namespace(verb="status", search_dir=Path(odd))) is None
    assert remote_search_id(argparse.Namespace(verb="space", target=Path("x"))) is None


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
