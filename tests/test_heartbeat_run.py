"""The heartbeat in deposition runs: the generator's host watchdog armed from the station,
kept fed through long quiet stretches, and tripping when the host stops talking."""

from __future__ import annotations

import subprocess
import sys

import pytest
import simpy
import simpy.rt

from lipon_hw.deposition import heartbeat
from lipon_hw.deposition.recipe import load_recipe
from lipon_hw.deposition.runner import Engine
from lipon_hw.errors import InputError, RunAborted
from lipon_hw.station import default_station_text, load_station
from lipon_hw.store import Store

from recipes import SHORT

DEFAULT_LIMITS = "limits: {max_power_W: 100}"
#: a presputter of 10 min read once a minute: the sampler alone would leave the
#: generator 60 s without a word, far past a 4 s watchdog
QUIET = (SHORT.replace("record_every_s: 5", "record_every_s: 60")
         .replace("presputter: {for_min: 1}", "presputter: {for_min: 10}")
         .replace("THICKNESS, max_h: 8", "3, max_h: 1"))


def station_text(watchdog: str = "host_watchdog_s: 4") -> str:
    text = default_station_text()
    assert DEFAULT_LIMITS in text
    return text.replace(DEFAULT_LIMITS, f"limits: {{max_power_W: 100, {watchdog}}}")


class Run:
    """A deposition on the simulated lab, with what the generator heard (world clock) and
    when its RF went on and off. `frozen_s` is how far the world's clock runs ahead of the
    run's: a host that freezes for 30 s is the world moving 30 s on while it stands still."""

    def __init__(self, tmp_path, recipe_text: str, station: str | None = None):
        self.station = load_station(text=station or station_text(), path="station.yaml")
        path = tmp_path / "quiet.yaml"
        path.write_text(recipe_text, encoding="utf-8")
        self.recipe = load_recipe(str(path), self.station)
        self.env = simpy.Environment()
        self.frozen_s = 0.0
        self.lab = self.station.connect(lambda: self.env.now + self.frozen_s)
        self.tool = self.lab.sim.world.sputter
        self.store = Store(tmp_path / "data")
        self.run_id = self.store.create_run(self.recipe.name, "deposition", "quiet.yaml",
                                            self.recipe.text, self.station.text, 1, "T-1")
        self.engine = Engine(self.recipe, self.lab, self.store, self.run_id, self.env)
        self.heard: list[float] = []  # world time of every valid packet the generator took
        self.rf: list[tuple[float, bool]] = []  # world time of RF on / off, by anyone
        self.trips: list[float] = []
        self._spy()

    def _spy(self):
        emulator, tool = self.lab.sim.emulators["rf"], self.tool
        heard, set_rf, fires = emulator._heard, tool.set_rf_output, tool._watchdog_fires

        def on_packet():
            self.heard.append(tool.world.now)
            heard()

        def on_rf(on):
            set_rf(on)
            self.rf.append((tool.s.t, on))

        def on_fire():
            if tool.s.rf_on:
                self.trips.append(tool.s.t)
            fires()

        emulator._heard, tool.set_rf_output, tool._watchdog_fires = on_packet, on_rf, on_fire

    def during_step(self, idx: int, after_s: float, action):
        def proc():
            while self.engine.ctx.step_idx < idx:
                yield self.env.timeout(1)
            yield self.env.timeout(after_s)
            action()

        self.env.process(proc())

    def longest_silence_with_rf_on(self) -> float:
        """The longest the generator went without a packet while its RF was on."""
        longest, since = 0.0, None
        for t, on in self.rf + [(self.tool.s.t, False)]:
            if on and since is None:
                since = t
            elif not on and since is not None:
                times = [since] + [x for x in self.heard if since <= x <= t] + [t]
                longest = max([longest] + [b - a for a, b in zip(times, times[1:], strict=False)])
                since = None
        return longest


def test_heartbeat_keeps_rf_on_through_a_long_quiet_presputter(tmp_path):
    run = Run(tmp_path, QUIET)
    result = run.engine.run()
    assert result.status == "completed", result.message
    assert run.trips == []
    assert run.longest_silence_with_rf_on() <= 4 / 2 + 1e-9  # half the watchdog, at most
    assert run.store.film_stack("T-1")[0].thickness_nm == pytest.approx(3, abs=0.3)


def test_without_the_heartbeat_the_watchdog_cuts_the_same_presputter(tmp_path, monkeypatch):
    """The control: the watchdog is armed but nothing is added to the sampler's polls."""
    monkeypatch.setattr(heartbeat.Heartbeat, "_due",
                        lambda self, ctx, w: setattr(w, "since_s", self.env.now))
    run = Run(tmp_path, QUIET)
    with pytest.raises(RunAborted):
        run.engine.run()
    assert run.trips  # RF went off by itself, 4 s after a packet
    assert any(abs(trip - t - 4.0) < 1e-6 for trip in run.trips for t in run.heard)


def test_a_host_that_freezes_has_rf_cut_within_the_watchdog_time_and_the_run_aborted(tmp_path):
    run = Run(tmp_path, QUIET)
    before = []

    def freeze():  # the host stops for 30 s: the world runs on, nothing is sent
        before.append(run.heard[-1])
        run.frozen_s += 30.0

    run.during_step(3, 100.0, freeze)  # 100 s into the presputter
    with pytest.raises(RunAborted, match="host watchdog switched the output off"):
        run.engine.run()
    assert run.trips == [pytest.approx(before[0] + 4.0, abs=1e-9)]
    assert run.store.run(run.run_id).status == "aborted"
    alarms = [a for a in run.store.alarms(run.run_id) if a.severity == "error"]
    assert "host watchdog" in alarms[0].message
    supply = run.lab.instruments["rf"]  # the fault stays visible on the generator
    assert supply.host_watchdog_tripped() and supply.status().fault
    assert not run.tool.s.rf_on and not run.tool.s.shutter_open


def test_a_frozen_host_is_caught_by_the_next_reading_when_the_sampler_polls_often(tmp_path):
    """Record period 5 s: the sampler's polls outpace the heartbeat, so no keep-alive is
    ever added; after the freeze the forward power reads 0 with RF commanded on, and
    one look at the trip flag ends the run."""
    run = Run(tmp_path, SHORT.replace("THICKNESS", "3"))
    frozen = []

    def freeze():
        frozen.append((run.env.now, run.heard[-1]))
        run.frozen_s += 30.0

    run.during_step(3, 20.0, freeze)
    with pytest.raises(RunAborted, match="host watchdog switched the output off"):
        run.engine.run()
    (thawed, last_heard), = frozen
    assert run.trips == [pytest.approx(last_heard + 4.0, abs=1e-9)]
    aborted = next(a for a in run.store.alarms(run.run_id) if a.severity == "error")
    assert 0 <= aborted.t_s - thawed <= 5.0 + 4 / 2  # a sample shows it, one look confirms


def test_the_default_recipe_needs_no_added_exchange(tmp_path, monkeypatch):
    """Record period 5 s, watchdog 10 s (the default): the sampler's polls feed it."""
    added = []
    check = heartbeat.Heartbeat._check

    def counting(self, ctx, w):
        added.append(self.env.now)
        check(self, ctx, w)

    monkeypatch.setattr(heartbeat.Heartbeat, "_check", counting)
    text = SHORT.replace("THICKNESS", "3")
    run = Run(tmp_path, text, default_station_text())
    assert run.lab.instruments["rf"].watchdog_period_s == 10.0
    assert run.engine.run().status == "completed"
    assert added == [] and run.trips == []
    assert run.longest_silence_with_rf_on() <= 5.0 + 1e-9


# --- the station's value --------------------------------------------------------------
@pytest.mark.parametrize(("limit", "message"), [
    ("host_watchdog_s: 0.5", "limits.host_watchdog_s: 0.5 is outside 1…65, the range of "
                             "driver ae_bus"),
    ("host_watchdog_s: 100", "limits.host_watchdog_s: 100 is outside 1…65"),
    ("host_watchdog_s: four", "limits.host_watchdog_s: must be a number, not 'four'"),
])
def test_a_bad_watchdog_time_is_one_located_sentence(limit, message):
    with pytest.raises(InputError) as err:
        load_station(text=station_text(limit), path="station.yaml")
    text = str(err.value)
    assert text.startswith("station.yaml:") and f"instruments.rf.{message}" in text
    assert "\n" not in text


def test_the_watchdog_time_is_a_limit_not_a_setting():
    text = default_station_text().replace("settings: {unit: 1}",
                                    "settings: {unit: 1, host_watchdog_s: 5}", 1)
    with pytest.raises(InputError, match="settings.host_watchdog_s: is a limit of driver "
                                         "ae_bus: put it under limits"):
        load_station(text=text, path="station.yaml")


def test_the_cli_refuses_it_in_one_line_without_a_traceback(tmp_path):
    path = tmp_path / "station.yaml"
    path.write_text(station_text("host_watchdog_s: 0"), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "station", "--station",
                           str(path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "instruments.rf.limits.host_watchdog_s: 0 is outside" in lines[0]


def test_an_accelerated_run_leaves_the_watchdog_disarmed(tmp_path):
    """At 1000× real time 4 s of the run is 4 ms of wall time: no host can promise that."""
    run = Run(tmp_path, QUIET)
    notes = []
    env = simpy.rt.RealtimeEnvironment(factor=1 / 1000, strict=False)
    engine = Engine(run.recipe, run.lab, run.store, run.run_id, env, notify=notes.append)
    (watched,) = engine.heartbeat.watched
    engine.heartbeat._arm(engine.ctx, watched)
    assert watched.refused and not watched.armed
    assert run.lab.sim.emulators["rf"].watchdog_ms == 0
    assert notes == ["rf: host watchdog left disarmed: at 1000× real time 4 s of the run is "
                     "0.004 s of wall time, less than a host process can promise"]
