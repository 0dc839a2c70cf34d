"""Physical faults of the simulated lab, seen through the project's drivers: arcs and
reflected power on the RF generator, plasma loss, crystal failure and end of life on the
QCM, a vacuum leak on the gauge, gas supply loss on the MFC, a burnt-out boat on the
source supply, substrate over-temperature on the thermocouple module."""

from __future__ import annotations

import pytest
from faulty import at, connect

from lipon_hw.errors import InstrumentError


def sputtering(faults, power_W=50.0):
    """The sputter tool pumped, at 20 sccm N2 and `power_W` of RF (from t = 900 s on)."""
    lab, clock = connect(faults)
    ins = lab.instruments
    ins["valves"].pump()
    ins["n2_mfc"].set_flow_sccm(20.0)
    at(clock, 600.0)
    ins["rf"].set_power_setpoint_W(power_W)
    ins["rf"].set_output(True)
    at(clock, 900.0)
    return lab, clock, ins


def test_reflected_power_fault_reads_on_the_generator_then_clears():
    lab, clock, ins = sputtering([{"fault": "reflected_power", "instrument": "rf",
                                   "at_s": 1000, "for_s": 100, "reflected_pct": 40}])
    rf = ins["rf"]
    at(clock, 999.0)
    assert rf.reflected_power_W() < 2.0
    at(clock, 1000.0)
    assert rf.reflected_power_W() == pytest.approx(20.0, abs=2.0)  # 40 % of 50 W forward
    at(clock, 1100.0)
    assert rf.reflected_power_W() < 2.0


def test_arcs_come_at_seeded_times_and_spike_the_reflected_power():
    lab, clock, ins = sputtering([{"fault": "rf_arcs", "instrument": "rf", "at_s": 1000,
                                   "for_s": 600, "count": 3}])
    entry = lab.sim.faults.entries[0]
    assert len(entry.times) == 3 and all(1000 <= t <= 1600 for t in entry.times)
    rf, tool = ins["rf"], lab.sim.world.sputter
    arcs_before = tool.s.arcs
    at(clock, entry.times[0] - 1.0)
    assert rf.reflected_power_W() < 2.0
    at(clock, entry.times[0] + 0.1)  # within the 0.3 s spike of one arc
    assert rf.reflected_power_W() > 25.0
    at(clock, entry.times[0] + 1.0)
    assert rf.reflected_power_W() < 2.0
    at(clock, 1700.0)
    rf.reflected_power_W()
    assert tool.s.arcs - arcs_before >= 3
    assert [what for _, name, what in lab.sim.faults.fired if name == "rf_arcs"] == ["arc"] * 3


def test_plasma_loss_reflects_forward_and_stops_the_rate():
    lab, clock, ins = sputtering([{"fault": "plasma_loss", "instrument": "rf", "at_s": 2000,
                                   "for_s": 300}])
    rf, qcm = ins["rf"], ins["qcm"]
    at(clock, 1990.0)
    assert qcm.rate_A_s() > 0.2
    assert rf.reflected_power_W() < 2.0
    at(clock, 2001.0)
    assert rf.reflected_power_W() >= 0.95 * rf.forward_power_W() > 40.0
    assert abs(qcm.rate_A_s()) < 0.2
    at(clock, 2310.0)  # re-ignites and re-matches once the fault clears
    assert rf.reflected_power_W() < 2.0
    assert qcm.rate_A_s() > 0.2


def test_crystal_fail_on_the_monitor_then_it_oscillates_again():
    lab, clock = connect([{"fault": "crystal_fail", "instrument": "qcm", "at_s": 500,
                           "for_s": 100}])
    qcm = lab.instruments["qcm"]
    at(clock, 499.0)
    assert qcm.frequency_Hz() > 5.9e6 and not qcm.crystal_failed()
    at(clock, 500.0)
    assert qcm.frequency_Hz() == 0.0 and qcm.crystal_failed()
    with pytest.raises(InstrumentError, match="failed crystal"):
        qcm.rate_A_s()
    at(clock, 600.0)
    assert not qcm.crystal_failed()


def test_crystal_life_runs_out_at_the_life_the_monitor_reads():
    lab, clock, ins = sputtering([{"fault": "crystal_life_end", "instrument": "qcm",
                                   "at_life_pct": 99.9}])
    qcm = ins["qcm"]
    t, last = clock.t, 100.0
    while not qcm.crystal_failed():  # LiPON loads the crystal ~0.75 Hz/s: 0.01 % a 130 s
        assert last >= 99.9  # the monitor prints life to 0.01 %
        last = qcm.crystal_life_pct()
        t += 20.0
        at(clock, t)
        assert t < 900.0 + 4000.0
    assert 99.9 <= last <= 99.92  # it died where the monitor's life reading reached 99.9 %
    assert qcm.frequency_Hz() == 0.0


def test_crystal_life_end_fails_a_worn_crystal_at_once():
    lab, clock = connect([{"fault": "crystal_life_end", "instrument": "qcm",
                           "at_life_pct": 100.0, "at_s": 10}])
    qcm = lab.instruments["qcm"]
    assert not qcm.crystal_failed()
    at(clock, 10.0)
    assert qcm.crystal_failed()


def test_vacuum_leak_raises_the_chamber_pressure_per_the_pumping_speed():
    lab, clock = connect([{"fault": "vacuum_leak", "tool": "sputter", "at_s": 7200,
                           "for_s": 1800, "leak_mbar_l_s": 1.0e-2}])
    lab.instruments["valves"].pump()
    gauge = lab.instruments["process_gauge"]
    base = lab.instruments["chamber_gauge"]
    at(clock, 7199.0)
    before = base.pressure_torr()
    assert before < 1e-5
    at(clock, 7260.0)
    # Q/S: 1e-2 mbar·l/s = 7.5e-3 Torr·L/s into 17 L/s
    assert gauge.pressure_torr() == pytest.approx(7.5e-3 / 17.0, rel=0.05)
    at(clock, 9000.0 + 60.0)
    assert base.pressure_torr() < 2 * before


def test_gas_supply_loss_flow_falls_while_the_setpoint_holds():
    lab, clock = connect([{"fault": "gas_supply_loss", "instrument": "n2_mfc", "at_s": 100,
                           "for_s": 200, "fall_s": 10}])
    mfc = lab.instruments["n2_mfc"]
    mfc.set_flow_sccm(20.0)
    at(clock, 99.0)
    assert mfc.flow_sccm() == pytest.approx(20.0, abs=0.5)
    at(clock, 110.0)  # one e-fold
    assert mfc.flow_sccm() == pytest.approx(20.0 / 2.718, abs=0.5)
    assert mfc.flow_setpoint_sccm() == pytest.approx(20.0, abs=0.05)
    at(clock, 200.0)
    assert abs(mfc.flow_sccm()) < 0.5
    assert mfc.flow_setpoint_sccm() == pytest.approx(20.0, abs=0.05)
    at(clock, 300.0)
    assert mfc.flow_sccm() == pytest.approx(20.0, abs=0.5)


def test_source_burnout_opens_the_boat_on_the_supply():
    lab, clock = connect([{"fault": "source_burnout", "instrument": "evap_supply",
                           "at_s": 300, "for_s": 100}])
    supply, boats = lab.instruments["evap_supply"], lab.instruments["evap_boats"]
    boats.select_source(1)
    supply.set_voltage_limit_V(6.0)
    supply.set_current_A(40.0)
    supply.set_output(True)
    at(clock, 299.0)
    assert supply.current_A() == pytest.approx(40.0, abs=1.0)
    assert supply.mode() == "CC"
    at(clock, 300.0)
    assert supply.current_A() == pytest.approx(0.0, abs=0.1)
    assert supply.voltage_V() == pytest.approx(6.0, abs=0.1)
    assert supply.mode() == "CV"
    at(clock, 390.0)  # the open boat cools: its charge stops evaporating
    assert supply.current_A() == pytest.approx(0.0, abs=0.1)
    assert lab.sim.world.evaporator.substrate_rate_A_s() < 1e-3
    at(clock, 400.0)
    assert supply.current_A() == pytest.approx(40.0, abs=1.0)


def test_substrate_overtemperature_reads_on_the_thermocouple():
    lab, clock = connect([{"fault": "substrate_overtemp", "instrument": "substrate_tc",
                           "at_s": 1000, "for_s": 3000, "rise_C": 200}])
    tc = lab.instruments["substrate_tc"]
    at(clock, 999.0)
    assert tc.temperature_C() == pytest.approx(25.0, abs=2.0)
    at(clock, 1300.0)  # one time constant of the substrate (300 s)
    assert tc.temperature_C() == pytest.approx(25.0 + 200 * 0.632, abs=3.0)
    at(clock, 3900.0)
    assert tc.temperature_C() > 215.0
    at(clock, 4000.0 + 3000.0)
    assert tc.temperature_C() < 35.0
