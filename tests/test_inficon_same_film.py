"""One film, two INFICON instruments: the SQM-160 and the SQC-310, each through its driver and
emulator, watch the same crystal in the same World and must read the same thickness."""

import pytest
from conftest import sim_link

from lipon_hw.drivers.inficon_sqc310 import SQC310
from lipon_hw.drivers.inficon_sqm160 import SQM160
from lipon_hw.interfaces import Film
from lipon_hw.sim.emulators.inficon_sqc310 import SQC310Emulator
from lipon_hw.sim.emulators.inficon_sqm160 import SQM160Emulator

CU = Film("Cu", density_g_cm3=8.93, z_ratio=0.437, tooling_pct=100)
#: one count of the last digit both instruments display (kÅ to 3 decimals) is 0.1 nm
DISPLAY_COUNT_NM = 0.1


def test_both_instruments_read_the_same_copper_film_on_a_used_crystal(world, clock):
    """The crystal already carries 3.5 µm of Cu (5.76 MHz), where taking the zero for the
    uncoated frequency reads about 1 % thin; more Cu is then grown by heating the
    boat at manual power. Both instruments must agree with each other and with the mass the
    crystal took, to one display count."""
    tool = world.evaporator
    state = tool.snapshot()
    state.update(crystal_mass_g_cm2=3.1e-3, crystal_z=CU.z_ratio)
    tool.restore(state)
    tool.set_pumping(True)
    clock.advance(5 * 3600)
    tool.select_boat(1)  # Cu
    sqc = SQC310("sqc", sim_link(SQC310Emulator("sqc", tool)))
    sqm = SQM160("sqm", sim_link(SQM160Emulator("sqm", tool)))
    assert 5.75e6 < sqc.frequency_Hz() < 5.77e6
    assert sqm.frequency_Hz() == pytest.approx(sqc.frequency_Hz(), abs=0.01)
    for monitor in (sqc, sqm):
        monitor.set_film(CU)
        monitor.zero()
    mass_at_zero = tool.snapshot()["crystal_mass_g_cm2"]

    sqc.query("S1 220")  # 22 % of the supply's full scale into the Cu boat
    readings = []
    for _ in range(30):
        clock.advance(60)
        readings.append((sqc.thickness_nm(), sqm.thickness_nm()))
    sqc.query("S0")
    grown_nm = (tool.snapshot()["crystal_mass_g_cm2"] - mass_at_zero) / CU.density_g_cm3 * 1e7

    assert grown_nm > 50  # enough film that a 1 % error is several display counts
    for on_sqc, on_sqm in readings:
        assert on_sqm == pytest.approx(on_sqc, abs=DISPLAY_COUNT_NM + 1e-9)
    on_sqc, on_sqm = readings[-1]
    assert on_sqc == pytest.approx(grown_nm, abs=DISPLAY_COUNT_NM)
    assert on_sqm == pytest.approx(grown_nm, abs=DISPLAY_COUNT_NM)
