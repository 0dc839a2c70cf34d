"""The SQM-160's `W` ("all readings"): rate, thickness and frequency in one exchange, each as
the single-quantity command gives it, through the driver and the emulator's real framing."""

import pytest
from conftest import sim_link

from lipon_hw.drivers.inficon_sqm160 import SQM160, UNITS_REREAD_EVERY
from lipon_hw.errors import InstrumentError
from lipon_hw.interfaces import Film, ReadsTogether
from lipon_hw.sim.emulators.inficon_sensor import RATE_NOISE_A_S
from lipon_hw.sim.emulators.inficon_sqm160 import SQM160Emulator

LIPON = Film("LiPON", density_g_cm3=2.5, z_ratio=1.0, tooling_pct=125)
ENGINE_ASKS = ("rate_A_s", "thickness_nm", "frequency_Hz", "crystal_life_pct")


@pytest.fixture
def tool(world):
    return world.sputter


@pytest.fixture
def emulator(tool):
    return SQM160Emulator("qcm", tool)


@pytest.fixture
def qcm(emulator):
    return SQM160("qcm", sim_link(emulator))


def commands_sent(emulator) -> list[str]:
    """Every command the emulator is sent from now on, as its code and argument."""
    sent = []
    for code, handler in list(emulator.handlers.items()):
        def counted(arg, code=code, handler=handler):
            sent.append(code + arg)
            return handler(arg)
        emulator.handlers[code] = counted
    return sent


def lipon_for(tool, clock, seconds: float) -> None:
    tool.set_pumping(True)
    clock.advance(3 * 3600)
    tool.set_n2_flow_sccm(20)
    clock.advance(30)
    tool.set_rf_regulation("load")
    tool.set_rf_setpoint_W(50)
    tool.set_rf_output(True)
    clock.advance(seconds)


def test_one_W_and_one_R_read_what_four_queries_read(qcm, emulator, tool, clock):
    assert isinstance(qcm, ReadsTogether)
    qcm.set_film(LIPON)
    lipon_for(tool, clock, 1800)
    qcm.thickness_nm()  # display units read
    sent = commands_sent(emulator)
    together = qcm.read_together(ENGINE_ASKS)
    assert sent == ["W", "R1"]
    assert list(together) == list(ENGINE_ASKS)
    assert together["thickness_nm"] == qcm.thickness_nm()
    assert together["frequency_Hz"] == qcm.frequency_Hz()
    assert together["crystal_life_pct"] == qcm.crystal_life_pct()
    # a rate is a measurement with its own noise: both near the process's 0.46 Å/s × 125 %
    assert together["rate_A_s"] == pytest.approx(qcm.rate_A_s(), abs=10 * RATE_NOISE_A_S)
    assert together["rate_A_s"] == pytest.approx(0.46 * 1.25, abs=10 * RATE_NOISE_A_S)


def test_a_failed_crystal_refuses_the_rate_from_the_same_reply(qcm, emulator, tool, clock):
    qcm.set_film(LIPON)
    lipon_for(tool, clock, 600)
    held = qcm.thickness_nm()
    state = tool.snapshot()
    state["crystal_failed"] = True
    tool.restore(state)
    sent = commands_sent(emulator)
    together = qcm.read_together(ENGINE_ASKS)
    assert sent == ["W", "R1"]  # no P1 asked: the frequency came with the rate
    assert isinstance(together["rate_A_s"], InstrumentError)
    assert "failed crystal on sensor 1" in str(together["rate_A_s"])
    assert together["thickness_nm"] == held
    assert together["frequency_Hz"] == 0.0
    assert together["crystal_life_pct"] == 0.0


def test_the_display_units_are_reread_as_often_as_for_single_readings(qcm, emulator, tool,
                                                                      clock):
    qcm.set_film(LIPON)
    lipon_for(tool, clock, 600)
    qcm.read_together(ENGINE_ASKS)
    sent = commands_sent(emulator)
    for _ in range(UNITS_REREAD_EVERY // 2):  # each W is a rate and a thickness reading
        qcm.read_together(ENGINE_ASKS)
    assert sent.count("B?") == 1


def test_an_instrument_that_refuses_W_is_read_quantity_by_quantity(qcm, emulator, tool,
                                                                  clock):
    del emulator.handlers["W"]  # an older firmware: 'W' is answered as an invalid command
    qcm.set_film(LIPON)
    lipon_for(tool, clock, 600)
    qcm.thickness_nm()
    sent = commands_sent(emulator)
    first = qcm.read_together(ENGINE_ASKS)
    again = qcm.read_together(ENGINE_ASKS)
    assert sent == ["L1", "N1", "P1", "R1"] * 2  # the refused W itself reaches no handler
    assert first["thickness_nm"] == again["thickness_nm"] > 0
    assert all(isinstance(v, float) for v in (*first.values(), *again.values()))
