"""The AE Bus generator's host watchdog: bytes, virtual-time behaviour, driver.

Command 39 (set communications watchdog timer: byte 0 enable, bytes 1–2 ms, little-endian
as every AE Bus value; answered with a CSR) and 139 (report it: 1 data byte 0, 2 bytes
back) are laid out as the Paramount MF 2 kW manual (57020114-00E, Table 4-10) gives them;
the checksums below were worked out by hand (XOR of every byte before). The enable byte's
values and the latched trip flag (status byte 3, bit 3) are this project's assumptions
(see lipon_hw.drivers.ae_bus).
"""

from __future__ import annotations

import pytest
from conftest import sim_link
from test_ae_bus import H, host

from lipon_hw.drivers.ae_bus import ACK, AEBusGenerator, encode_packet
from lipon_hw.errors import InputError
from lipon_hw.interfaces import HostWatchdog
from lipon_hw.sim.emulators.ae_bus import AEBusEmulator

ARM_4S = "0B 27 01 A0 0F 82"  # 39: enable, 4000 ms = 0x0FA0
CSR_OK_39 = "09 27 00 2E"
READ_139 = "09 8B 00 82"  # 139 with its one data byte, 0



def lit(tool, clock):
    """15 mTorr of N2 after a 3-hour pump-down: a plasma ignites at 50 W."""
    tool.set_pumping(True)
    clock.advance(3 * 3600)
    tool.set_n2_flow_sccm(20)
    clock.advance(30)


@pytest.fixture
def unit(world):
    emulator = AEBusEmulator("rf", world.sputter, noise_pct=0, noise_W=0)
    assert host(emulator, "09 0E 02 05") == ACK + H("09 0E 00 07")  # host control
    return emulator


@pytest.fixture
def gen(world):
    return AEBusGenerator("rf", sim_link(AEBusEmulator("rf", world.sputter)))


# --- bytes --------------------------------------------------------------------------------
def test_the_packets_are_laid_out_as_the_manual_says():
    assert encode_packet(1, 39, H("01 A0 0F")) == H(ARM_4S)
    assert encode_packet(1, 139, H("00")) == H(READ_139)
    assert encode_packet(1, 39, H("00 00 00")) == H("0B 27 00 00 00 2C")


def test_arm_read_back_and_disarm_on_the_wire(unit):
    assert host(unit, READ_139) == ACK + H("0A 8B 00 00 81")  # off at power-on
    assert host(unit, ARM_4S) == ACK + H(CSR_OK_39)
    assert host(unit, READ_139) == ACK + H("0A 8B A0 0F 2E")  # 4000 ms
    assert host(unit, "08 8B 83") == ACK + H("0A 8B A0 0F 2E")  # without its data byte too
    assert host(unit, "0B 27 00 00 00 2C") == ACK + H(CSR_OK_39)
    assert host(unit, READ_139) == ACK + H("0A 8B 00 00 81")


def test_the_unit_keeps_10_ms_steps_truncated(unit):
    assert host(unit, "0B 27 01 D2 04 FB") == ACK + H(CSR_OK_39)  # 1234 ms
    assert host(unit, READ_139) == ACK + H("0A 8B CE 04 4B")  # 1230 ms
    assert host(unit, "0B 27 01 05 00 28") == ACK + H(CSR_OK_39)  # 5 ms
    assert host(unit, READ_139) == ACK + H("0A 8B 0A 00 8B")  # 10 ms


def test_refusals_are_csr_codes(unit, world):
    assert host(unit, "0B 27 02 A0 0F 81") == ACK + H("09 27 04 2A")  # enable byte 2: range
    assert host(unit, "0A 27 A0 0F 82") == ACK + H("09 27 09 27")  # 2 data bytes: count
    assert host(unit, "0A 8B 00 00 81") == ACK + H("09 8B 09 8B")  # 139 with 2 bytes
    assert host(unit, "09 0E 06 01") == ACK + H("09 0E 00 07")  # front panel takes over
    assert host(unit, ARM_4S) == ACK + H("09 27 01 2F")  # wrong control mode


# --- the watchdog in virtual time ----------------------------------------------------------
def test_a_silent_host_has_rf_switched_off_at_the_watchdog_time(unit, world, clock):
    tool = world.sputter
    lit(tool, clock)
    host(unit, ARM_4S, "0A 08 32 00 30", "08 02 0A")  # armed, 50 W, RF on
    tool.set_shutter(True)
    for _ in range(5):  # a host that asks every 3 s keeps it on
        clock.advance(3)
        assert host(unit, "08 A5 AD")[:1] == ACK
    last = clock.t
    assert tool.rf_readings()["plasma"]
    clock.advance(10)  # the host falls silent; someone else looks 10 s later
    stack = tool.film_stack()
    assert not tool.rf_readings()["rf_on"]
    assert tool.s.rf_watchdog_tripped_at == pytest.approx(last + 4.0, abs=1e-9)
    assert stack[0]["t_end_s"] <= last + 4.0 + 1e-6  # no film after the trip
    # the host sees it: output off (byte 0 bit 5 clear), the trip latched (byte 3 bit 3)
    assert host(unit, "08 A2 AA") == ACK + H("0C A2 00 00 00 08 A6")
    assert host(unit, "08 02 0A") == ACK + H("09 02 00 0B")  # RF on again clears it
    assert host(unit, "08 A2 AA")[3:7] == H("20 00 00 00")


def test_a_disarmed_unit_or_rf_off_never_trips(unit, world, clock):
    tool = world.sputter
    lit(tool, clock)
    host(unit, "0A 08 32 00 30", "08 02 0A")  # RF on, watchdog off (power-on default)
    clock.advance(3600)
    assert tool.rf_readings()["rf_on"]
    host(unit, ARM_4S, "08 01 09")  # armed, then RF off: nothing to switch off
    clock.advance(60)
    assert host(unit, "08 A2 AA") == ACK + H("0C A2 00 00 00 00 AE")


def test_packets_for_another_unit_or_corrupt_ones_do_not_feed_it(unit, world, clock):
    tool = world.sputter
    lit(tool, clock)
    host(unit, ARM_4S, "0A 08 32 00 30", "08 02 0A")
    t_on = clock.t
    for _ in range(10):
        clock.advance(1)
        assert unit.handle(H("10 A5 B5")) == b""  # unit 2's query: not ours
        assert unit.handle(H("08 A5 AE")) == H("15")  # bad checksum: NAK
    world.sync()
    assert tool.s.rf_watchdog_tripped_at == pytest.approx(t_on + 4.0, abs=1e-9)


def test_the_watchdog_survives_a_checkpoint(unit, world, clock):
    tool = world.sputter
    lit(tool, clock)
    host(unit, ARM_4S, "0A 08 32 00 30", "08 02 0A")
    saved = {"world": world.snapshot(), "rf": unit.snapshot()}
    clock.advance(100)
    assert host(unit, "08 A2 AA")[3] == 0x00  # tripped
    world.restore(saved["world"])
    unit.restore(saved["rf"])
    assert unit.watchdog_ms == 4000 and tool.s.rf_on and tool.s.rf_off_at is not None


# --- driver --------------------------------------------------------------------------------
def test_driver_arms_reads_back_and_disarms(gen):
    assert isinstance(gen, HostWatchdog)
    assert gen.watchdog_period_s == AEBusGenerator.DEFAULT_HOST_WATCHDOG_S
    assert gen.host_watchdog_s() == 0
    gen.set_host_watchdog_s(2.5)
    assert gen.host_watchdog_s() == 2.5
    gen.set_host_watchdog_s(0)
    assert gen.host_watchdog_s() == 0
    with pytest.raises(InputError, match="outside 0–65.535 s"):
        gen.set_host_watchdog_s(70)


def test_driver_sees_the_trip_and_counts_every_exchange(gen, world, clock):
    heard = []
    gen.on_exchange = lambda: heard.append(clock.t)
    lit(world.sputter, clock)
    gen.set_host_watchdog_s(4)
    gen.set_power_setpoint_W(50)
    gen.set_output(True)
    assert not gen.host_watchdog_tripped()
    clock.advance(5)
    assert gen.host_watchdog_tripped()
    status = gen.status()
    assert not status.output_on and status.fault
    assert len(heard) == 7  # 14 (host control), 39, 8, 2, then 162 three times


def test_driver_refuses_a_watchdog_time_outside_its_range(world):
    link = sim_link(AEBusEmulator("rf", world.sputter))
    with pytest.raises(InputError, match="host_watchdog_s 0.5 is outside 1–65 s"):
        AEBusGenerator("rf", link, host_watchdog_s=0.5)
