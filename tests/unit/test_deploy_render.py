"""deploy.render: ray-up (validated against Ray's own schema), kuberay, commands;
plus the `ktc cluster up/down` wrapper around a fake `ray` executable."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml

from deploy.launcher import LauncherAction, run_launcher
from deploy.render import RenderFormat, RenderOptions, render, render_data
from orchestrator.cli.main import main as ktc_main
from orchestrator.config import load_cluster
from orchestrator.config.cluster import ClusterSpec
from orchestrator.errors import DeployError

REPO = Path(__file__).resolve().parents[2]
RAY_SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _spec(**overrides: Any) -> ClusterSpec:
    data: dict[str, Any] = {
        "name": "lab",
        "chief": {"insecure": True},
        "nodes": [
            {"name": "a", "host": "10.0.0.1", "gpus": [0, 1, 2, 3], "cpus": 16},
            {"name": "b", "host": "10.0.0.2", "gpus": [0, 1, 2, 3], "cpus": 16},
            {"name": "c", "host": "10.0.0.3", "gpus": [0, 1], "cpus": 8},
            {"name": "d", "host": "cpu-d", "cpus": 8, "cpu_workers": 2},
        ],
    }
    data.update(overrides)
    return ClusterSpec.model_validate(data)


@pytest.fixture(params=["built", "gpu-cluster", "mixed"])
def spec(request: pytest.FixtureRequest) -> ClusterSpec:
    if request.param == "built":
        return _spec()
    path = REPO / "configs" / f"{request.param}.yaml"
    if not path.exists():
        pytest.skip(f"{path} not written yet")
    return load_cluster(path)


# --- ray-up -----------------------------------------------------------------


def test_ray_up_validates_against_rays_schema(spec: ClusterSpec) -> None:
    text = render(spec, RenderFormat.RAY_UP)
    config = yaml.safe_load(text)
    jsonschema.validate(config, RAY_SCHEMA)
    assert config["provider"] == {
        "type": "local",
        "head_ip": spec.nodes[0].host,
        "worker_ips": [n.host for n in spec.nodes[1:]],
    }
    assert "available_node_types" not in config  # the local provider refuses it


def test_ray_up_head_and_worker_start_commands() -> None:
    config = render_data(_spec(), RenderFormat.RAY_UP, RenderOptions(ssh_user="me"))
    assert config["auth"] == {"ssh_user": "me", "ssh_private_key": "~/.ssh/id_rsa"}
    assert config["setup_commands"] == ["pip install ktcluster"]
    head = config["head_start_ray_commands"][-1]
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3 ray start --head --port=6379" in head
    assert "--num-gpus=4 --num-cpus=16 --resources='{\"ktc_node_a\":1000}'" in head
    assert "RAY_AUTH_MODE=token" in head
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    dispatch = config["worker_start_ray_commands"][-1]
    for host, cvd, gpus, cpus, res in [
        ("10.0.0.2", "0,1,2,3", 4, 16, "ktc_node_b"),
        ("10.0.0.3", "0,1", 2, 8, "ktc_node_c"),
        ("cpu-d", "", 0, 8, "ktc_node_d"),
    ]:
        assert (
            f"{host}) RAY_AUTH_MODE=token CUDA_VISIBLE_DEVICES={cvd} ray start "
            f"--address=$RAY_HEAD_IP:6379 --num-gpus={gpus} --num-cpus={cpus} "
            f"--resources='{{\"{res}\":1000}}'; exit $?;;"
        ) in dispatch


def test_ray_up_without_ray_auth_has_no_token() -> None:
    config = render_data(_spec(), RenderFormat.RAY_UP, RenderOptions(ray_auth=False))
    assert config["file_mounts"] == {}
    assert "RAY_AUTH_MODE" not in json.dumps(config)


def _fake_ray(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    ray_exe = bin_dir / "ray"
    ray_exe.write_text("#!/bin/sh\n" + body)
    ray_exe.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(
    ("instance_id", "expected"),
    [
        ("10.0.0.3", "CVD=0,1 AUTH=token start --address=10.0.0.9:6379 --num-gpus=2 --num-cpus=8"),
        ("cpu-d", "CVD= AUTH=token start --address=10.0.0.9:6379 --num-gpus=0 --num-cpus=8"),
    ],
)
def test_worker_dispatch_starts_the_matching_node(
    tmp_path: Path, instance_id: str, expected: str
) -> None:
    config = render_data(_spec(), RenderFormat.RAY_UP, RenderOptions())
    bin_dir = _fake_ray(tmp_path, 'echo "CVD=$CUDA_VISIBLE_DEVICES AUTH=$RAY_AUTH_MODE $*"\n')
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RAY_HEAD_IP": "10.0.0.9",
        "RAY_CLOUD_INSTANCE_ID": instance_id,
    }
    # Ray's SSH runner wraps each command in a subshell: `( cmd )`.
    cmd = "(" + config["worker_start_ray_commands"][-1] + ")"
    out = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(expected)


def test_worker_dispatch_matches_by_hostname_and_refuses_strangers(tmp_path: Path) -> None:
    me = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    spec = _spec(
        nodes=[
            {"name": "h", "host": "10.0.0.1", "gpus": [0], "cpus": 2},
            {"name": "me", "host": me, "gpus": [1], "cpus": 2},
        ]
    )
    cmd = (
        "("
        + render_data(spec, RenderFormat.RAY_UP, RenderOptions())["worker_start_ray_commands"][-1]
        + ")"
    )
    bin_dir = _fake_ray(tmp_path, 'echo "CVD=$CUDA_VISIBLE_DEVICES $*"\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_HEAD_IP": "h"}
    env.pop("RAY_CLOUD_INSTANCE_ID", None)
    out = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith("CVD=1 start --address=h:6379"), out.stderr

    stranger = _spec(
        nodes=[
            {"name": "h", "host": "10.0.0.1", "gpus": [0], "cpus": 2},
            {"name": "x", "host": "no-such-host.invalid", "cpus": 2},
        ]
    )
    cmd = (
        "("
        + render_data(stranger, RenderFormat.RAY_UP, RenderOptions())["worker_start_ray_commands"][
            -1
        ]
        + ")"
    )
    out = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "is none of the worker hosts of cluster lab (no-such-host.invalid)" in out.stderr


def test_ray_up_refuses_two_nodes_on_one_host() -> None:
    spec = _spec(
        nodes=[
            {"name": "a", "host": "10.0.0.1", "gpus": [0], "cpus": 2},
            {"name": "b", "host": "10.0.0.1", "gpus": [1], "cpus": 2},
        ]
    )
    with pytest.raises(DeployError, match=r"nodes 'a' and 'b' both have host '10\.0\.0\.1'"):
        render(spec, RenderFormat.RAY_UP)


# --- kuberay ----------------------------------------------------------------


def test_kuberay_manifest_structure() -> None:
    manifest = yaml.safe_load(render(_spec(), RenderFormat.KUBERAY, RenderOptions(image="img:1")))
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"] == "lab"
    spec = manifest["spec"]
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"] == {
        "num-gpus": "4",
        "num-cpus": "16",
        "resources": "'{\"ktc_node_a\":1000}'",
    }
    assert head["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "16",
        "nvidia.com/gpu": 4,
    }
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert list(groups) == ["b", "c", "d"]  # one group per node: labels stay unique
    shapes = {}
    for name, gpus, cpus in [("b", 4, 16), ("c", 2, 8), ("d", 0, 8)]:
        group = groups[name]
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 1
        params = group["rayStartParams"]
        assert params["num-gpus"] == str(gpus) and params["num-cpus"] == str(cpus)
        assert json.loads(params["resources"].strip("'")) == {f"ktc_node_{name}": 1000}
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] == "img:1"
        assert container["resources"]["limits"].get("nvidia.com/gpu", 0) == gpus
        shapes[name] = group["template"]["metadata"]["labels"]["ktcluster.io/shape"]
    assert shapes == {"b": "gpus4-cpus16", "c": "gpus2-cpus8", "d": "gpus0-cpus8"}


def test_kuberay_refuses_sparse_gpu_lists() -> None:
    spec = _spec(nodes=[{"name": "a", "host": "h", "gpus": [0, 1, 3], "cpus": 4}])
    with pytest.raises(
        DeployError, match=r"nodes\[0\] \(a\)\.gpus: expected \[0, 1, 2\].*got \[0, 1, 3\]"
    ):
        render(spec, RenderFormat.KUBERAY)


# --- commands ---------------------------------------------------------------


def test_commands_line_by_line() -> None:
    spec = _spec(
        nodes=[
            {"name": "a", "host": "10.0.0.1", "gpus": [0, 1, 3], "cpus": 16},
            {"name": "b", "host": "10.0.0.2", "gpus": [2], "cpus": 4},
        ]
    )
    lines = [
        line
        for line in render(spec, RenderFormat.COMMANDS, RenderOptions(ray_auth=False)).splitlines()
        if not line.startswith("# ktcluster") and not line.startswith("# Ray")
    ]
    assert lines == [
        "# node a (10.0.0.1)",
        "CUDA_VISIBLE_DEVICES=0,1,3 ray start --head --port=6379 --num-gpus=3 --num-cpus=16 "
        "--resources='{\"ktc_node_a\":1000}'",
        "# node b (10.0.0.2)",
        "CUDA_VISIBLE_DEVICES=2 ray start --address=10.0.0.1:6379 --num-gpus=1 --num-cpus=4 "
        "--resources='{\"ktc_node_b\":1000}'",
    ]
    argv = shlex.split(lines[1])
    assert argv[-1] == '--resources={"ktc_node_a":1000}'  # valid JSON after shell parsing


def test_commands_keep_ray_auth_by_default(spec: ClusterSpec) -> None:
    lines = [ln for ln in render(spec, RenderFormat.COMMANDS).splitlines() if "ray start" in ln]
    assert len(lines) == len(spec.nodes)
    for node, line in zip(spec.nodes, lines, strict=True):
        assert line.startswith(
            f"RAY_AUTH_MODE=token CUDA_VISIBLE_DEVICES={','.join(map(str, node.gpus))} ray start"
        )
        assert f"--resources='{{\"ktc_node_{node.name}\":1000}}'" in line


# --- ray up / ray down wrapper ----------------------------------------------


def test_run_launcher_passes_the_rendered_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "argv.txt"
    bin_dir = _fake_ray(tmp_path, f'echo "$@" > {record}\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cluster_name: x\n")
    result = run_launcher(LauncherAction.DOWN, cfg)
    assert record.read_text().split() == ["down", "-y", str(cfg)]
    assert result.returncode == 0


def test_run_launcher_reports_ssh_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _fake_ray(
        tmp_path, 'echo "ssh: connect to host 10.0.0.2 port 22: Connection refused" >&2\nexit 255\n'
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(DeployError, match=r"(?s)exited with code 255.*Connection refused.*ssh -i"):
        run_launcher(LauncherAction.UP, tmp_path / "c.yaml")


def test_run_launcher_without_ray_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeployError, match=r"the `ray` command was not found on PATH"):
        run_launcher(LauncherAction.UP, tmp_path / "c.yaml")


def test_cli_up_dry_run_and_real(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = REPO / "configs" / "gpu-cluster.yaml"
    if not cluster.exists():
        pytest.skip("configs/gpu-cluster.yaml not written yet")
    assert ktc_main(["cluster", "up", str(cluster), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# would run: ray up -y ")
    jsonschema.validate(yaml.safe_load(out), RAY_SCHEMA)

    record = tmp_path / "argv.txt"
    bin_dir = _fake_ray(tmp_path, f'echo "$@" > {record}; cat "$3" >> {record}\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    out_file = tmp_path / "rendered.yaml"
    rc = ktc_main(["cluster", "up", str(cluster), "--yes", "--no-ray-auth", "--out", str(out_file)])
    assert rc == 0
    assert record.read_text().startswith(f"up -y {out_file}\n")
    assert "head_ip: 10.0.0.1" in record.read_text()

    (tmp_path / "failing").mkdir()
    bin_dir2 = _fake_ray(tmp_path / "failing", "echo 'Permission denied (publickey)' >&2; exit 1\n")
    monkeypatch.setenv("PATH", f"{bin_dir2}:{os.environ['PATH']}")
    assert ktc_main(["cluster", "down", str(cluster), "--yes", "--no-ray-auth"]) == 1
    assert "Permission denied (publickey)" in capsys.readouterr().err


# --- the head's port ----------------------------------------------------------


def _two_nodes(address: str) -> ClusterSpec:
    return _spec(
        ray={"address": address},
        nodes=[
            {"name": "a", "host": "10.0.0.1", "gpus": [0], "cpus": 4},
            {"name": "b", "host": "10.0.0.2", "gpus": [0], "cpus": 4},
        ],
    )


@pytest.mark.parametrize("fmt", [RenderFormat.COMMANDS, RenderFormat.RAY_UP])
def test_the_head_port_comes_from_ray_address(fmt: RenderFormat) -> None:
    text = render(_two_nodes("10.0.0.1:7000"), fmt, RenderOptions(ray_auth=False))
    assert "--port=7000" in text and "6379" not in text
    if fmt is RenderFormat.COMMANDS:
        assert "--address=10.0.0.1:7000" in text
    # No port in ray.address: Ray's default; --head-port that agrees is fine.
    assert "--port=6379" in render(_two_nodes("auto"), fmt, RenderOptions(ray_auth=False))
    agreed = render(_two_nodes("10.0.0.1:7000"), fmt, RenderOptions(head_port=7000))
    assert "--port=7000" in agreed


def test_a_head_port_that_conflicts_with_ray_address_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = tmp_path / "c.yaml"
    cluster.write_text(
        "kind: cluster\nname: lab\nray: {address: '10.0.0.1:7000'}\nchief: {insecure: true}\n"
        "nodes:\n  - {name: a, host: 10.0.0.1, cpus: 4}\n  - {name: b, host: 10.0.0.2, cpus: 4}\n"
    )
    for fmt in ("commands", "ray-up"):
        argv = ["cluster", "render", str(cluster), "--format", fmt, "--head-port", "6379"]
        assert ktc_main(argv) == 2
        err = capsys.readouterr().err
        assert "--head-port 6379 conflicts with ray.address '10.0.0.1:7000' (port 7000)" in err


def test_up_local_pins_the_head_port_it_is_given() -> None:
    from deploy.local import node_args, node_plan

    plan = node_plan(_two_nodes("auto"), 7123)
    assert plan["head_port"] == 7123
    head, other = plan["nodes"]
    assert node_args(head, head_port=plan["head_port"])["gcs_server_port"] == 7123
    assert "gcs_server_port" not in node_args(other)
    assert node_plan(_two_nodes("auto"), None)["head_port"] is None
