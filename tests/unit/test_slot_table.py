"""The fleet's slot bookkeeping, without Ray: rows, growth and scale-down order."""

from __future__ import annotations

from orchestrator.config import parse_cluster
from orchestrator.fleet.slot_table import SlotTable
from orchestrator.protocol.status_document import WorkerState


def _table(workers: int = 3) -> SlotTable:
    cluster = parse_cluster(
        {"name": "t", "nodes": [{"name": "local", "cpus": workers, "cpu_workers": workers}]}
    )
    return SlotTable(cluster)


def test_rows_leave_out_retired_slots_with_no_actor() -> None:
    table = _table()
    table["local-w1"].wanted = False
    table["local-w2"].wanted = False
    table["local-w2"].state = WorkerState.DRAINING  # still finishing its trial
    rows = table.rows()
    assert [(r.worker_id, r.state) for r in rows] == [
        ("local-w0", WorkerState.STOPPED),
        ("local-w2", WorkerState.DRAINING),
    ]
    assert rows[0].trial_id is None and rows[0].gpus == ()


def test_grow_clones_the_node_shape_with_new_ids() -> None:
    table = _table(2)
    table.grow_to(4)
    assert table.ids() == ["local-w0", "local-w1", "local-w2", "local-w3"]
    assert table.unwanted_ids() == ["local-w2", "local-w3"]
    assert table["local-w3"].slot.index == 3 and table["local-w3"].slot.cpus == 1
    table.grow_node_to("local", 5)
    assert table.ids()[-1] == "local-w4"
    assert table.nodes() == {"local"}


def test_victims_pending_first_then_idle_then_the_newest_busy() -> None:
    table = _table(4)
    table["local-w0"].state = WorkerState.IDLE
    table["local-w1"].state = WorkerState.IDLE
    table["local-w2"].state = WorkerState.PENDING
    table["local-w3"].state = WorkerState.IDLE
    busy = {"local-w1", "local-w3"}
    victims = table.pick_victims(table.wanted_ids(), 4, busy.__contains__)
    assert victims == ["local-w2", "local-w0", "local-w3", "local-w1"]
