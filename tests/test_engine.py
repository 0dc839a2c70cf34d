"""The engine on the simulated sputter tool: targets met, faults end safe, holds recover."""

from __future__ import annotations

import pytest
import simpy

from lipon_hw.deposition import runner
from lipon_hw.deposition.recipe import load_recipe
from lipon_hw.deposition.runner import Engine
from lipon_hw.errors import LinkLost, RunAborted
from lipon_hw.station import load_station
from lipon_hw.store import Store

from recipes import short_recipe


class Bench:
    """A run wired by hand so a test can reach into the simulated world mid-run."""

    def __init__(self, tmp_path, thickness_nm=30, extra=""):
        self.station = load_station()
        self.recipe = load_recipe(str(short_recipe(tmp_path, thickness_nm, extra=extra)),
                                  self.station)
        self.env = simpy.Environment()
        self.lab = self.station.connect(lambda: self.env.now)
        self.world = self.lab.sim.world
        self.tool = self.world.sputter
        self.store = Store(tmp_path / "data")
        self.run_id = self.store.create_run(self.recipe.name, "deposition", "short.yaml",
                                            self.recipe.text, self.station.text, 1, "T-1")
        self.engine = Engine(self.recipe, self.lab, self.store, self.run_id, self.env)

    def at_deposit(self, action, after_s=60.0):
        """Run `action()` `after_s` into the deposit step."""

        def proc():
            while self.engine.ctx.step_idx < 4 or not self.tool.s.shutter_open:
                yield self.env.timeout(1)
            yield self.env.timeout(after_s)
            action()

        self.env.process(proc())

    def assert_safe(self):
        s = self.tool.s
        assert not s.rf_on and not s.shutter_open and s.gas_flow_sccm == 0
        assert any(a.message.startswith("safe state") for a in self.store.alarms(self.run_id))


def test_short_run_reaches_target_and_ends_safe(tmp_path):
    bench = Bench(tmp_path, thickness_nm=30)
    result = bench.engine.run()
    assert result.status == "completed"
    layer = bench.store.film_stack("T-1")[0]
    assert layer.material == "LiPON"
    assert layer.thickness_nm == pytest.approx(30, abs=0.3)
    # the world agrees with the monitor once tooling is applied
    assert bench.tool.film_stack()[0]["thickness_nm"] == pytest.approx(30, rel=0.02)
    assert bench.tool.pressure_torr() > 500  # vented
    bench.assert_safe()


def test_pressure_burst_aborts_to_safe_state(tmp_path):
    bench = Bench(tmp_path, thickness_nm=200)
    bench.at_deposit(lambda: setattr(bench.tool.s, "leak_torr_L_s", 1.0))
    with pytest.raises(RunAborted, match="pressure_torr > 0.03"):
        bench.engine.run()
    assert bench.store.run(bench.run_id).status == "aborted"
    bench.assert_safe()


def test_lost_monitor_link_fails_safe(tmp_path):
    bench = Bench(tmp_path, thickness_nm=200)
    bench.at_deposit(lambda: setattr(bench.lab.sim.emulators["qcm"].faults, "link_down", True))
    with pytest.raises(LinkLost, match="sim://qcm"):
        bench.engine.run()
    run = bench.store.run(bench.run_id)
    assert run.status == "failed" and "sim://qcm" in run.message
    bench.assert_safe()


def test_lost_rf_link_still_closes_shutter_and_gas(tmp_path):
    bench = Bench(tmp_path, thickness_nm=200)
    bench.at_deposit(lambda: setattr(bench.lab.sim.emulators["rf"].faults, "link_down", True))
    with pytest.raises(LinkLost):
        bench.engine.run()
    s = bench.tool.s
    assert not s.shutter_open and s.gas_flow_sccm == 0
    safe = [a for a in bench.store.alarms(bench.run_id) if a.message.startswith("safe state")]
    assert "FAILED for rf" in safe[-1].message
    # without gas the plasma dies even though RF could not be switched off
    bench.env.run(until=bench.env.now + 60)
    assert not bench.tool.rf_readings()["plasma"]


def test_garbled_frames_are_retried_without_a_trace_in_the_result(tmp_path):
    bench = Bench(tmp_path, thickness_nm=30)
    bench.at_deposit(lambda: setattr(bench.lab.sim.emulators["rf"].faults, "garble_replies", 2))
    assert bench.engine.run().status == "completed"


def test_mismatch_holds_deposition_then_recovers(tmp_path):
    bench = Bench(tmp_path, thickness_nm=40)
    sp = bench.tool.sp

    def detune():
        sp.matched_reflection = 0.3

    def retune():
        sp.matched_reflection = 0.006

    bench.at_deposit(detune, after_s=30)
    bench.at_deposit(retune, after_s=45)
    result = bench.engine.run()
    assert result.status == "completed"
    messages = [a.message for a in bench.store.alarms(bench.run_id)]
    assert any("shutter closed, RF off" in m for m in messages)
    assert any("cleared, process restored" in m for m in messages)
    assert bench.store.film_stack("T-1")[0].thickness_nm == pytest.approx(40, abs=0.3)


def test_ignition_outside_pressure_window_aborts(tmp_path):
    bench = Bench(tmp_path)
    bench.recipe.steps[1].params.n2_sccm = 2.0  # ~1.5 mTorr: no glow
    bench.recipe.steps[1].params.pressure_mtorr = None
    with pytest.raises(RunAborted, match="no matched plasma"):
        bench.engine.run()
    bench.assert_safe()


def test_checkpoint_holds_every_reading_before_it(tmp_path):
    bench = Bench(tmp_path, thickness_nm=30)
    bench.engine.run()
    cp = bench.store.last_checkpoint(bench.run_id)
    assert cp.step_idx == len(bench.recipe.steps)
    times = sorted({t for t, _, _ in bench.store.readings(bench.run_id)})
    assert times[-1] <= cp.t_s


def test_a_run_in_virtual_time_checkpoints_every_ten_minutes_and_at_every_step_end(
        tmp_path, monkeypatch):
    """The recipe asks for a checkpoint every 30 s (meant for hardware); on a virtual clock
    they are VIRTUAL_CHECKPOINT_S apart within a step, and every step still ends with one."""
    made: list[tuple[float, int]] = []
    real = Store.checkpoint

    def counted(store, run_id, t_s, step_idx, state):
        made.append((t_s, step_idx))
        return real(store, run_id, t_s, step_idx, state)

    monkeypatch.setattr(Store, "checkpoint", counted)
    bench = Bench(tmp_path, thickness_nm=30)
    assert bench.recipe.checkpoint_every_s == 30
    bench.engine.run()
    ends = {(s["t_end_s"], s["idx"] + 1) for s in bench.store.steps(bench.run_id)}
    assert ends <= set(made)  # after every step, at the moment it ended
    within = [(a, b) for a, b in zip(made, made[1:], strict=False)
              if b not in ends and a[1] == b[1]]
    assert within, made  # the long steps (pump-down, deposit) checkpoint on the way
    assert all(b[0] - a[0] >= 600 for a, b in within), made  # ten minutes: README


def test_operator_pause_continue_and_abort(tmp_path):
    bench = Bench(tmp_path, thickness_nm=60)
    store, run_id = bench.store, bench.run_id
    state = {}

    def pause():
        store.requests.make(run_id, "pause")

    def check_paused_then_continue():
        state["paused"] = (bench.engine.ctx.held, bench.tool.s.shutter_open, bench.tool.s.rf_on)
        store.requests.make(run_id, "continue")

    bench.at_deposit(pause, after_s=20)
    bench.at_deposit(check_paused_then_continue, after_s=600)
    assert bench.engine.run().status == "completed"
    assert state["paused"] == (True, False, False)
    messages = [a.message for a in store.alarms(run_id)]
    assert "pause requested: shutter closed, RF off" in messages
    assert "pause requested: cleared, process restored" in messages
    assert store.film_stack("T-1")[0].thickness_nm == pytest.approx(60, abs=0.3)

    (tmp_path / "b").mkdir()
    bench2 = Bench(tmp_path / "b", thickness_nm=200)
    bench2.at_deposit(lambda: bench2.store.requests.make(bench2.run_id, "abort"))
    with pytest.raises(RunAborted, match="aborted by the operator"):
        bench2.engine.run()
    bench2.assert_safe()


def test_a_request_from_another_process_is_taken_within_a_minute_of_run_time(tmp_path):
    """The engine reads the requests table at most once a wall second, but at least once
    every REQUESTS_EVERY_RUN_S of run time: an abort made through another connection (as
    `lipon-hw abort` makes it) mid-deposit is acted on within that much run time, even in
    a virtual-time run that lives hours in a wall second."""
    bench = Bench(tmp_path, thickness_nm=200)
    other = Store(tmp_path / "data")
    asked = []

    def abort():
        asked.append(bench.env.now)
        other.requests.make(bench.run_id, "abort")

    bench.at_deposit(abort, after_s=30)
    try:
        with pytest.raises(RunAborted, match="aborted by the operator"):
            bench.engine.run()
    finally:
        other.close()
    bench.assert_safe()
    (at,) = asked
    ended = bench.env.now  # the clock stopped where the abort was acted on
    assert at <= ended <= at + runner.REQUESTS_EVERY_RUN_S + bench.recipe.record_every_s


def test_a_pump_down_that_times_out_says_where_the_chamber_got(tmp_path):
    path = short_recipe(tmp_path, 30)
    path.write_text(path.read_text().replace("{below_torr: 2.0e-5, timeout_min: 60}",
                                             "{below_torr: 1.0e-9, timeout_min: 1}"))
    station = load_station()
    recipe = load_recipe(str(path), station)
    env = simpy.Environment()
    lab = station.connect(lambda: env.now)
    store = Store(tmp_path / "data")
    run_id = store.create_run(recipe.name, "deposition", str(path), recipe.text, station.text,
                              1, "T-1")
    with pytest.raises(RunAborted, match=r"pump_down: the chamber is above the 1\.0e-09 Torr "
                                         r"asked after 1 min \(\d\.\d\de[+-]\d\d Torr\)"):
        Engine(recipe, lab, store, run_id, env).run()
