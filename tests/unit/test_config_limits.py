"""Issue 12, the config loader: each hostile-input case with its exact exit code
and message, and the things the limits must still let through.

The corpus (test_bad_config_corpus.py) runs every malformed file through
``validate`` and ``submit``; this module pins the cases the issue names one by
one, the API paths the corpus does not reach (mapping input, scale, the chief),
and the valid inputs next to each limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from orchestrator.cli.main import main
from orchestrator.config import (
    ChiefSpec,
    default_cluster,
    load_search,
    parse_cluster,
    parse_search,
)
from orchestrator.config.hosts import host_problem, is_loopback
from orchestrator.config.limits import DEFAULT_MAX_WORKERS
from orchestrator.config.preflight import plan_submit
from orchestrator.errors import ConfigError
from orchestrator.fleet.slots import BrokerHooks, Fleet
from tests.helpers import make_search


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    return tmp_path


def _ktc(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# ---- alias bomb, nesting, size ---------------------------------------------------------


def test_billion_laughs_is_refused_at_once() -> None:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n"
    text += "hypermodel: {name: sleep, options: {x: *i}}\n"
    start = time.perf_counter()
    with pytest.raises(
        ConfigError,
        match=r"^bomb\.yaml: the YAML aliases \(\*name\) would expand to [\d,]+ more nodes; "
        r"expected at most 10,000 .*'billion laughs'",
    ):
        parse_search(text, "bomb.yaml")
    assert time.perf_counter() - start < 5.0  # was > 20 s, or a MemoryError


def test_anchors_and_merge_keys_still_work_with_their_lines() -> None:
    text = (
        "nodes:\n"
        "  - &base {name: a, cpus: 2, cpu_workers: 2}\n"
        "  - <<: *base\n"
        "    name: b\n"
        "    cpu_workers: 1\n"
    )
    spec = parse_cluster(text)
    assert [(n.name, n.cpu_workers) for n in spec.nodes] == [("a", 2), ("b", 1)]
    with pytest.raises(ConfigError, match=r"^c\.yaml:5: nodes\[1\]\.cpu_workers: more workers"):
        parse_cluster(text.replace("cpu_workers: 1", "cpu_workers: 3"), "c.yaml")


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^s\.yaml:1: hypermodel\.options\.me: an alias \(\*name\) refers back to the "
        r"value anchored at line 1",
    ):
        parse_search("hypermodel: &h {name: sleep, options: {me: *h}}\n", "s.yaml")


def test_a_thousand_levels_of_nesting_are_refused_with_the_key(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "deep.yaml").write_text("hypermodel: sleep\noracle: " + "[" * 1000 + "]" * 1000)
    code, _, err = _ktc(["validate", "deep.yaml"], capsys)
    assert code == 2
    assert err.startswith(
        "error: deep.yaml:2: oracle[0][0][0]...: mappings and lists are nested more than 64 "
        "levels deep; expected at most 64 levels"
    )


def test_nesting_from_a_mapping_is_bounded_too() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(1000):
        inner["k"] = {}
        inner = inner["k"]
    with pytest.raises(
        ConfigError, match=r"^<string>: hypermodel\.options\.k\.k: mappings and lists are nested"
    ):
        parse_search({"hypermodel": {"name": "sleep", "options": deep}})


def test_ten_megabytes_are_refused_without_reading_them(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "big.yaml").write_bytes(b"hypermodel: cnn\n" + b"#" * 10_000_000)
    start = time.perf_counter()
    code, _, err = _ktc(["validate", "big.yaml"], capsys)
    assert code == 2
    assert err == (
        "error: big.yaml: the file is 10,000,016 bytes; expected a config file of at most 1 MiB "
        "(1,048,576 bytes). Check that this is the right file (config files are a few KB), or "
        "shrink it.\n"
    )
    assert time.perf_counter() - start < 5.0  # was 25 s


def test_a_file_just_under_the_limit_is_read(in_tmp: Path) -> None:
    (in_tmp / "s.yaml").write_bytes(b"hypermodel: cnn\n" + b"#" * (1024 * 1024 - 17) + b"\n")
    assert load_search("s.yaml").hypermodel.name == "cnn"


def test_non_utf8_says_where_and_how_to_fix(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "l1.yaml").write_bytes(b"hypermodel: cnn\nname: caf\xe9\n")
    code, _, err = _ktc(["validate", "l1.yaml"], capsys)
    assert code == 2
    assert err.startswith(
        "error: l1.yaml:2:10: the file is not UTF-8 text (byte 0xe9 cannot be decoded); "
        "expected a UTF-8 YAML file. Re-save it as UTF-8 (e.g. `iconv -f latin1 -t UTF-8 "
    )


def test_a_utf8_byte_order_mark_is_fine(in_tmp: Path) -> None:
    (in_tmp / "bom.yaml").write_bytes(b"\xef\xbb\xbfhypermodel: cnn\n")
    assert main(["validate", "bom.yaml"]) == 0


# ---- numbers -----------------------------------------------------------------------------


def test_cpus_1e24_is_refused_before_any_slot_is_built(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "c.yaml").write_text("nodes:\n  - name: a\n    cpus: 1000000000000000000000000\n")
    code, _, err = _ktc(["validate", "c.yaml"], capsys)
    assert code == 2
    assert err.startswith(
        "error: c.yaml:3: nodes[0].cpus: expected an integer between -9223372036854775808 and "
        "9223372036854775807, got 1000000000000000000000000. Use a smaller number."
    )


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("{name: a, cpus: 100000}", r"nodes\[0\]\.cpus: expected a number at most 65536"),
        (
            "{name: a, cpus: 2, cpus_per_worker: 1e-24}",
            r"cpus_per_worker: expected a number at least 0\.001",
        ),
        (
            "{name: a, cpus: 65536, cpus_per_worker: 0.001}",
            r"this node has 65,53\d,\d+ workers .* fleet\.max_workers is 1,024",
        ),
        (
            "{name: a, cpus: 4, gpus: [1024]}",
            r"nodes\[0\]\.gpus\[0\]: expected a number at most 1023",
        ),
        ("{name: a, cpus: 4, cpu_workers: 70000}", r"cpu_workers: expected a number at most 65536"),
    ],
)
def test_huge_numbers_in_nodes(node: str, message: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        parse_cluster(f"nodes:\n  - {node}\n")
    assert time.perf_counter() - start < 2.0  # no slot list of millions built


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "oracle: {max_trials: 10000000}",
            r"oracle\.max_trials: expected a number at most 1000000",
        ),
        ("training: {epochs: 1000000}", r"training\.epochs: expected a number at most 100000"),
        ("oracle: {seed: -1}", r"oracle\.seed: expected a number at least 0"),
        (
            "failure: {lease_timeout_s: 1.0e+9}",
            r"failure\.lease_timeout_s: expected a number at most 604800",
        ),
    ],
)
def test_huge_numbers_in_searches(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_search(f"hypermodel: cnn\n{text}\n")


def test_nan_anywhere_names_the_key(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "s.yaml").write_text("hypermodel:\n  name: sleep\n  options:\n    epoch_s: .nan\n")
    code, _, err = _ktc(["validate", "s.yaml"], capsys)
    assert code == 2
    assert err == (
        "error: s.yaml:4: hypermodel.options.epoch_s: expected a finite number, got nan; NaN and "
        "infinity are not allowed in a config file. Write a finite number.\n"
    )


def test_nan_from_a_mapping_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^<string>: fleet\.cpus_per_worker: expected a finite"):
        parse_cluster({"fleet": {"cpus_per_worker": math.nan}, "nodes": [{"name": "a", "cpus": 2}]})
    with pytest.raises(ConfigError, match=r"^<string>: oracle\.alpha: expected a finite number"):
        parse_search({"hypermodel": "cnn", "oracle": {"type": "bayesian", "alpha": "inf"}})


# ---- duplicate keys ----------------------------------------------------------------------


def test_duplicate_keys_name_both_lines(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "c.yaml").write_text("nodes:\n  - name: a\n    cpus: 2\n    gpus: []\n    cpus: 64\n")
    code, _, err = _ktc(["validate", "c.yaml"], capsys)
    assert code == 2
    assert err == (
        "error: c.yaml:5: nodes[0].cpus: the key 'cpus' is given twice in this mapping (lines 3 "
        "and 5); expected each key once. Remove one of them (YAML would silently keep the last).\n"
    )


# ---- paths that failed late --------------------------------------------------------------


def test_npz_path_that_is_a_directory(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "data").mkdir()
    (in_tmp / "s.yaml").write_text("hypermodel: cnn\ndataset: {source: npz, path: data}\n")
    for argv in (["validate", "s.yaml"], ["submit", "s.yaml", "--dir", "out"]):
        code, _, err = _ktc(argv, capsys)
        assert code == 2
        assert err.startswith(
            "error: s.yaml:2: dataset.path: path 'data' is a directory, not a file (looked for "
        )
    assert not (in_tmp / "out").exists()


def test_output_directory_that_is_a_file(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "taken").write_text("a file\n")
    (in_tmp / "s.yaml").write_text("hypermodel: sleep\noutput:\n  directory: taken\n")
    for argv in (["validate", "s.yaml"], ["submit", "s.yaml"]):
        code, _, err = _ktc(argv, capsys)
        assert code == 2
        assert err == (
            "error: s.yaml:3: output.directory: taken is an existing file; expected a directory "
            "(new or empty). Pick another path, or move the file away.\n"
        )
    assert (in_tmp / "taken").read_text() == "a file\n"


def test_dir_argument_that_is_a_file(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "taken").write_text("a file\n")
    (in_tmp / "s.yaml").write_text("hypermodel: sleep\n")
    code, _, err = _ktc(["submit", "s.yaml", "--dir", "taken/run"], capsys)
    assert code == 2
    assert err.startswith("error: --dir taken/run: ")
    assert "is a file, so taken/run cannot be created inside it; expected a path under" in err


def test_a_folder_that_holds_a_search_refuses_submit_and_warns_in_validate(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "runs").mkdir()
    (in_tmp / "runs" / "ledger.db").write_bytes(b"")
    (in_tmp / "s.yaml").write_text("hypermodel: sleep\noutput: {directory: runs}\n")
    code, _, err = _ktc(["submit", "s.yaml"], capsys)
    assert code == 2
    assert err == (
        "error: s.yaml:2: output.directory: runs already holds a search; expected a new or empty "
        "directory. Continue it with `ktc resume runs`, or pick another path.\n"
    )
    code, out, err = _ktc(["validate", "s.yaml"], capsys)
    assert code == 0
    assert "s.yaml: valid search file" in out
    assert "warning: s.yaml: output directory runs already holds a search" in err


def test_validate_shows_the_trial_scheduler_with_its_defaults_filled_in(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "a.yaml").write_text(
        "hypermodel: sleep\ntraining: {epochs: 9}\nscheduler: {type: asha, grace_epochs: 1}\n"
    )
    (in_tmp / "m.yaml").write_text("hypermodel: sleep\nscheduler: {type: median}\n")
    (in_tmp / "n.yaml").write_text("hypermodel: sleep\n")
    code, out, _ = _ktc(["validate", "a.yaml", "m.yaml", "n.yaml"], capsys)
    assert code == 0
    assert "  scheduler: asha (grace_epochs 1, reduction_factor 3, max_epochs 9)\n" in out
    assert "  scheduler: median (grace_epochs 1, min_trials 2)\n" in out
    assert out.count("scheduler:") == 2  # none for n.yaml


def test_dataset_paths_are_checked_here_only_when_ray_is_local(in_tmp: Path) -> None:
    (in_tmp / "s.yaml").write_text("hypermodel: cnn\ndataset: {source: npz, path: /no/such.npz}\n")
    (in_tmp / "remote.yaml").write_text(
        "ray: {address: '10.0.0.1:6379'}\nnodes:\n  - {name: a, host: 10.0.0.1, cpus: 2}\n"
    )
    plan = plan_submit(
        "s.yaml", "remote.yaml", dir_arg="out", workers=None, search_path=[str(in_tmp)]
    )
    assert plan.search.dataset is not None and plan.search.dataset.path == "/no/such.npz"
    with pytest.raises(ConfigError, match=r"^s\.yaml:2: dataset\.path: path '/no/such\.npz' does"):
        plan_submit("s.yaml", None, dir_arg="out", workers=None, search_path=[str(in_tmp)])
    assert not (in_tmp / "out").exists()


# ---- hosts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "0.0.0.0", "10.0.0.1", "::", "::1", "[::1]", "fe80::1", "localhost",
     "gpu-a.example.com", "gpu-a.example.com.", "node_1", "a" * 63],
)  # fmt: skip
def test_valid_hosts(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("not a host!", "it contains ' ', '!'"),
        ("", "it is empty"),
        ("999.1.1.1", "looks like an IPv4 address but is not one"),
        ("a..b", "empty part between dots"),
        ("-a.com", "starts or ends with '-'"),
        ("a" * 64, "longer than 63 characters"),
        ("[::zz]", "not a valid IPv6 address"),
        ("gpu/1", "it contains '/'"),
    ],
)
def test_invalid_hosts(host: str, why: str) -> None:
    problem = host_problem(host)
    assert problem is not None and why in problem


def test_bad_hosts_are_refused_naming_the_key(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "c.yaml").write_text(
        "chief: {host: 'not a host!'}\nnodes:\n  - {name: a, cpus: 2, host: 'bad host!'}\n"
    )
    code, _, err = _ktc(["validate", "c.yaml"], capsys)
    assert code == 2
    assert "c.yaml:1: chief.host: expected a host name" in err
    assert "c.yaml:3: nodes[0].host: expected a host name" in err
    assert "no DNS lookup is made" in err


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("localhost")
    assert is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("gpu-a")


# ---- messages ----------------------------------------------------------------------------


def test_hypermodel_option_errors_name_the_real_file_and_line(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "my-search.yaml").write_text(
        "hypermodel:\n  name: sleep\n  options:\n    epoch_s: 0.1\n    bogus: 1\n"
    )
    for argv in (["validate", "my-search.yaml"], ["submit", "my-search.yaml", "--dir", "o"]):
        code, _, err = _ktc(argv, capsys)
        assert code == 2
        assert err == (
            "error: my-search.yaml:5: hypermodel.options.bogus: unknown option for 'sleep'. "
            "Expected one of: epoch_s, fail_rate, fail_on. Fix the name or remove it.\n"
        )


def test_no_raw_pydantic_text() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^s:2: objective\.name: expected a metric name: printable text of 1-200 characters",
    ):
        parse_search("hypermodel: cnn\nobjective: {name: ''}\n", "s")


def test_a_duplicate_gpu_says_how_to_fix_it() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^c:2: nodes\[0\]\.gpus\[1\]: GPU 0 is listed twice \(also gpus\[0\]\); expected "
        r"each GPU index once\. Remove the repeated 0\.$",
    ):
        parse_cluster("nodes:\n  - {name: a, cpus: 4, gpus: [0, 0]}\n", "c")


# ---- fleet.max_workers -------------------------------------------------------------------


def _fleet(cluster_text: str) -> Fleet:
    cluster = parse_cluster(cluster_text)
    return Fleet(cluster, make_config=lambda slot: None, hooks=BrokerHooks(cast(Any, None)))


def test_max_workers_has_a_documented_default() -> None:
    assert default_cluster().fleet.max_workers == DEFAULT_MAX_WORKERS == 1024
    doc = (Path(__file__).resolve().parents[2] / "docs" / "config-reference.md").read_text()
    assert "| `max_workers` | int 1..65536 | `1024` |" in doc


def test_scale_past_the_file_is_allowed_up_to_the_cap() -> None:
    fleet = _fleet("fleet: {max_workers: 6}\nnodes:\n  - {name: a, cpus: 8, cpu_workers: 2}\n")
    assert fleet._scale_total(6, now=False).startswith("scaling up 2 -> 6")
    with pytest.raises(
        ConfigError,
        match=r"^--workers 7: the fleet would have 7 workers; expected at most "
        r"fleet\.max_workers \(6\)\. Ask for fewer, or raise fleet\.max_workers",
    ):
        fleet._scale_total(7, now=False)
    assert len(fleet._slots) == 6  # the refused request changed nothing


def test_scale_nodes_counts_every_node_against_the_cap() -> None:
    fleet = _fleet(
        "fleet: {max_workers: 5}\nnodes:\n  - {name: a, cpus: 8, cpu_workers: 2}\n"
        "  - {name: b, cpus: 8, cpu_workers: 2}\n"
    )
    fleet._scale_total(4, now=False)
    assert fleet._scale_nodes({"a": 3}, now=False) == "a: 2 -> 3"
    with pytest.raises(ConfigError, match=r"^--node b=3: the fleet would have 6 workers"):
        fleet._scale_nodes({"b": 3}, now=False)
    assert len(fleet._slots.wanted_ids()) == 5


def test_submit_workers_beyond_the_cap(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "s.yaml").write_text("hypermodel: sleep\n")
    (in_tmp / "c.yaml").write_text("fleet: {max_workers: 3}\nnodes:\n  - {name: a, cpus: 2}\n")
    code, _, err = _ktc(["submit", "s.yaml", "--cluster", "c.yaml", "--workers", "4"], capsys)
    assert code == 2
    assert err == (
        "error: --workers 4: expected at most fleet.max_workers (3) of the cluster file c.yaml, "
        "got 4. Lower --workers, or raise fleet.max_workers in the cluster file.\n"
    )
    assert not (in_tmp / "searches").exists()


# ---- plaintext beyond loopback -----------------------------------------------------------


def test_validate_warns_about_insecure_beyond_loopback(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "c.yaml").write_text(
        "chief: {host: 0.0.0.0, insecure: true}\nnodes:\n  - {name: a, cpus: 2}\n"
    )
    code, _, err = _ktc(["validate", "c.yaml"], capsys)
    assert code == 0
    assert (
        "warning: c.yaml: chief.insecure is true: the chief's endpoint is not encrypted and is "
        "open to the network (chief.host '0.0.0.0'), search token included" in err
    )


def test_plaintext_bind_beyond_loopback_is_refused_by_validate() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^c:1: chief\.host: the chief would bind '10\.0\.0\.5', beyond loopback, without "
        r"TLS .*expected chief\.tls \{cert, key, ca\} or chief\.insecure: true, got neither",
    ):
        parse_cluster("chief: {host: 10.0.0.5}\nnodes:\n  - {name: a, cpus: 2}\n", "c")


def test_the_chief_refuses_to_start_in_plaintext_beyond_loopback(
    start_chief: Callable[..., Any],
) -> None:
    # A spec that never went through validation (built in code, or stored long ago).
    chief_spec = ChiefSpec.model_construct(
        host="0.0.0.0", port=0, advertise=None, tls=None, insecure=False
    )
    cluster = default_cluster().model_copy(update={"chief": chief_spec})
    with pytest.raises(
        ConfigError,
        match=r"^cluster chief\.host: the chief would bind '0\.0\.0\.0', beyond loopback, "
        r"without TLS .*expected chief\.tls .* or chief\.insecure: true",
    ):
        start_chief(make_search(), cluster=cluster)
