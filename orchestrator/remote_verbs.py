"""The verbs on a search that lives on the cluster: ``ktc status ID`` from the user's machine.

A search submitted as a Ray job (``orchestrator/jobs.py``) keeps its directory on
the head, under the cluster's ``storage``. When a verb's DIR is not a folder on
this machine but a search id, and a cluster file is known (``ktc use``), the
verb runs **on the head, as a short Ray job**, through the same channel as the
submit: the cluster's Jobs API with Ray's token. No SSH, and the search token
and ledger never leave the head.

- **Here** (:func:`run_remote`): the verb's own arguments are forwarded with the
  search id replaced by its directory on the head; a file the verb reads here
  (``scale --apply FILE``) travels in the request, and a file or folder it
  writes (``export --out``, ``report``'s folder) comes back in the answer and
  is written here. ``status`` is asked for its JSON document and rendered here
  by the same code as a local one, with the state of the chief's job beside it
  (a chief whose job ended while the search ran is named, with the resume
  command). ``resume`` submits the chief's next job instead
  (:meth:`~orchestrator.jobs.ClusterJobs.resume_search`).
- **On the head** (``python -m orchestrator.remote_verbs REQUEST``): runs
  ``ktc`` in-process with its output captured, and prints one line, the
  answer: exit code, stdout, stderr and the files, as JSON after
  :data:`ANSWER_MARK`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import shlex
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import KtClusterError, NotFoundError, SearchDirError

ANSWER_MARK = "ktcluster-remote-answer "
# The verbs that take a search directory and can run on the head instead.
REMOTE_VERBS = ("status", "results", "report", "export", "evaluate", "scale", "cancel", "resume")
# Any Ray submission id a search may have (a KubeRay RayJob's may be the user's name).
SEARCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A search id as `ktc submit` prints it: <name>-<YYYYmmdd-HHMMSS>, then -<n> for a
# second search in the same second (orchestrator/jobs.py) or KubeRay's job suffix.
SUBMITTED_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,110}-\d{8}-\d{6}(?:-[a-z0-9]{1,8})?")
MAX_ANSWER_BYTES = 512 * 1024 * 1024  # the largest folder or file a verb brings back
HEAD_VERB_TIMEOUT_S = 900.0
WATCH_INTERVAL_S = 2.0
TMP = "{tmp}"  # in a request: the head's temporary folder for this verb
SUMMARIES = "--summaries"  # a request for several searches' progress at once (`ktc list`)


@dataclass(frozen=True)
class Request:
    """What the head runs: ``ktc ARGV`` with files in and out (paths may use ``{tmp}``)."""

    argv: list[str]
    files_in: dict[str, bytes] = field(default_factory=dict)  # name in {tmp} -> content
    collect: list[str] = field(default_factory=list)  # paths to bring back
    columns: int = 160
    # The search's own code on the head (orchestrator/search_code.py): the verb runs
    # there, so `module:attr` imports the code the search ran with, never the head's.
    code_dir: str | None = None

    def encode(self) -> str:
        data = {
            "argv": self.argv,
            "files_in": {k: base64.b64encode(v).decode() for k, v in self.files_in.items()},
            "collect": self.collect,
            "columns": self.columns,
            "code_dir": self.code_dir,
        }
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()

    @classmethod
    def decode(cls, text: str) -> Request:
        data = json.loads(base64.urlsafe_b64decode(text.encode()))
        return cls(
            argv=[str(a) for a in data["argv"]],
            files_in={str(k): base64.b64decode(v) for k, v in data["files_in"].items()},
            collect=[str(p) for p in data["collect"]],
            columns=int(data["columns"]),
            code_dir=data.get("code_dir"),
        )


@dataclass(frozen=True)
class Answer:
    """What the verb did on the head."""

    code: int
    stdout: str
    stderr: str
    files: dict[str, bytes]  # collected path -> a tar.gz of it (None-free: missing ones absent)

    def encode(self) -> str:
        return json.dumps(
            {
                "code": self.code,
                "stdout": self.stdout,
                "stderr": self.stderr,
                "files": {k: base64.b64encode(v).decode() for k, v in self.files.items()},
            }
        )

    @classmethod
    def from_logs(cls, logs: str, *, what: str) -> Answer:
        for line in reversed(logs.splitlines()):
            if line.startswith(ANSWER_MARK):
                data = json.loads(line[len(ANSWER_MARK) :])
                return cls(
                    code=int(data["code"]),
                    stdout=str(data["stdout"]),
                    stderr=str(data["stderr"]),
                    files={str(k): base64.b64decode(v) for k, v in data["files"].items()},
                )
        tail = "\n".join(logs.strip().splitlines()[-8:])
        raise KtClusterError(
            f"{what}: the head printed no answer; expected ktcluster's remote runner to "
            f"finish. Its output ends:\n{tail}"
        )


# ------------------------------------------------------------------- here


def remote_search_id(args: argparse.Namespace) -> str | None:
    """The search id this verb names, when it should run on the cluster; else None.

    The one resolver of ``DIR | ID`` (``orchestrator/cli/search_arg.py``). The
    argument is a search id when it is no path here (no ``/``, nothing of that
    name in this folder) and has an id's shape: any job id with ``--cluster``,
    the shape ``ktc submit`` prints (``<name>-<YYYYmmdd-HHMMSS>``) with the
    cluster ``ktc use`` remembered. Anything else is a search directory, and
    the verb says so if it is not one. An id with no cluster known is bad
    input (SearchDirError) naming both ways to give one.
    """
    if getattr(args, "verb", None) not in (*REMOTE_VERBS, "logs"):
        return None
    target = _target(args)
    if target is None:
        return None
    text = str(target)
    if "/" in text or Path(text).exists() or not SEARCH_ID.fullmatch(text) or ".." in text:
        return None
    from orchestrator.config.user_settings import cluster_file_for

    if getattr(args, "cluster", None):
        return text
    if not SUBMITTED_ID.fullmatch(text):
        return None
    if cluster_file_for(None, os.environ) is None:
        raise SearchDirError(
            f"{text}: neither a search directory here nor a search id with a cluster to look "
            "it up on; expected a search directory, or the id `ktc submit` printed with its "
            "cluster file. Pass --cluster CLUSTER.yaml, or run `ktc use CLUSTER.yaml` once."
        )
    return text


def _target(args: argparse.Namespace) -> object | None:
    """The verb's ``DIR | ID`` argument, whatever its parser named it."""
    for name in ("search_dir", "dir", "search_id"):
        value = getattr(args, name, None)
        if value is not None:
            return value
    return None


def run_remote(args: argparse.Namespace, argv: Sequence[str], search_id: str) -> int:
    """Run the verb on the head for ``search_id``; returns its exit code."""
    from orchestrator.config.loader import load_cluster
    from orchestrator.jobs import ClusterJobs, cluster_file_of

    env = dict(os.environ)
    cluster = load_cluster(cluster_file_of(getattr(args, "cluster", None), env))
    jobs = ClusterJobs.connect(cluster, env)
    try:
        job = jobs.search(search_id)
    except NotFoundError:
        # Bad input (exit 2), as a local DIR that is not a search directory.
        raise SearchDirError(
            f"{search_id}: neither a search directory here nor a search on cluster "
            f"{cluster.name!r} ({jobs.url}); expected a search id that `ktc list` shows, or "
            "a local search directory. Check the id with `ktc list`."
        ) from None
    if args.verb == "resume":
        return _resume(jobs, cluster, job, args)
    verb_args = _verb_args(argv, args.verb)
    request = _request(args, verb_args, search_id, job.search_dir, cluster)
    if args.verb == "status":
        return _status(jobs, job, request, args)
    answer = jobs.run_on_head(verb_entrypoint(request), what=f"ktc {args.verb} {search_id}")
    _write_back(args, answer, job.search_dir, search_id)
    return answer.code


def _verb_args(argv: Sequence[str], verb: str) -> list[str]:
    """The verb's own arguments (after the verb: global flags stay here)."""
    argv = list(argv)
    return argv[argv.index(verb) + 1 :]


def _request(
    args: argparse.Namespace, verb_args: list[str], search_id: str, head_dir: str, cluster: Any
) -> Request:
    from orchestrator.job_package import job_cluster_text
    from orchestrator.search_code import code_dir_on_head

    # --cluster named the cluster here (a file on this machine), not one on the head.
    forwarded = [head_dir if a == search_id else a for a in _drop_option(verb_args, "--cluster")]
    files_in: dict[str, bytes] = {}
    collect: list[str] = []
    if args.verb == "export":
        forwarded = _replace_value(forwarded, "--out", f"{TMP}/model.keras")
        collect.append(f"{TMP}/model.keras")
    elif args.verb == "evaluate":
        # The evaluation's worker needs the search's code too: the cluster as the
        # search's job sees it, shipping the folder the verb runs in (its code).
        files_in["cluster.yaml"] = job_cluster_text(cluster, search_id, working_dir=".").encode()
        forwarded += ["--cluster", f"{TMP}/cluster.yaml"]
    elif args.verb == "report":
        collect.append(f"{head_dir}/report")
    elif args.verb == "scale" and getattr(args, "apply", None):
        files_in["apply.yaml"] = Path(args.apply).read_bytes()
        forwarded = _replace_value(forwarded, "--apply", f"{TMP}/apply.yaml")
    elif args.verb == "status" and "--json" not in forwarded:
        forwarded.append("--json")
    if args.verb == "status":
        forwarded = [a for a in forwarded if a not in ("--watch", "-w")]
    columns = os.get_terminal_size().columns if sys.stdout.isatty() else 160
    return Request([args.verb, *forwarded], files_in, collect, columns, code_dir_on_head(head_dir))


def _drop_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def _replace_value(argv: list[str], option: str, value: str) -> list[str]:
    out = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == option and i + 1 < len(argv):
            out += [option, value]
            skip = True
        elif arg.startswith(option + "="):
            out.append(f"{option}={value}")
        else:
            out.append(arg)
    return out


def verb_entrypoint(request: Request) -> str:
    return f"python -m orchestrator.remote_verbs {shlex.quote(request.encode())}"


def _write_back(args: argparse.Namespace, answer: Answer, head_dir: str, search_id: str) -> None:
    sys.stdout.write(commands_by_id(answer.stdout, head_dir, search_id))
    sys.stderr.write(commands_by_id(answer.stderr, head_dir, search_id))
    if answer.code != 0:
        return
    if args.verb == "export":
        data = answer.files.get(f"{TMP}/model.keras")
        if data is not None:
            out = Path(args.out)
            _extract_one(data, out)
            print(f"written here: {out}")
    elif args.verb == "report":
        data = answer.files.get(f"{head_dir}/report")
        if data is not None:
            target = Path(f"{search_id}-report")
            _extract_tree(data, target)
            print(f"written here: {target / 'index.html'}")


def commands_by_id(text: str, head_dir: str, search_id: str) -> str:
    """The head's advice, for this machine: ``ktc resume /storage/ID`` becomes
    ``ktc resume ID`` (the directory exists on the head only)."""
    pattern = re.compile(rf"(\bktc [a-z]+ ){re.escape(head_dir)}(?![\w./-])")
    return pattern.sub(lambda m: m.group(1) + search_id, text)


def _status(jobs: Any, job: Any, request: Request, args: argparse.Namespace) -> int:
    from orchestrator.cli.main import EXIT_BAD_INPUT
    from orchestrator.cli.render import make_console, render_status
    from orchestrator.protocol.status_document import StatusDocument

    console = make_console()
    while True:
        answer = jobs.run_on_head(verb_entrypoint(request), what=f"ktc status {job.search_id}")
        if answer.code == EXIT_BAD_INPUT:  # e.g. DIR: not a search directory (yet)
            job = jobs.search(job.search_id)
            if not job.state.is_terminal:
                # Submitted, and its chief has not made its directory yet.
                if getattr(args, "watch", False):
                    time.sleep(WATCH_INTERVAL_S)
                    continue
                sys.stderr.write(
                    f"error: search {job.search_id} has not started yet: its chief's job is "
                    f"{job.state.value} and has not opened its search directory; try again in "
                    f"a few seconds (`ktc logs {job.search_id} --follow` shows its output)\n"
                )
                return 1
        if answer.code != 0:
            sys.stderr.write(commands_by_id(answer.stderr, job.search_dir, job.search_id))
            return answer.code
        data = json.loads(answer.stdout)
        # The head's advice (`ktc resume <its directory>`) names the search by id here.
        data["message"] = commands_by_id(
            str(data.get("message", "")), job.search_dir, job.search_id
        )
        document = StatusDocument.from_json(data)
        job = jobs.search(job.search_id)
        if args.json:
            print(json.dumps({**document.to_json(), "job": _job_json(job)}))
        else:
            console.print(render_status(document))
            console.print(_job_line(job, document.state.value), markup=False, highlight=False)
        if not getattr(args, "watch", False) or document.state.is_terminal:
            return 0
        time.sleep(WATCH_INTERVAL_S)


def _job_json(job: Any) -> dict[str, Any]:
    return {"id": job.job_id, "state": job.state.value, "message": job.message}


def _job_line(job: Any, search_state: str) -> str:
    """The chief's job in one line; a job that ended mid-search with its reason, in one
    line too (Ray's message holds the job's whole log tail), and the way back."""
    line = f"chief's job: {job.job_id} {job.state.value}"
    if job.state.is_terminal and search_state in ("running", "interrupted"):
        line += (
            f" ({job.end_reason}; its full log: `ktc logs {job.search_id}`); the search did "
            f"not end: `ktc resume {job.search_id}` submits its chief again"
        )
    return line


def _resume(jobs: Any, cluster: Any, job: Any, args: argparse.Namespace) -> int:
    from orchestrator.cli.submit_job import working_dir_of
    from orchestrator.errors import NothingToResumeError

    if job.state.is_terminal:
        # As a local resume refuses it, before anything is submitted: a job that
        # finds nothing to resume would leave the search listed as failed.
        state = _search_state(jobs, job)
        if state == "completed":
            raise NothingToResumeError.completed(job.search_id)
    resumed = jobs.resume_search(
        search_id=job.search_id,
        cluster=cluster,
        working_dir=working_dir_of(cluster),
        workers=getattr(args, "workers", None),
    )
    print(f"resumed search {job.search_id} as job {resumed.job_id} on cluster {cluster.name!r}")
    print(f"  ktc status {job.search_id}          # its state, trials and workers")
    print(f"  ktc logs {job.search_id} --follow   # the chief's output")
    return 0


def _search_state(jobs: Any, job: Any) -> str | None:
    """The search's state as its ledger on the head says (None: it has no ledger yet)."""
    request = Request(["status", job.search_dir, "--json"])
    answer = jobs.run_on_head(verb_entrypoint(request), what=f"ktc status {job.search_id}")
    if answer.code != 0:
        return None
    return str(json.loads(answer.stdout).get("state"))


def _extract_one(data: bytes, out: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.isfile()), None)
        source = tar.extractfile(member) if member is not None else None
        if source is None:
            raise KtClusterError(f"{out}: the head sent no file")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(source.read())


def _extract_tree(data: bytes, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            # The "data" filter refuses absolute paths, links out and device files.
            tar.extractall(target, filter="data")
        else:  # Python before 3.10.12 / 3.11.4: the same refusals, by hand
            tar.extractall(target, members=_plain_members(tar))


def _plain_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Its files and folders, each under the target; KtClusterError for anything else
    (what the ``data`` filter refuses: absolute paths, ``..``, links, devices)."""
    members = []
    for member in tar.getmembers():
        path = Path(member.name)
        if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
            raise KtClusterError(
                f"the head's answer holds {member.name!r}, which is not a plain file or folder "
                "inside the report; nothing of it is written here"
            )
        member.mode &= 0o755 if member.isdir() else 0o644
        members.append(member)
    return members


# ---------------------------------------------------------------- the head


def summaries_request(search_dirs: Sequence[str]) -> Request:
    """Ask the head for the progress of these searches, in one short job."""
    return Request([SUMMARIES, *search_dirs])


def summary_of(search_dir: str) -> dict[str, Any]:
    """One search's progress and best score, as its status document says (on the head)."""
    from orchestrator.protocol.trials import TrialStatus
    from orchestrator.status import status_document

    try:
        doc = status_document(search_dir)
    except KtClusterError as exc:
        return {"error": str(exc)}
    return {
        "state": doc.state.value,
        "completed": int(doc.counts.get(TrialStatus.COMPLETED, 0)),
        "running": int(doc.counts.get(TrialStatus.RUNNING, 0)),
        "failed": int(doc.counts.get(TrialStatus.FAILED, 0)),
        "max_trials": doc.max_trials,
        "objective": doc.objective,
        "best": doc.best.score if doc.best is not None else None,
    }


def serve(request: Request) -> Answer:
    """Run ``ktc`` for ``request`` in this process, its output captured."""
    if request.argv[:1] == [SUMMARIES]:
        summaries = {d: summary_of(d) for d in request.argv[1:]}
        return Answer(0, json.dumps(summaries), "", {})

    with tempfile.TemporaryDirectory(prefix="ktc-remote-") as tmp:
        for name, content in request.files_in.items():
            path = Path(tmp) / Path(name).name
            path.write_bytes(content)
        argv = [a.replace(TMP, tmp) for a in request.argv]
        os.environ["COLUMNS"] = str(request.columns)
        # The search's code, or an empty folder: never the head's own working
        # directory, whose my_models.py would be another project's.
        kept = request.code_dir is not None and Path(request.code_dir).is_dir()
        workdir = str(request.code_dir) if kept else tmp
        out, err = io.StringIO(), io.StringIO()
        previous = os.getcwd()
        os.chdir(workdir)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = _run_ktc(argv)
        finally:
            os.chdir(previous)
        if code != 0 and request.code_dir is not None and not kept:
            err.write(
                f"note: this search's code is not kept on the head ({request.code_dir} is "
                "missing: it was submitted before ktcluster kept it, or by a RayJob), so its "
                "own modules (hypermodel or dataset `module:attr`) cannot be imported here.\n"
            )
        files: dict[str, bytes] = {}
        total = 0
        for wanted in request.collect:
            path = Path(wanted.replace(TMP, tmp))
            if not path.exists():
                continue
            files[wanted] = _pack(path)
            total += len(files[wanted])
            if total > MAX_ANSWER_BYTES:
                return Answer(
                    1,
                    out.getvalue(),
                    err.getvalue()
                    + f"error: {wanted}: {total} bytes to send back; expected at most "
                    f"{MAX_ANSWER_BYTES}. Copy it from the head's storage instead.\n",
                    {},
                )
        return Answer(code, out.getvalue(), err.getvalue(), files)


def _run_ktc(argv: list[str]) -> int:
    from orchestrator.cli.main import main

    try:
        return main(argv, own_process=False)
    except SystemExit as exc:  # argparse
        return exc.code if isinstance(exc.code, int) else 2


def _pack(path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(path, arcname="." if path.is_dir() else path.name)
    return buffer.getvalue()


def _forget_start_dir() -> None:
    """Take the head's working directory off ``sys.path`` (``python -m`` put it first):
    user code imports from the search's code only (:func:`serve`). It stays when it
    is where ktcluster itself is imported from (a checkout on the head)."""
    import orchestrator

    start = os.path.realpath(os.getcwd())
    home = os.path.realpath(Path(orchestrator.__file__).parent.parent)
    if sys.path and sys.path[0] in ("", os.getcwd(), start) and start != home:
        del sys.path[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m orchestrator.remote_verbs REQUEST", file=sys.stderr)
        return 2
    _forget_start_dir()
    answer = serve(Request.decode(args[0]))
    print(ANSWER_MARK + answer.encode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
