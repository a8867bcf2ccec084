"""`ktc validate`: a table of malformed configs (exit code 2 + message), valid files, --json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli.main import main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

NODE = "nodes:\n  - name: a\n    cpus: 4\n"

# (id, YAML text, regex the error output must match)
MALFORMED: list[tuple[str, str, str]] = [
    # --- YAML and top-level shape -------------------------------------------------
    (
        "yaml-bad-indent",
        "nodes:\n  - name: a\n   cpus: 2\n",
        r"bad\.yaml:3:4: YAML syntax error: expected <block end>",
    ),
    (
        "yaml-unclosed-flow",
        "hypermodel: cnn\noracle: {type: random\n",
        r"bad\.yaml:3:1: YAML syntax error: expected ',' or '\}'",
    ),
    ("empty-file", "", r"bad\.yaml: the file is empty; expected a mapping"),
    ("comments-only", "# nothing here\n", r"bad\.yaml: the file is empty"),
    (
        "top-level-list",
        "- a\n- b\n",
        r"bad\.yaml:1: the top level must be a mapping of keys .*got a list",
    ),
    ("top-level-scalar", "hello\n", r"top level must be a mapping .*got str 'hello'"),
    ("unknown-kind", "kind: clustr\n" + NODE, r"bad\.yaml:1: kind: expected 'cluster' or 'search'"),
    ("no-known-keys", "foo: 1\n", r"cannot tell whether this is a cluster or a search file"),
    ("mixed-kinds", NODE + "hypermodel: cnn\n", r"mixes cluster keys \(nodes\) and search keys"),
    # --- cluster: types and keys ----------------------------------------------------
    (
        "unknown-key-did-you-mean",
        "nodes:\n  - name: a\n    cpus: 4\n    wrkers: []\n",
        r"bad\.yaml:4: nodes\[0\]\.wrkers: unknown key 'wrkers'; did you mean 'workers'\? "
        r"expected one of the keys allowed here: cpu_workers, cpus",
    ),
    (
        "unknown-top-key",
        "ray: {address: local}\nnodse: []\n",
        r"bad\.yaml:2: nodse: unknown key 'nodse'; did you mean 'nodes'\?",
    ),
    (
        "cpus-wrong-type",
        "nodes:\n  - name: a\n    cpus: two\n",
        r"bad\.yaml:3: nodes\[0\]\.cpus: expected an integer, got 'two' \(str\)",
    ),
    (
        "gpus-not-a-list",
        "nodes:\n  - name: a\n    cpus: 4\n    gpus: 3\n",
        r"bad\.yaml:4: nodes\[0\]\.gpus: expected a list, got 3 \(int\)",
    ),
    (
        "cpus-missing",
        "nodes:\n  - name: a\n    gpus: [0]\n",
        r"bad\.yaml:2: nodes\[0\]\.cpus: missing required key 'cpus'",
    ),
    (
        "node-name-pattern",
        "nodes:\n  - name: 'a b'\n    cpus: 2\n",
        r"nodes\[0\]\.name: expected text matching",
    ),
    (
        "fraction-above-one",
        "nodes:\n  - {name: a, cpus: 4, gpus: [0], gpu_memory_mb: 1000, memory_cap_fraction: 1.5}\n",
        r"nodes\[0\]\.memory_cap_fraction: expected a number at most 1, got 1\.5",
    ),
    # --- cluster: cross-field checks ------------------------------------------------
    (
        "gpu-assigned-twice",
        "nodes:\n  - name: a\n    cpus: 4\n    gpus: [0, 1]\n    workers:\n"
        "      - gpus: [0]\n      - gpus: [0, 1]\n",
        r"bad\.yaml:7: nodes\[0\]\.workers\[1\]\.gpus\[0\]: GPU 0 is already used by "
        r"nodes\[0\]\.workers\[0\]; expected each GPU in one worker only\. Give this worker "
        r"another of the node's gpus",
    ),
    (
        "gpu-listed-twice",
        "nodes:\n  - {name: a, cpus: 4, gpus: [0, 1, 1]}\n",
        r"nodes\[0\]\.gpus\[2\]: GPU 1 is listed twice",
    ),
    (
        "worker-gpu-not-on-node",
        "nodes:\n  - name: a\n    cpus: 4\n    gpus: [0, 1]\n    workers:\n      - [3]\n",
        r"bad\.yaml:6: nodes\[0\]\.workers\[0\]\.gpus\[0\]: GPU 3 is not in this node's gpus \[0, 1\]",
    ),
    (
        "duplicate-node-names",
        "nodes:\n  - {name: a, cpus: 2}\n  - {name: a, cpus: 2}\n",
        r"bad\.yaml:3: nodes\[1\]\.name: node name 'a' is already used by nodes\[0\]; "
        r"node names must be unique",
    ),
    (
        "too-many-cpu-workers",
        "nodes:\n  - {name: a, cpus: 2, cpu_workers: 3}\n",
        r"nodes\[0\]\.cpu_workers: more workers than the node can hold: 3 workers need 3 CPUs "
        r"but the node has cpus 2; at most 2 workers of 1 CPUs fit",
    ),
    (
        "too-many-gpu-workers-for-cpus",
        "nodes:\n  - {name: a, cpus: 2, gpus: [0, 1, 2, 3]}\n",
        r"bad\.yaml:2: nodes\[0\]: more workers than the node can hold: 4 workers need 4 CPUs",
    ),
    (
        "explicit-workers-cpus-exceed",
        "nodes:\n  - name: a\n    cpus: 6\n    gpus: [0, 1]\n    workers:\n"
        "      - {gpus: [0], cpus: 4}\n      - {gpus: [1], cpus: 4}\n",
        r"nodes\[0\]\.workers: more workers than the node can hold: 2 workers need 8 CPUs",
    ),
    (
        "memory-fraction-does-not-fit",
        "nodes:\n  - {name: a, cpus: 8, gpus: [0], workers_per_gpu: 4, gpu_memory_mb: 1000,"
        " memory_cap_fraction: 0.5}\n",
        r"nodes\[0\]\.memory_cap_fraction: 4 workers per GPU x 0\.5 = 2 of the GPU's memory; "
        r"the caps must fit in one GPU \(at most 0\.25 each\)",
    ),
    (
        "memory-mb-does-not-fit",
        "nodes:\n  - {name: a, cpus: 8, gpus: [0], workers_per_gpu: 2, gpu_memory_mb: 1000,"
        " memory_cap_mb: 600}\n",
        r"nodes\[0\]\.memory_cap_mb: 2 workers per GPU x 600 MB = 1200 MB does not fit in "
        r"gpu_memory_mb 1000; expected at most 500 MB per worker",
    ),
    (
        "packed-without-cap",
        "nodes:\n  - {name: a, cpus: 8, gpus: [0], workers_per_gpu: 2}\n",
        r"nodes\[0\]\.workers_per_gpu: workers_per_gpu is 2, .*need a memory cap",
    ),
    (
        "fraction-without-gpu-memory",
        "nodes:\n  - {name: a, cpus: 8, gpus: [0], workers_per_gpu: 2, memory_cap_fraction: 0.5}\n",
        r"memory_cap_fraction needs gpu_memory_mb",
    ),
    (
        "no-workers-possible",
        "fleet: {cpus_per_worker: 2}\nnodes:\n  - {name: a, cpus: 1}\n",
        r"bad\.yaml:3: nodes\[0\]: no workers possible: the node has no gpus and 0 CPU workers",
    ),
    (
        "empty-workers-list",
        "nodes:\n  - {name: a, cpus: 2, workers: []}\n",
        r"nodes\[0\]\.workers: the workers list is empty",
    ),
    (
        "workers-with-workers-per-gpu",
        "nodes:\n  - {name: a, cpus: 4, gpus: [0], workers: [[0]], workers_per_gpu: 2,"
        " memory_cap_mb: 100}\n",
        r"nodes\[0\]\.workers_per_gpu: 'workers_per_gpu' cannot be combined with an explicit "
        r"'workers' list",
    ),
    (
        "tls-files-missing",
        "chief:\n  tls: {cert: missing.pem, key: missing-key.pem, ca: ca.pem}\n" + NODE,
        r"bad\.yaml:2: chief\.tls\.cert: TLS file 'missing\.pem' does not exist .*"
        r"ktc cluster certs DIR",
    ),
    (
        "port-out-of-range",
        "chief: {port: 70000}\n" + NODE,
        r"bad\.yaml:1: chief\.port: port 70000 is out of range; expected 0\.\.65535",
    ),
    ("port-negative", "chief:\n  port: -1\n" + NODE, r"bad\.yaml:2: chief\.port: port -1 is out"),
    (
        "multi-machine-without-tls",
        "ray: {address: '10.0.0.1:6379'}\nnodes:\n  - {name: a, host: 10.0.0.1, cpus: 2}\n"
        "  - {name: b, host: 10.0.0.2, cpus: 2}\n",
        r"chief: the cluster spans several machines \(10\.0\.0\.1, 10\.0\.0\.2\) but the chief's "
        r"endpoint has no TLS.*`ktc cluster certs DIR`.*insecure: true",
    ),
    (
        "bad-ray-address",
        "ray: {address: 'head.example.com'}\n" + NODE,
        r"ray\.address: expected 'local', 'auto', 'HOST:PORT' or 'ray://HOST:PORT', "
        r"got 'head\.example\.com'",
    ),
    # --- search ---------------------------------------------------------------------
    (
        "hypermodel-bad-format",
        "hypermodel: foo.bar\n",
        r"bad\.yaml:1: hypermodel\.name: expected a built-in name \(cnn, mlp, transfer, sleep\) "
        r"or 'package\.module:attribute', got 'foo\.bar'\. Did you mean 'foo:bar'\?",
    ),
    (
        "hypermodel-two-colons",
        "hypermodel: {name: 'a:b:c'}\n",
        r"hypermodel\.name: expected a built-in name .* got 'a:b:c'",
    ),
    (
        "hypermodel-not-importable",
        "hypermodel: ktc_no_such_pkg.models:build_model\n",
        r"hypermodel\.name: cannot import module 'ktc_no_such_pkg\.models' .*"
        r"ModuleNotFoundError: No module named 'ktc_no_such_pkg'",
    ),
    (
        "hypermodel-missing-attribute",
        "hypermodel: json:no_such_function\n",
        r"hypermodel\.name: module 'json' has no attribute 'no_such_function'",
    ),
    (
        "dataset-function-not-importable",
        "hypermodel: cnn\ndataset: ktc_no_such_pkg:load\n",
        r"dataset\.source: cannot import module 'ktc_no_such_pkg'",
    ),
    (
        "hypermodel-missing",
        "oracle: {type: random}\n",
        r"hypermodel: missing required key 'hypermodel'",
    ),
    (
        "hyperband-key-on-random",
        "hypermodel: cnn\noracle:\n  type: random\n  factor: 3\n",
        r"bad\.yaml:4: oracle\.factor: 'factor' is a hyperband setting, but oracle\.type is "
        r"'random'; expected only random settings here\. Remove it or set type: hyperband",
    ),
    (
        "bayesian-key-on-hyperband",
        "hypermodel: cnn\noracle: {type: hyperband, num_initial_points: 4}\n",
        r"oracle\.num_initial_points: 'num_initial_points' is a bayesian setting",
    ),
    (
        "max-trials-on-hyperband",
        "hypermodel: cnn\noracle: {type: hyperband, max_trials: 4}\n",
        r"oracle\.max_trials: hyperband does not use max_trials",
    ),
    (
        "random-without-max-trials",
        "hypermodel: cnn\noracle: {type: random, max_trials: null}\n",
        r"oracle\.max_trials: the random oracle needs max_trials",
    ),
    (
        "oracle-type-literal",
        "hypermodel: cnn\noracle: {type: evolution}\n",
        r"oracle\.type: expected one of 'random', 'grid', 'bayesian' or 'hyperband', "
        r"got 'evolution' \(str\)",
    ),
    (
        "npz-without-path",
        "hypermodel: cnn\ndataset: npz\n",
        r"dataset\.path: source 'npz' needs a path",
    ),
    (
        "npz-path-missing",
        "hypermodel: cnn\ndataset: {source: npz, path: nope.npz}\n",
        r"bad\.yaml:2: dataset\.path: path 'nope\.npz' does not exist",
    ),
    (
        "image-directory-without-size",
        "hypermodel: cnn\ndataset: {source: image_directory, path: .}\n",
        r"dataset\.image_size: source 'image_directory' needs image_size",
    ),
    (
        "validation-split-range",
        "hypermodel: cnn\ndataset: {source: digits, validation_split: 1.5}\n",
        r"dataset\.validation_split: expected a number less than 1, got 1\.5",
    ),
    (
        "unknown-dataset",
        "hypermodel: cnn\ndataset: imagenet\n",
        r"dataset\.source: expected a built-in name \(digits, mnist, fashion_mnist, cifar10, "
        r"npz, image_directory\)",
    ),
    (
        "objective-direction",
        "hypermodel: cnn\nobjective: {name: val_auc, direction: up}\n",
        r"objective\.direction: expected one of 'max' or 'min', got 'up'",
    ),
    (
        "epochs-zero",
        "hypermodel: cnn\ntraining:\n  epochs: 0\n",
        r"bad\.yaml:3: training\.epochs: expected a number at least 1, got 0",
    ),
    (
        "batch-size-type",
        "hypermodel: cnn\ntraining: {batch_size: big}\n",
        r"training\.batch_size: expected an integer, got 'big' \(str\)",
    ),
    (
        "early-stopping-typo",
        "hypermodel: cnn\ntraining:\n  early_stopping:\n    patiense: 3\n",
        r"bad\.yaml:4: training\.early_stopping\.patiense: unknown key 'patiense'; "
        r"did you mean 'patience'\?",
    ),
    (
        "heartbeat-not-below-lease",
        "hypermodel: cnn\nfailure: {lease_timeout_s: 10, heartbeat_interval_s: 10}\n",
        r"failure\.heartbeat_interval_s: `heartbeat_interval_s < lease_timeout_s` must hold",
    ),
    (
        "override-min-above-max",
        "hypermodel:\n  name: cnn\n  overrides:\n    filters: {min: 64, max: 16}\n",
        r"bad\.yaml:4: hypermodel\.overrides\.filters: `min <= max` must hold, but got "
        r"min=64, max=16",
    ),
    (
        "override-unknown-hyperparameter",
        "hypermodel:\n  name: cnn\n  overrides:\n    filtrs: {min: 16, max: 32}\n",
        r"bad\.yaml:4: hypermodel\.overrides\.filtrs: unknown hyperparameter for 'cnn'; "
        r"did you mean 'filters'\?",
    ),
    (
        "hypermodel-unknown-option",
        "hypermodel: {name: sleep, options: {epoch_s: 0.1, bogus: 1}}\n",
        r"bad\.yaml:1: hypermodel\.options\.bogus: unknown option for 'sleep'",
    ),
    (
        "override-unknown-key",
        "hypermodel:\n  name: cnn\n  overrides:\n    filters: {lo: 16}\n",
        r"hypermodel\.overrides\.filters\.lo: unknown override key 'lo'",
    ),
]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh directory (relative dataset paths and user imports resolve here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "pattern"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_config_exits_2_with_message(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], text: str, pattern: str
) -> None:
    (in_tmp / "bad.yaml").write_text(text)
    code = main(["validate", "bad.yaml"])
    captured = capsys.readouterr()
    assert code == 2
    assert re.search(pattern, captured.err), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert captured.err.startswith("error: ")


def test_malformed_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 30
    assert len({c[0] for c in MALFORMED}) == len(MALFORMED)


def test_several_problems_are_all_reported_with_a_summary(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "bad.yaml").write_text(
        "chief: {port: 70000}\nnodes:\n  - name: a\n    cpus: two\n    wrkers: []\n"
    )
    assert main(["validate", "bad.yaml"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: bad.yaml: 3 problems:"
    assert [line.split(":")[1] for line in lines[1:]] == ["1", "4", "5"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_example_config_is_valid(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r": valid (cluster|search) file", out)


def test_all_examples_at_once_print_worker_maps(capsys: pytest.CaptureFixture[str]) -> None:
    assert len(CONFIGS) >= 8
    assert main(["validate", *map(str, CONFIGS)]) == 0
    out = capsys.readouterr().out
    assert "local-w1" in out
    assert "big-w0" in out and "2,3" in out and "7000 MB" in out


def test_one_bad_file_fails_the_run_but_all_are_checked(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "bad.yaml").write_text("nodes: [{name: a}]\n")
    good = str(REPO / "configs" / "local.yaml")
    assert main(["validate", "bad.yaml", good]) == 2
    captured = capsys.readouterr()
    assert "missing required key 'cpus'" in captured.err
    assert "local.yaml: valid cluster file" in captured.out


def test_missing_file(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "nope.yaml"]) == 2
    assert "nope.yaml: does not exist" in capsys.readouterr().err


def test_user_code_reference_that_imports_is_valid(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = in_tmp / "ktc_user_pkg_validate"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("def build_model(hp):\n    return None\n")
    (in_tmp / "s.yaml").write_text("hypermodel: ktc_user_pkg_validate.models:build_model\n")
    assert main(["validate", "s.yaml"]) == 0, capsys.readouterr().err
    assert "hypermodel: ktc_user_pkg_validate.models:build_model" in capsys.readouterr().out


def test_json_output_structure(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "bad.yaml").write_text("hypermodel: cnn\noracle: {type: random, factor: 2}\n")
    files = [str(REPO / "configs" / "mixed.yaml"), str(REPO / "configs" / "digits-cnn.yaml")]
    assert main(["validate", "--json", *files, "bad.yaml"]) == 2
    reports = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in reports] == ["cluster", "search", None]
    assert [r["valid"] for r in reports] == [True, True, False]
    cluster, search, bad = reports
    assert cluster["errors"] == []
    assert any("chief.insecure is true" in w for w in cluster["warnings"])
    assert [w["worker_id"] for w in cluster["workers"]][:5] == [
        "small-w0",
        "small-w1",
        "small-w2",
        "small-w3",
        "big-w0",
    ]
    first = cluster["workers"][0]
    assert first == {
        "worker_id": "small-w0",
        "node": "small",
        "host": "10.0.1.10",
        "index": 0,
        "gpus": [0],
        "gpu_share": 0.5,
        "memory_cap_mb": 7000,
        "cpus": 2.0,
        "cuda_visible_devices": "0",
        "node_resource": "ktc_node_small",
    }
    assert search["search"]["hypermodel"] == "cnn"
    assert search["search"]["direction"] == "max"
    assert search["search"]["max_trials"] == 8
    assert "workers" not in search
    assert re.search(r"oracle\.factor: 'factor' is a hyperband setting", bad["errors"][0])


def _ktc_script() -> Path:
    script = Path(sys.executable).parent / "ktc"
    if not script.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-e", str(REPO), "--no-deps", "-q"],
            check=True,
            capture_output=True,
        )
    return script


def test_real_console_script_never_prints_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("nodes:\n  - name: a\n   cpus: 2\n")
    (tmp_path / "worse.yaml").write_text("hypermodel: ktc_no_such_pkg:build\n")
    result = subprocess.run(
        [
            str(_ktc_script()),
            "validate",
            "bad.yaml",
            "worse.yaml",
            str(REPO / "configs/local.yaml"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "bad.yaml:3:4: YAML syntax error" in result.stderr
    assert "cannot import module 'ktc_no_such_pkg'" in result.stderr
    assert "local.yaml: valid cluster file" in result.stdout
