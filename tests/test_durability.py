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


# --- a dead link: the readings of its time are missing, and the store says so ------------
def test_a_dead_link_loses_its_readings_for_the_time_it_was_down_and_records_the_gap(
        tmp_path):
    """The QCM's link down for 90 s mid-deposit, a rule watching it: the QCM has no reading
    from the sample that found it lost to the one after it came back, every other
    instrument reads on, and the gap is in the store at both ends (link-health readings
    and alarms), never silent."""
    from test_engine import Bench

    bench = Bench(tmp_path, thickness_nm=30,
                  extra='  - {when: "qcm.link_health > 0 for 30 s", then: pause}\n')
    emulator = bench.lab.sim.emulators["qcm"]

    def unplug():
        emulator.faults.unplugged = True

        def replug():
            yield bench.env.timeout(90.0)
            emulator.faults.unplugged = False

        bench.env.process(replug())

    bench.at_deposit(unplug)
    assert bench.engine.run().status == "completed"
    store, run_id = bench.store, bench.run_id
    lost, restored = [a for a in store.alarms(run_id) if a.source == "qcm"
                      and a.message.startswith("link to sim://qcm")]
    assert lost.message.startswith("link to sim://qcm lost") and lost.severity == "error"
    assert restored.message == "link to sim://qcm restored"
    health = list(store.readings(run_id, ["qcm.link_health"]))
    assert [(t, v) for t, _, v in health] == [(lost.t_s, 2.0), (restored.t_s, 0.0)]
    qcm = [t for t, _, _ in store.readings(run_id, ["qcm.thickness_nm"])]
    rf = [t for t, _, _ in store.readings(run_id, ["rf.forward_power_W"])]
    period = bench.recipe.record_every_s
    missing = [t for t in rf if lost.t_s <= t < restored.t_s]
    assert len(missing) >= 90 / period - 1  # the others read on through the gap ...
    assert not [t for t in qcm if lost.t_s <= t < restored.t_s]  # ... the QCM did not
    before, after = max(t for t in qcm if t < lost.t_s), min(t for t in qcm if t >= lost.t_s)
    assert lost.t_s - before == pytest.approx(period)  # nothing lost but the gap itself
    assert after == pytest.approx(restored.t_s)
