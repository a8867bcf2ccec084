"""What ``ktc cluster render --format kuberay`` and ``--format kuberay-job`` write,
checked against KubeRay's own CRDs (tests/data/kuberay, ORIGIN.md there).

The CRDs' ``openAPIV3Schema`` is read by jsonschema's Draft 4 validator, with
one change that makes it as strict as the API server: an object schema that
lists ``properties`` is closed (Kubernetes drops or, with kubectl's default
strict field validation, refuses unknown fields; jsonschema would accept them,
so a misspelt key would pass). On top of the schema, the rules KubeRay's
controller adds (``ray-operator/controllers/ray/utils/validation.go``): names are
DNS-1035 labels of at most 53 (RayCluster) and 47 (RayJob) characters.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
import shlex
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from deploy.render import RenderFormat, RenderOptions, render, render_data
from deploy.render_kuberay import MAX_RAYCLUSTER_NAME, MAX_RAYJOB_NAME, k8s_resource_name
from orchestrator.cli.main import main as ktc_main
from orchestrator.config import load_cluster, parse_cluster
from orchestrator.config.cluster import ClusterSpec
from orchestrator.errors import ConfigError, DeployError

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "tests" / "data" / "kuberay"
NOW = datetime(2026, 11, 30, 18, 30, 5, tzinfo=timezone.utc)
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SEARCH = "# my search\nkind: search\nname: digits-cnn\nhypermodel: sleep\noracle: {max_trials: 4}\n"


# --- the CRDs ------------------------------------------------------------------------


def _close(schema: Any) -> Any:
    """Every object schema that lists its properties refuses other keys."""
    if isinstance(schema, dict):
        out = {k: _close(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_close(v) for v in schema]
    return schema


@functools.cache
def validator(kind: str) -> jsonschema.Draft4Validator:
    """The closed v1 schema of ``kind`` (RayCluster or RayJob)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    path = KUBERAY / f"ray.io_{kind.lower()}s.yaml"
    crd = yaml.load(path.read_text(), Loader=loader)
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _close(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def crd_errors(manifest: dict[str, Any]) -> list[str]:
    """Every way ``manifest`` breaks its CRD or KubeRay's own name rules."""
    kind = manifest["kind"]
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator(kind).iter_errors(manifest)
    ]
    name = manifest["metadata"]["name"]
    limit = MAX_RAYCLUSTER_NAME if kind == "RayCluster" else MAX_RAYJOB_NAME
    if len(name) > limit or not DNS_1035.match(name):
        errors.append(f"metadata.name: {name!r} is not a DNS-1035 label of <= {limit}")
    return errors


def test_the_crds_are_kuberays_unchanged() -> None:
    origin = (KUBERAY / "ORIGIN.md").read_text()
    sums = dict(re.findall(r"\| `([^`]+)` \| `([0-9a-f]{64})` \|", origin))
    assert set(sums) == {"ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml", "LICENSE"}
    for name, digest in sums.items():
        assert hashlib.sha256((KUBERAY / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (KUBERAY / "LICENSE").read_text()


# --- the clusters and searches -------------------------------------------------------


def _spec(**overrides: Any) -> ClusterSpec:
    data: dict[str, Any] = {
        "name": "lab",
        "chief": {"host": "0.0.0.0", "insecure": True},
        "storage": "/mnt/ktc/searches",
        "nodes": [
            {"name": "a", "host": "10.0.0.1", "gpus": [0, 1, 2, 3], "cpus": 16},
            {"name": "b", "host": "10.0.0.2", "gpus": [0, 1, 2, 3], "cpus": 16},
            {"name": "c", "host": "10.0.0.3", "gpus": [0, 1], "cpus": 8},
            {"name": "d", "host": "cpu-d", "cpus": 8, "cpu_workers": 2},
        ],
    }
    data.update(overrides)
    return ClusterSpec.model_validate(data)


def _clusters() -> list[ClusterSpec]:
    out = [
        _spec(),
        _spec(nodes=[{"name": "solo", "cpus": 2}], chief={}),
        _spec(name="0-Lab_with.odd.NAME" + "x" * 60),
        load_cluster(REPO / "configs" / "gpu-cluster.yaml").model_copy(update={"storage": "~/ktc"}),
    ]
    return out


@pytest.fixture
def search_file(tmp_path: Path) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(SEARCH)
    return path


def _job(spec: ClusterSpec, search: Path, **options: Any) -> list[dict[str, Any]]:
    docs = render_data(
        spec,
        RenderFormat.KUBERAY_JOB,
        RenderOptions(search_file=str(search), now=NOW, **options),
    )
    assert isinstance(docs, list)
    return docs


# --- RayCluster ---------------------------------------------------------------------


@pytest.mark.parametrize("ray_auth", [None, False])
@pytest.mark.parametrize("index", range(4))
def test_raycluster_follows_the_crd(index: int, ray_auth: bool | None) -> None:
    spec = _clusters()[index]
    options = RenderOptions(ray_auth=ray_auth, image="img:1", namespace="ml")
    manifest = yaml.safe_load(render(spec, RenderFormat.KUBERAY, options))
    assert crd_errors(manifest) == []


def test_the_check_has_teeth() -> None:
    good = render_data(_spec(), RenderFormat.KUBERAY, RenderOptions())
    assert crd_errors(good) == []
    cases = {
        "unknown key": (["spec"], "authOption", {"mode": "token"}),
        "wrong type": (["spec", "workerGroupSpecs", 0], "replicas", "1"),
        "bad enum": (["spec", "authOptions"], "mode", "tokens"),
        "string param": (["spec", "headGroupSpec", "rayStartParams"], "num-gpus", 4),
    }
    for what, (path, key, value) in cases.items():
        bad = copy.deepcopy(good)
        target = bad
        for part in path:
            target = target[part]
        target[key] = value
        assert crd_errors(bad), what
    missing = copy.deepcopy(good)
    del missing["spec"]["workerGroupSpecs"][0]["template"]
    assert any("'template' is a required property" in e for e in crd_errors(missing))
    long_name = copy.deepcopy(good)
    long_name["metadata"]["name"] = "a" * 54
    assert crd_errors(long_name) == [
        f"metadata.name: {'a' * 54!r} is not a DNS-1035 label of <= 53"
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Lab", "lab"),
        ("0lab", "ktc-0lab"),
        ("a_b.c", "a-b-c"),
        ("x" * 80, "x" * 53),
        ("9", "ktc-9"),
    ],
)
def test_resource_names_are_dns_1035(name: str, expected: str) -> None:
    assert k8s_resource_name(name, MAX_RAYCLUSTER_NAME) == expected
    assert k8s_resource_name("---", MAX_RAYCLUSTER_NAME) == "ktc"
    manifest = render_data(_spec(name=name), RenderFormat.KUBERAY, RenderOptions())
    assert manifest["metadata"]["name"] == expected


# --- RayJob -------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(4))
def test_rayjob_follows_the_crd(index: int, search_file: Path) -> None:
    config_map, job = _job(_clusters()[index], search_file, namespace="ml")
    assert crd_errors(job) == []
    assert config_map["kind"] == "ConfigMap" and config_map["apiVersion"] == "v1"
    assert config_map["metadata"] == job["metadata"]
    assert job["metadata"]["namespace"] == "ml"


def test_rayjob_cluster_is_the_rayclusters_plus_the_job_files(search_file: Path) -> None:
    spec = _spec()
    raycluster = render_data(spec, RenderFormat.KUBERAY, RenderOptions())
    config_map, job = _job(spec, search_file)
    name = job["metadata"]["name"]
    assert name == "digits-cnn-20261130-183005"
    inner = copy.deepcopy(job["spec"]["rayClusterSpec"])
    pod = inner["headGroupSpec"]["template"]["spec"]
    assert pod.pop("volumes") == [{"name": "ktc-job", "configMap": {"name": name}}]
    assert pod["containers"][0].pop("volumeMounts") == [
        {"name": "ktc-job", "mountPath": "/etc/ktcluster/job", "readOnly": True}
    ]
    assert inner == raycluster["spec"]
    assert job["spec"]["shutdownAfterJobFinishes"] is False
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["submissionMode"] == "K8sJobMode"


def test_rayjob_entrypoint_runs_submit_in_the_foreground(search_file: Path) -> None:
    _, job = _job(_spec(), search_file)
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:4] == ["python", "-m", "orchestrator.storage", "/mnt/ktc/searches"]
    submit = argv[argv.index("&&") + 1 :]
    assert submit == [
        "ktc",
        "submit",
        "/etc/ktcluster/job/search.yaml",
        "--cluster",
        "/etc/ktcluster/job/cluster.yaml",
        "--no-progress",
        "--dir",
        "/mnt/ktc/searches/digits-cnn-20261130-183005",
    ]
    assert job["spec"]["metadata"] == {
        "ktcluster-search": "digits-cnn",
        "ktcluster-search-dir": "/mnt/ktc/searches/digits-cnn-20261130-183005",
    }


def test_a_home_storage_expands_in_the_pods_shell(search_file: Path, tmp_path: Path) -> None:
    _, job = _job(_spec(storage="~/my searches"), search_file)
    entry = job["spec"]["entrypoint"]
    # Stand-ins for the two commands: print each argument on its own line.
    script = entry.replace("python -m orchestrator.storage", "printf '%s\\n'").replace(
        "ktc submit", "printf '%s\\n'"
    )
    out = subprocess.run(
        ["sh", "-c", script],
        env={"HOME": "/home/ray", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "/home/ray/my searches"
    assert out[-1] == "/home/ray/my searches/digits-cnn-20261130-183005"


def test_the_configmap_ships_both_files(search_file: Path, tmp_path: Path) -> None:
    spec = _spec(
        ray={"address": "10.0.0.1:6379", "dashboard": "10.0.0.1:8265"},
        chief={"host": "0.0.0.0", "port": 50051, "advertise": "10.0.0.1", "insecure": True},
    )
    config_map, _ = _job(spec, search_file)
    data = config_map["data"]
    assert data["search.yaml"] == SEARCH  # byte for byte, comments included
    shipped = parse_cluster(data["cluster.yaml"], "cluster.yaml")
    assert shipped.ray.address == "auto" and shipped.ray.dashboard is None
    assert shipped.ray.working_dir is None
    assert shipped.chief.advertise is None and shipped.chief.port == 50051
    assert shipped.model_copy(update={"ray": spec.ray, "chief": spec.chief}) == spec
    kept = _spec(ray={"working_dir": "s3://bucket/code.zip"})
    shipped = parse_cluster(_job(kept, search_file)[0]["data"]["cluster.yaml"], "c.yaml")
    assert shipped.ray.working_dir == "s3://bucket/code.zip"
    # The text survives YAML as a block and round-trips.
    options = RenderOptions(search_file=str(search_file), now=NOW)
    text = render(spec, RenderFormat.KUBERAY_JOB, options)
    docs = list(yaml.safe_load_all(text))
    assert docs[0]["data"] == data
    assert "  search.yaml: |\n    # my search\n" in text


def test_a_long_search_name_keeps_the_time(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SEARCH.replace("digits-cnn", "9-" + "very-long-name" * 6))
    _, job = _job(_spec(), path)
    name = job["metadata"]["name"]
    assert name.endswith("-20261130-183005") and len(name) <= MAX_RAYJOB_NAME
    assert DNS_1035.match(name) and name.startswith("ktc-9-very")


def test_rayjob_refusals(search_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"the cluster file has no storage; expected storage"):
        _job(_spec(storage=None), search_file)
    with pytest.raises(DeployError, match=r"storage '~ray/x' names another user's home"):
        _job(_spec(storage="~ray/x"), search_file)
    loopback = _spec(
        chief={"host": "127.0.0.1"}, nodes=[{"name": "a", "cpus": 2}, {"name": "b", "cpus": 2}]
    )
    with pytest.raises(DeployError, match=r"chief\.host is '127\.0\.0\.1', but the cluster has 2"):
        _job(loopback, search_file)
    with pytest.raises(DeployError, match=r"--job-name 'Bad_Name': expected a DNS-1035 label"):
        _job(_spec(), search_file, job_name="Bad_Name")
    relative = tmp_path / "rel.yaml"
    relative.write_text(SEARCH + "dataset: {source: npz, path: data/x.npz}\n")
    with pytest.raises(ConfigError, match=r"rel\.yaml:6: dataset\.path: 'data/x\.npz' is relative"):
        _job(_spec(), relative)
    with pytest.raises(DeployError, match=r"expected --search SEARCH\.yaml"):
        render_data(_spec(), RenderFormat.KUBERAY_JOB, RenderOptions())


def test_cli_render_kuberay_job(
    search_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = tmp_path / "c.yaml"
    cluster.write_text(yaml.safe_dump(_spec().model_dump(mode="json", exclude_unset=True)))
    out = tmp_path / "job.yaml"
    argv = ["cluster", "render", str(cluster), "--format", "kuberay-job"]
    assert ktc_main([*argv, "--search", str(search_file), "--out", str(out)]) == 0
    config_map, job = yaml.safe_load_all(out.read_text())
    assert crd_errors(job) == [] and config_map["kind"] == "ConfigMap"
    capsys.readouterr()
    assert ktc_main(argv) == 2
    assert "go with --format kuberay-job only, which needs --search" in capsys.readouterr().err
    assert (
        ktc_main(["cluster", "render", str(cluster), "--format", "kuberay", "--search", "x"]) == 2
    )


def test_tls_files_ship_as_absolute_paths_in_the_head_pod(
    search_file: Path, tmp_path: Path
) -> None:
    for name in ("s.pem", "s.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    cluster = tmp_path / "c.yaml"
    cluster.write_text(
        "name: lab\nstorage: /mnt/ktc\nchief: {host: 0.0.0.0, tls: {cert: s.pem, key: s.key, "
        "ca: ca.pem}}\nnodes:\n  - {name: a, cpus: 2}\n  - {name: b, cpus: 2}\n"
    )
    config_map, job = _job(load_cluster(cluster), search_file)
    assert crd_errors(job) == []
    shipped = yaml.safe_load(config_map["data"]["cluster.yaml"])
    assert shipped["chief"]["tls"] == {
        "cert": str(tmp_path / "s.pem"),
        "key": str(tmp_path / "s.key"),
        "ca": str(tmp_path / "ca.pem"),
    }
    assert (
        "paths (chief.tls, storage) are paths in the head pod" in config_map["data"]["cluster.yaml"]
    )
