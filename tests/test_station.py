"""Station addresses with a channel range, and the potentiostats of the simulated lab."""

from __future__ import annotations

import time

import pytest

from lipon_hw.errors import InputError
from lipon_hw.sim.cells.factories import cell_from_spec
from lipon_hw.sim.lab import SimLab
from lipon_hw.station import expand_address, load_station
from lipon_hw.techniques import OCV, ConstantCurrent

BENCH = """\
name: bench
sim: {seed: 3}
instruments:
  mes4:
    driver: methodscript
    address: "sim://mes4/{1-4}"
    sim:
      cells: {"1-4": {kind: lnmo}, "3": {kind: blocking, name: reference}}
  smu:
    driver: keithley2450
    address: sim://smu
    sim: {cell: {kind: plating}, off_mode: HIMP}
tools:
  cycler: {potentiostat: mes4}
  bench: {potentiostat: smu}
"""


def station_file(tmp_path, text: str):
    path = tmp_path / "station.yaml"
    path.write_text(text)
    return load_station(path)


@pytest.mark.parametrize("address, expanded", [
    ("sim://mes4/{1-3}", ["sim://mes4/1", "sim://mes4/2", "sim://mes4/3"]),
    ("serial:///dev/ttyACM{0-1}?baud=230400",
     ["serial:///dev/ttyACM0?baud=230400", "serial:///dev/ttyACM1?baud=230400"]),
    ("socket://10.0.0.5:{4001-4002}", ["socket://10.0.0.5:4001", "socket://10.0.0.5:4002"]),
    ("sim://box{08-10}", ["sim://box08", "sim://box09", "sim://box10"]),
    ("sim://rf", ["sim://rf"]),
    ("sim://one{7-7}", ["sim://one7"]),
])
def test_a_channel_range_expands_in_order(address, expanded):
    assert expand_address(address) == expanded


@pytest.mark.parametrize("address, message", [
    ("sim://m/{3-1}", r"the channel range \{3-1\} runs backwards \(3 > 1\)"),
    ("sim://m/{1-2}/{1-2}", "must hold exactly one channel range"),
    ("sim://m/{a-b}", "must hold exactly one channel range"),
    ("sim://m/{1-4", "must hold exactly one channel range"),
    ("sim://m/{1,2}", "must hold exactly one channel range"),
    ("serial:///dev/ttyACM{0-999}", "names 1000 ports, more than 256"),
    ("sim://m/{1-100001}", "names 100001 ports, more than 100000"),
])
def test_a_malformed_range_is_one_located_station_error(tmp_path, address, message):
    text = BENCH.replace('"sim://mes4/{1-4}"', f'"{address}"')
    with pytest.raises(InputError, match=message) as err:
        station_file(tmp_path, text)
    assert str(err.value).startswith(f"{tmp_path / 'station.yaml'}:6: instruments.mes4.address: ")
    assert "\n" not in str(err.value)


def test_connect_gives_the_driver_one_link_per_channel_port(tmp_path):
    lab = station_file(tmp_path, BENCH).connect(lambda: 0.0)
    try:
        mes4 = lab.instruments["mes4"]
        assert mes4.channels == 4
        assert [link.address for link in mes4.links] == [f"sim://mes4/{ch}" for ch in range(1, 5)]
        assert mes4.identify().startswith("PalmSens MultiEmStat4 LR firmware")
        assert lab.instruments["smu"].channels == 1
        assert lab.instruments["smu"].identify().startswith("Keithley 2450")
    finally:
        lab.close()


def test_channel_ports_serve_their_own_cells(tmp_path):
    clock = [0.0]
    lab = station_file(tmp_path, BENCH).connect(lambda: clock[0])
    mes4 = lab.instruments["mes4"]
    sim = lab.sim
    assert [type(sim.cell("mes4", ch)).__name__ for ch in range(1, 5)] == [
        "FullCell", "FullCell", "BlockingCell", "FullCell"]
    assert sim.cell("mes4", 3).name == "reference"
    assert sim.cell("mes4", 2).name == "mes4/2"
    assert type(sim.cell("smu", 1)).__name__ == "PlatingCell"
    assert sim.emulators["mes4/2"] is sim.potentiostats["mes4"].ports[2]
    run = mes4.start(2, ConstantCurrent(1e-6, 600, v_max_V=5.1, interval_s=60))
    clock[0] = 601
    samples = run.poll() + run.poll()
    assert run.finished and len(samples) == 10
    assert sim.cell("mes4", 2).mode == "open"  # on_finished: cell off
    assert samples[-1].E_V > samples[0].E_V  # channel 2's LNMO cell charged
    assert sim.cell("mes4", 1).current_A(clock[0]) == 0.0  # channel 1 untouched


def test_cells_declared_by_range_single_channel_and_default(tmp_path):
    text = BENCH.replace('cells: {"1-4": {kind: lnmo}, "3": {kind: blocking, name: reference}}',
                         'cells: {2: {kind: lco}, "3-4": {kind: plating}}')
    sim = station_file(tmp_path, text).connect(lambda: 0.0).sim
    kinds = [sim.cell("mes4", ch).spec["kind"] for ch in range(1, 5)]
    assert kinds == ["blocking", "lco", "plating", "plating"]  # channel 1: the default


@pytest.mark.parametrize("sim_section, message", [
    ('cells: {"0-4": {kind: lnmo}}', r"'0-4' is not a channel or a range first-last within 1–4"),
    ('cells: {"2-5": {kind: lnmo}}', r"'2-5' is not a channel"),
    ('cells: {"x": {kind: lnmo}}', r"'x' is not a channel"),
    ('cells: {"1": {area_cm2: 1}}', r"sim.cells\[1\] must be a cell spec with a kind"),
    ("cell: {kind: lnmo}", "sim.cell is for a one-channel instrument; this one has 4 channels"),
    ('cells: {"1": {kind: nmc}}', "the cell of channel 1 cannot be built .cell kind 'nmc'"),
    ("colour: red", "has a setting the methodscript emulator does not take"),
])
def test_bad_cell_declarations_are_one_sentence(tmp_path, sim_section, message):
    text = BENCH.replace('cells: {"1-4": {kind: lnmo}, "3": {kind: blocking, name: reference}}',
                         sim_section)
    with pytest.raises(InputError, match=message):
        station_file(tmp_path, text).connect(lambda: 0.0)


def test_fault_draws_follow_the_world_seed(tmp_path):
    text = BENCH.replace('"3": {kind: blocking, name: reference}}',
                         '"3": {kind: blocking}}\n      fault_rates: {soft_short: 0.5, open: 0.3}')
    station = station_file(tmp_path, text)

    def faults(seed):
        sim = station.connect(lambda: 0.0, seed=seed).sim
        return [[f.kind for f in sim.cell("mes4", ch).faults] for ch in range(1, 5)]

    assert faults(3) == faults(3)
    draws = [faults(seed) for seed in range(8)]
    assert len({repr(d) for d in draws}) > 1  # another seed, other faulty cells
    assert any(kinds for d in draws for kinds in d)


def test_mount_cell_replaces_the_cell_under_the_present_control(tmp_path):
    clock = [0.0]
    lab = station_file(tmp_path, BENCH).connect(lambda: clock[0])
    sim, mes4, smu = lab.sim, lab.instruments["mes4"], lab.instruments["smu"]
    fresh = cell_from_spec({"kind": "lnmo", "name": "from the film stack"})
    sim.mount_cell("mes4", 4, fresh)
    assert sim.cell("mes4", 4) is fresh
    run = mes4.start(4, OCV(10, interval_s=1))
    with pytest.raises(InputError, match="mes4 channel 4 is running a measurement"):
        sim.mount_cell("mes4", 4, cell_from_spec({"kind": "lnmo"}))
    clock[0] = 11
    assert run.poll() and run.finished
    smu.cell_on(1, 2.0)  # the 2450 holds 2 V on its plating cell
    replacement = cell_from_spec({"kind": "blocking"})
    clock[0] = 20
    sim.mount_cell("smu", 1, replacement)
    assert (replacement.mode, replacement.value) == ("current", 105e-6)  # charging, limited
    clock[0] = 120
    assert smu.voltage_V() == pytest.approx(2.0)  # its double layer charged up to 2 V
    smu.cell_off(1)
    assert replacement.mode == "open"
    with pytest.raises(InputError, match="mes4 has channels 1–4, not 5"):
        sim.cell("mes4", 5)
    with pytest.raises(InputError, match="'rf' is not a simulated potentiostat"):
        sim.mount_cell("rf", 1, fresh)


def test_a_keithley_takes_one_cell(tmp_path):
    text = BENCH.replace("address: sim://smu", 'address: "sim://smu{1-2}"').replace(
        "cell: {kind: plating}", 'cells: {"1-2": {kind: plating}}')
    with pytest.raises(InputError, match="a 2450 has one channel"):
        station_file(tmp_path, text).connect(lambda: 0.0)


def test_the_default_station_builds_sixteen_channels_quickly():
    station = load_station()
    station.connect(lambda: 0.0).close()  # imports paid once
    t0 = time.process_time()
    for _ in range(3):
        lab = station.connect(lambda: 0.0)
        lab.close()
    per_build_s = (time.process_time() - t0) / 3
    assert per_build_s < 0.5
    assert lab.instruments["mes4"].channels == 16
    assert {lab.sim.cell("mes4", ch).spec["kind"] for ch in range(1, 17)} == {"lnmo"}
    assert lab.sim.cell("smu", 1).spec["kind"] == "blocking"


def test_simlab_without_potentiostats_is_unchanged(tmp_path):
    station = station_file(tmp_path, "name: s\nsim: {seed: 1}\ninstruments:\n"
                                     "  g1: {driver: mks937b, address: sim://g, settings: "
                                     "{channel: 1}}\n  g2: {driver: mks937b, address: sim://g, "
                                     "settings: {channel: 3}}\n")
    sim = SimLab(station.spec, lambda: 0.0, 1)
    assert list(sim.emulators) == ["g"] and sim.potentiostats == {}
