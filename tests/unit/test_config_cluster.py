"""ClusterSpec: worker-map resolution for each layout, properties, and API errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.config import (
    WorkerSlot,
    default_cluster,
    load_cluster,
    node_resource_name,
    parse_cluster,
)
from orchestrator.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_default_cluster_is_embedded_with_two_cpu_workers() -> None:
    spec = default_cluster()
    assert spec.is_local and not spec.is_multi_machine
    assert spec.nodes[0].name == "local"
    assert spec.nodes[0].cpus == max(2, os.cpu_count() or 1)
    slots = spec.worker_slots()
    assert [s.worker_id for s in slots] == ["local-w0", "local-w1"]
    assert all(not s.is_gpu and s.gpu_share == 0.0 and s.cuda_visible_devices == "" for s in slots)


def test_cluster_defaults_to_default_node() -> None:
    assert parse_cluster({"ray": {"address": "local"}}).nodes == default_cluster().nodes


def test_one_worker_per_gpu_skips_gpus_not_listed() -> None:
    spec = parse_cluster("nodes:\n  - {name: n, gpus: [0, 1, 3], cpus: 8}\n")
    slots = spec.worker_slots()
    assert [s.gpus for s in slots] == [(0,), (1,), (3,)]
    assert [s.worker_id for s in slots] == ["n-w0", "n-w1", "n-w2"]
    assert slots[2] == WorkerSlot(
        worker_id="n-w2",
        node="n",
        host="127.0.0.1",
        index=2,
        gpus=(3,),
        gpu_share=1.0,
        memory_cap_mb=None,
        cpus=1.0,
    )
    assert slots[2].cuda_visible_devices == "3"
    assert slots[2].node_resource == node_resource_name("n") == "ktc_node_n"
    assert slots[2].is_gpu and not slots[2].is_multi_gpu


def test_explicit_list_with_a_two_gpu_worker() -> None:
    spec = load_cluster(REPO / "configs" / "mixed.yaml")
    big = [s for s in spec.worker_slots() if s.node == "big"]
    assert [(s.gpus, s.gpu_share, s.cpus) for s in big] == [
        ((2, 3), 2.0, 4.0),
        ((0,), 1.0, 2.0),
        ((1,), 1.0, 2.0),
        ((), 0.0, 2.0),
    ]
    assert big[0].is_multi_gpu and big[0].cuda_visible_devices == "2,3"
    assert big[3].memory_cap_mb is None


def test_packed_with_memory_cap_in_mb() -> None:
    spec = load_cluster(REPO / "configs" / "mixed.yaml")
    small = [s for s in spec.worker_slots() if s.node == "small"]
    assert [(s.gpus, s.gpu_share, s.memory_cap_mb) for s in small] == [
        ((0,), 0.5, 7000),
        ((0,), 0.5, 7000),
        ((1,), 0.5, 7000),
        ((1,), 0.5, 7000),
    ]


def test_packed_with_memory_cap_fraction() -> None:
    spec = parse_cluster(
        {
            "nodes": [
                {
                    "name": "p",
                    "gpus": [0],
                    "cpus": 4,
                    "gpu_memory_mb": 10000,
                    "workers_per_gpu": 3,
                    "memory_cap_fraction": 0.3,
                }
            ]
        }
    )
    slots = spec.worker_slots()
    assert len(slots) == 3
    assert {s.memory_cap_mb for s in slots} == {3000}
    assert slots[0].gpu_share == pytest.approx(1 / 3)


def test_cpu_only_workers_follow_cpus_per_worker() -> None:
    spec = parse_cluster("fleet: {cpus_per_worker: 2}\nnodes:\n  - {name: c, cpus: 5}\n")
    assert [(s.worker_id, s.cpus) for s in spec.worker_slots()] == [("c-w0", 2.0), ("c-w1", 2.0)]
    spec = parse_cluster("nodes:\n  - {name: c, cpus: 4, cpus_per_worker: 0.5, cpu_workers: 3}\n")
    assert [s.cpus for s in spec.worker_slots()] == [0.5, 0.5, 0.5]


def test_gpu_node_with_extra_cpu_workers_in_file_order() -> None:
    spec = parse_cluster(
        "nodes:\n  - {name: b, gpus: [0], cpus: 4, cpu_workers: 2}\n  - {name: a, cpus: 1}\n"
    )
    assert [s.worker_id for s in spec.worker_slots()] == ["b-w0", "b-w1", "b-w2", "a-w0"]
    assert [s.is_gpu for s in spec.worker_slots()] == [True, False, False, False]


def test_local_aliases_count_as_one_machine() -> None:
    spec = parse_cluster(
        "nodes:\n  - {name: a, host: localhost, cpus: 1}\n  - {name: b, host: 127.0.0.1, cpus: 1}\n"
    )
    assert not spec.is_multi_machine
    assert spec.hosts == ("127.0.0.1",)


def test_insecure_multi_machine_is_valid_with_a_warning() -> None:
    spec = load_cluster(REPO / "configs" / "gpu-cluster.yaml")
    assert spec.is_multi_machine and not spec.is_local
    assert len(spec.worker_slots()) == 8
    assert any("chief.insecure is true" in w for w in spec.warnings())


def test_local_ray_with_remote_hosts_warns() -> None:
    spec = parse_cluster(
        "chief: {insecure: true}\nnodes:\n  - {name: a, cpus: 1}\n  - {name: b, host: 10.1.1.1, cpus: 1}\n"
    )
    assert any(
        "nodes[1].host is '10.1.1.1' but ray.address is 'local'" in w for w in spec.warnings()
    )


def test_tls_paths_resolve_against_the_yaml_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "cfg" / "certs"
    certs.mkdir(parents=True)
    for name in ("chief.pem", "chief-key.pem", "ca.pem"):
        (certs / name).write_text("x")
    cluster = tmp_path / "cfg" / "cluster.yaml"
    cluster.write_text(
        "ray: {address: auto}\nchief:\n  tls: {cert: certs/chief.pem, key: certs/chief-key.pem, ca: certs/ca.pem}\n"
        "nodes:\n  - {name: a, host: 10.0.0.1, cpus: 1}\n  - {name: b, host: 10.0.0.2, cpus: 1}\n"
    )
    monkeypatch.chdir(tmp_path)  # not the YAML's folder
    spec = load_cluster(cluster)
    assert spec.chief.tls is not None
    assert spec.chief.tls.cert == certs / "chief.pem"
    assert spec.warnings() == []


def test_node_lookup() -> None:
    spec = load_cluster(REPO / "configs" / "mixed.yaml")
    assert spec.node("big").cpus == 12
    with pytest.raises(ConfigError, match=r"has no node 'nope'; known nodes: small, big"):
        spec.node("nope")


def test_specs_are_frozen() -> None:
    spec = default_cluster()
    with pytest.raises(ValidationError):
        spec.name = "other"  # type: ignore[misc]


def test_ray_addresses() -> None:
    for address in ("local", "auto", "10.0.0.1:6379", "ray://head:10001"):
        assert parse_cluster({"ray": {"address": address}}).ray.address == address
    with pytest.raises(ConfigError, match=r"ray\.address: port 99999 is out of range"):
        parse_cluster({"ray": {"address": "head:99999"}})


def test_parse_cluster_names_its_source() -> None:
    with pytest.raises(
        ConfigError, match=r"^scale-request:3: nodes\[0\]\.cpus: expected an integer"
    ):
        parse_cluster("nodes:\n  - name: a\n    cpus: x\n", source="scale-request")
