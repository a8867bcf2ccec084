"""Why a worker is pending, in words its user can act on (fleet/placement.py)."""

from __future__ import annotations

from orchestrator.config import WorkerSlot, node_resource_name
from orchestrator.fleet.placement import group_name, holder_key, pending_reason, search_tag

SLOT = WorkerSlot(
    worker_id="a-w0",
    node="a",
    host="127.0.0.1",
    index=0,
    gpus=(0,),
    gpu_share=1.0,
    memory_cap_mb=None,
    cpus=2.0,
)
LABEL = node_resource_name("a")


def test_group_names_carry_the_search_and_a_safe_readable_name() -> None:
    name = group_name("ktc-3fa2b1c9-ab12cd", "a-w0", 2, "digits-20261130-101010")
    assert name == "ktc-3fa2b1c9-ab12cd-a-w0-slot2@digits-20261130-101010"
    assert search_tag(name) == "ktc-3fa2b1c9"
    # A directory name is the user's: anything outside [A-Za-z0-9._-] is replaced,
    # so the mark stays the last '@', and it is kept short.
    odd = group_name("ktc-3fa2b1c9-ab12cd", "a-w0", 1, "my search@home/" + "x" * 100)
    assert odd.count("@") == 1 and odd.endswith("@my_search_home_" + "x" * 49)
    assert group_name("ktc-3fa2b1c9-ab12cd", "a-w0", 1) == "ktc-3fa2b1c9-ab12cd-a-w0-slot1"


def test_the_reason_names_what_the_slot_needs_and_who_holds_the_node() -> None:
    by_label = {LABEL: {"CPU": 4.0, "GPU": 1.0}}
    other = holder_key(group_name("ktc-3fa2b1c9-ab12cd", "a-w0", 1, "digits-20261130-101010"))
    unnamed = holder_key(group_name("ktc-77aa0011-ffffff", "a-w1", 1))
    own = search_tag("ktc-0badcafe-123456")
    holders = {
        LABEL: {
            other: {"CPU": 2.0, "GPU": 1.0},
            unnamed: {"CPU": 1.0, "GPU": 0.0},
            own: {"CPU": 1.0, "GPU": 0.0},
        }
    }
    reason = pending_reason(SLOT, by_label, holders, own)
    assert reason.startswith(
        "waiting for resources on node 'a': the worker needs 2 CPU, 1 GPU; "
        "the node has 4 CPU, 1 GPU in total, held: "
    ), reason
    assert "2 CPU, 1 GPU by ktcluster search digits-20261130-101010 (3fa2b1c9)" in reason
    assert "1 CPU by ktcluster search 77aa0011" in reason
    assert "1 CPU by this search's other workers" in reason


def test_a_node_missing_from_ray_is_named_with_the_fix() -> None:
    reason = pending_reason(SLOT, {}, {})
    assert f"no Ray node carries the label {LABEL}" in reason
    assert "`ktc cluster up`" in reason
    assert pending_reason(SLOT, {LABEL: {"CPU": 1.0}}).endswith("the rest is in use")
