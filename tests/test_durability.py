"""What a power cut can take (issue 11, item 4): checkpoints and a run's status are
synced to the disk at their commit; readings between them are crash-safe only; a run in
virtual time does not pay one disk sync per checkpoint."""

from __future__ import annotations

import pytest

from lipon_hw import store as store_module
from lipon_hw.store import Store


@pytest.fixture
def traced(tmp_path):
    """A store and the statements its connection runs, in order."""
    store = Store(tmp_path)
    run_id = store.create_run("r", "deposition", "r.yaml", "", "", None, None)
    statements: list[str] = []
    store._db._con.set_trace_callback(statements.append)
    yield store, run_id, statements
    store.close()


def commits(statements: list[str]) -> list[str]:
    """The synchronous setting each COMMIT ran under."""
    mode, out = "NORMAL", []
    for sql in statements:
        if sql.startswith("PRAGMA synchronous="):
            mode = sql.split("=", 1)[1]
        elif sql == "COMMIT":
            out.append(mode)
    return out


def test_a_checkpoint_commits_synced_and_readings_do_not(traced):
    store, run_id, statements = traced
    store.add_readings(run_id, 1.0, {"qcm.thickness_nm": 1.0})
    store.flush()
    assert commits(statements) == ["NORMAL"]
    statements.clear()
    store.add_readings(run_id, 2.0, {"qcm.thickness_nm": 2.0})
    store.checkpoint(run_id, 2.0, 0, {"step_idx": 0})
    assert commits(statements) == ["FULL"]  # the reading goes to disk with its checkpoint
    assert statements[-1] == "PRAGMA synchronous=NORMAL"


def test_checkpoints_are_synced_at_most_once_per_wall_interval(traced, monkeypatch):
    store, run_id, statements = traced
    clock = [1000.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    store._last_synced = -store_module.SYNC_EVERY_S
    for k in range(5):  # five checkpoints in one wall instant: one sync
        store.checkpoint(run_id, float(k), 0, {"step_idx": 0})
    assert commits(statements) == ["FULL"] + ["NORMAL"] * 4
    statements.clear()
    clock[0] += store_module.SYNC_EVERY_S
    store.checkpoint(run_id, 9.0, 0, {"step_idx": 0})
    assert commits(statements) == ["FULL"]


def test_the_end_of_a_run_is_synced(traced):
    store, run_id, statements = traced
    store.add_readings(run_id, 1.0, {"qcm.thickness_nm": 1.0})
    store.set_status(run_id, "completed", "all steps done", {})
    assert "PRAGMA synchronous=FULL" in statements
    assert statements[-1] == "PRAGMA synchronous=NORMAL"
    full = statements.index("PRAGMA synchronous=FULL")
    assert any(s.startswith("UPDATE runs SET status") for s in statements[full:])
