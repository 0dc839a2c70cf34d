"""TDK-Lambda Genesys source supply: codec, driver ↔ emulator on the evaporator, and an
independent TCP client."""

import re
import time

import pytest
import serial
from conftest import sim_link, visa_socket

from lipon_hw.drivers.genesys import (
    ChecksumError,
    GenesysSupply,
    checksum,
    decode_message,
    encode_message,
    format_reading,
)
from lipon_hw.errors import InputError, InstrumentError, LinkLost
from lipon_hw.links import Health, Link, LinkPool
from lipon_hw.ports import SimPort
from lipon_hw.sim.emulators.genesys import GenesysEmulator
from lipon_hw.sim.tcp import serve
from lipon_hw.sim.world import World

# --- codec: manual examples (checksum §7.5.5; readings §7.7.5) and pymeasure's vectors ----


def test_manual_checksum_examples():
    assert checksum("STT?") == "3A"
    assert checksum("STAT?") == "7B"
    assert encode_message("STT?", with_checksum=True) == b"STT?$3A\r"
    assert encode_message("STAT?", with_checksum=True) == b"STAT?$7B\r"
    assert decode_message(b"STT?$3A\r") == ("STT?", True)
    assert decode_message(b"STAT?$7b\r") == ("STAT?", True)


def test_plain_messages():
    assert encode_message("ADR 6") == b"ADR 6\r"
    assert decode_message(b"OK\r") == ("OK", False)
    assert decode_message(b"LAMBDA,GEN6-200\r") == ("LAMBDA,GEN6-200", False)


def test_bad_checksum_and_garbage_are_rejected():
    with pytest.raises(ChecksumError):
        decode_message(b"STT?$3B\r")
    with pytest.raises(ValueError):
        decode_message(b"OK")
    with pytest.raises(ValueError):
        decode_message(b"O\x11\r")


@pytest.mark.parametrize("value, rating, text", [
    (1.15, 60, "01.150"), (15.012, 60, "15.012"), (50.0, 60, "50.000"),  # MV?, 60 V supply
    (0.5, 200, "000.50"), (110.12, 200, "110.12"), (200.0, 200, "200.00"),  # MC?, 200 A
    (5.9999, 6, "5.9999"), (6.0, 6, "6.0000"), (10.02, 100, "010.02"),  # DVC? example
])
def test_manual_reading_formats(value, rating, text):
    assert format_reading(value, rating) == text


def test_manual_four_digit_settings():
    assert format_reading(7.5, 6, digits=4) == "7.500"
    assert format_reading(0.0, 6, digits=4) == "0.000"


# --- the emulator's bytes --------------------------------------------------------------


@pytest.fixture
def supply(world):
    return GenesysEmulator("genesys", world.evaporator)


def test_emulator_answers_only_once_addressed(supply):
    assert supply.handle(b"IDN?\r") == b""
    assert supply.handle(b"ADR 7\r") == b""  # another supply on the bus
    assert supply.handle(b"IDN?\r") == b""
    assert supply.handle(b"ADR 6\r") == b"OK\r"
    assert supply.handle(b"IDN?\r") == b"LAMBDA,GEN6-200\r"
    assert supply.handle(b"ADR 7\r") == b""
    assert supply.handle(b"IDN?\r") == b""


def test_emulator_pymeasure_vectors(supply):
    assert supply.handle(b"ADR 6\r") == b"OK\r"
    assert supply.handle(b"REV?\r") == b"REV:1U:4.3\r"
    assert supply.handle(b"MDAV?\r") == b"1\r"
    assert supply.handle(b"RMT LOC\r") == b"OK\r"
    assert supply.handle(b"RMT?\r") == b"LOC\r"
    assert supply.handle(b"RMT REM\r") == b"OK\r"
    assert supply.handle(b"RMT?\r") == b"REM\r"


def test_emulator_framing_and_command_errors(supply):
    assert supply.handle(b"ADR") == b""  # half a line
    assert supply.handle(b" 6\r") == b"OK\r"
    assert supply.handle(b"\r") == b"OK\r"  # a CR by itself
    assert supply.handle(b"idn?\r\n") == b"LAMBDA,GEN6-200\r"  # any case; LF ignored
    assert supply.handle(b"IDX\x08N?\r") == b"LAMBDA,GEN6-200\r"  # backspace
    assert supply.handle(b"\\\r") == b"LAMBDA,GEN6-200\r"  # repeat the last command
    assert supply.handle(b"FOO\r") == b"C01\r"
    assert supply.handle(b"PV\r") == b"C02\r"
    assert supply.handle(b"PV six\r") == b"C03\r"
    assert supply.handle(b"PV 00000000001.5\r") == b"C03\r"  # more than 12 characters
    assert supply.handle(b"STT?$00\r") == b"C04$A7\r"
    assert supply.handle(b"PC 211\r") == b"C05\r"  # more than 105 % of 200 A


def test_emulator_programming_errors(supply):
    supply.handle(b"ADR 6\r")
    assert supply.handle(b"PV 6.4\r") == b"E01\r"  # above 105 % of 6 V
    assert supply.handle(b"PV 3\r") == b"OK\r"
    assert supply.handle(b"UVL 3.5\r") == b"E06\r"  # above the programmed voltage
    assert supply.handle(b"UVL 2\r") == b"OK\r"
    assert supply.handle(b"PV 1\r") == b"E02\r"  # below UVL
    assert supply.handle(b"OVP 3.2\r") == b"E04\r"  # below PV + 5 % of 6 V
    assert supply.handle(b"OVP 4\r") == b"OK\r"
    assert supply.handle(b"PV 3.9\r") == b"E01\r"  # above 95 % of OVP
    assert supply.handle(b"DVC?\r") == b"0.0000,3.0000,000.00,000.00,4.000,2.000\r"


def test_setpoint_queries_echo_in_remote_and_preview_in_local(world, supply):
    supply.handle(b"ADR 6\r")
    assert supply.handle(b"PC?\r") == b"000.00\r"
    assert supply.handle(b"PC 45\r") == b"OK\r"
    assert supply.remote == "REM"  # a set command takes a local unit to remote
    assert supply.handle(b"PC?\r") == b"45\r"
    supply.handle(b"RMT LOC\r")
    assert supply.handle(b"PC?\r") == b"045.00\r"
    supply.handle(b"RMT REM\r")
    world.evaporator.set_supply_current_A(50.0)  # someone else moved the supply
    assert supply.handle(b"PC?\r") == b"050.00\r"


def test_status_and_checksummed_replies(supply):
    assert supply.handle(b"ADR 6$2D\r") == b"OK$9A\r"
    assert supply.handle(b"OUT ON$B5\r") == b"OK$9A\r"
    reply = supply.handle(b"STT?$3A\r")
    text, had_checksum = decode_message(reply)
    assert had_checksum
    assert re.fullmatch(r"MV\(\d\.\d{4}\),PV\(6\.0000\),MC\(\d{3}\.\d{2}\),PC\(000\.00\),"
                        r"SR\(06\),FR\(00\)", text)  # CC at zero current, no fault


def test_rst_brings_the_supply_to_a_safe_known_state(world, supply):
    supply.handle(b"ADR 6\r")
    for line in (b"PV 5\r", b"PC 40\r", b"OUT ON\r", b"OVP 6\r", b"RST\r"):
        assert supply.handle(line) == b"OK\r"
    readings = world.evaporator.supply_readings()
    assert (readings["output_on"], readings["current_set_A"], readings["voltage_limit_V"]) == (
        False, 0.0, 0.0)
    assert supply.handle(b"OVP?\r") == b"7.500\r"
    assert supply.handle(b"MODE?\r") == b"OFF\r"


def test_snapshot_restores_instrument_memory(world, supply):
    supply.handle(b"ADR 6\r")
    supply.handle(b"OVP 7\r")
    supply.handle(b"PC 12.5\r")
    fresh = GenesysEmulator("genesys", world.evaporator)
    fresh.restore(supply.snapshot())
    assert fresh.handle(b"OVP?\r") == b"7\r"
    assert fresh.handle(b"PC?\r") == b"12.5\r"


def test_a_new_connection_must_select_again(supply):
    supply.handle(b"ADR 6\r")
    supply.reset_connection()
    assert supply.handle(b"IDN?\r") == b""


def test_unknown_model_is_refused(world):
    with pytest.raises(InputError, match="not a Genesys"):
        GenesysEmulator("g", world.evaporator, model="Z60-14")


# --- driver ↔ emulator, coupled to the evaporator ----------------------------------------


def boat_resistance_ohm(world, boat: int) -> float:
    """The tool's R(T) of a boat, from its own parameters."""
    bp = world.evaporator.bp
    return bp.r0_ohm * (1 + bp.alpha_per_K * (world.evaporator.boat_temperature_K(boat) - 300))


@pytest.fixture
def source(supply):
    return GenesysSupply("source", sim_link(supply), max_current_A=150, max_voltage_V=6)


def test_current_heats_the_boat_and_readings_follow_i2r(world, clock, supply, source):
    evaporator = world.evaporator
    evaporator.select_boat(1)  # Cu
    evaporator.set_pumping(True)
    clock.advance(3600)
    source.set_current_A(45)
    source.set_output(True)
    assert source.output_on()
    assert source.current_setpoint_A() == 45.0
    clock.advance(300)
    assert evaporator.boat_temperature_K(1) > 1400
    r_ohm = boat_resistance_ohm(world, 1)
    assert source.mode() == "CC"
    assert source.current_A() == pytest.approx(45, rel=2e-3)
    assert source.voltage_V() == pytest.approx(45 * r_ohm, rel=2e-3)
    assert source.power_W() == pytest.approx(45**2 * r_ohm, rel=3e-3)
    assert evaporator.substrate_rate_A_s() > 0


def test_voltage_limit_turns_the_supply_to_cv(world, clock, source):
    source.set_current_A(45)
    source.set_output(True)
    clock.advance(120)
    source.set_voltage_limit_V(1.0)
    clock.advance(1)
    assert source.mode() == "CV"
    assert source.voltage_V() == pytest.approx(1.0, rel=2e-3)
    assert source.current_A() == pytest.approx(1.0 / boat_resistance_ohm(world, 1), rel=3e-3)
    assert source.current_A() < 45


def test_first_use_claims_remote(supply, source):
    assert supply.remote == "LOC"
    assert source.output_on() is False
    assert supply.remote == "REM"


def test_identify(source):
    assert source.identify() == ("LAMBDA GEN6-200 serial 12A3456-0001, firmware REV:1U:4.3, "
                                 "address 6")


def test_make_safe_zeroes_current_then_turns_off(world, source):
    source.set_current_A(30)
    source.set_output(True)
    source.make_safe()
    readings = world.evaporator.supply_readings()
    assert (readings["output_on"], readings["current_set_A"]) == (False, 0.0)


def test_garbled_reply_is_retried(supply, source):
    link = source.link
    source.set_current_A(45)
    source.set_output(True)
    supply.faults.garble_replies = 1
    assert source.current_A() == pytest.approx(45, rel=2e-3)
    assert supply.faults.garble_replies == 0
    assert "not a Genesys reply" in link.last_error  # the garbled frame was retried
    assert link.health is Health.OK


def test_link_down_is_lost(supply, source):
    supply.faults.link_down = True
    with pytest.raises(LinkLost, match="sim://genesys is lost after 3 attempts"):
        source.current_A()


def test_refusal_is_an_instrument_error(supply):
    unlimited = GenesysSupply("source", sim_link(supply))
    with pytest.raises(InstrumentError, match=r"source refused b'PV 7\.000\\r' with E01: the "
                                              "voltage program is above the acceptable range"):
        unlimited.set_voltage_limit_V(7.0)
    with pytest.raises(InstrumentError, match=r"refused b'PC 250\.00\\r' with C05: setting out"):
        unlimited.set_current_A(250)


def test_station_limit_refuses_before_sending(supply, source):
    supply.faults.link_down = True  # anything sent would end in LinkLost instead
    with pytest.raises(InstrumentError, match=r"will not set 160 A: the station limit is "
                                              r"0–150 A \(max_current_A\)"):
        source.set_current_A(160)
    with pytest.raises(InstrumentError, match="max_voltage_V"):
        source.set_voltage_limit_V(6.5)
    with pytest.raises(InstrumentError, match="cannot be negative"):
        GenesysSupply("s", sim_link(supply)).set_current_A(-1)


def test_address_outside_the_bus_is_bad_input(supply):
    with pytest.raises(InputError, match="address 31 is outside 0–30"):
        GenesysSupply("s", sim_link(supply), address=31)


def test_checksum_mode(supply):
    source = GenesysSupply("source", sim_link(supply), checksum=True)
    source.set_current_A(20)
    assert source.current_setpoint_A() == 20.0
    plain = GenesysSupply("plain", sim_link(supply))
    assert plain.current_setpoint_A() == 20.0


class Bus:
    """Two supplies on one RS-485 pair: every write reaches both, both may answer."""

    def __init__(self, *emulators):
        self.emulators = emulators

    def handle(self, data: bytes) -> bytes:
        return b"".join(emulator.handle(data) for emulator in self.emulators)

    def reset_connection(self) -> None:
        for emulator in self.emulators:
            emulator.reset_connection()


def test_two_supplies_share_one_link(world):
    first = GenesysEmulator("first", world.evaporator, address=6)
    second = GenesysEmulator("second", world.evaporator, address=7)
    link = Link("sim://bus", SimPort(Bus(first, second)), timeout_s=0.2)
    GenesysSupply("a", link, address=6).identify()
    GenesysSupply("b", link, address=7).set_current_A(12)
    assert (first.remote, second.remote) == ("REM", "REM")
    assert second.programmed == {"PC": "12.00"}
    assert first.programmed == {}


# --- an independent client over TCP ------------------------------------------------------


@pytest.fixture
def server():
    emulator = GenesysEmulator("genesys", World(time.monotonic, seed=1).evaporator)
    srv = serve(emulator)
    yield srv
    srv.stop()


def test_pyserial_client(server):
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)
    try:
        port.write(b"IDN?\r")  # not addressed yet: the supply stays silent
        port.timeout = 0.2
        assert port.read_until(b"\r") == b""
        port.timeout = 1
        port.write(b"ADR 6\r")
        assert port.read_until(b"\r") == b"OK\r"
        port.write(b"IDN?\r")
        assert port.read_until(b"\r") == b"LAMBDA,GEN6-200\r"
        port.write(b"PC 45\r")
        assert port.read_until(b"\r") == b"OK\r"
        port.write(b"OUT ON\r")
        assert port.read_until(b"\r") == b"OK\r"
        port.write(b"MODE?\r")
        assert port.read_until(b"\r") == b"CC\r"
        port.write(b"MC?\r")
        assert re.fullmatch(rb"04[45]\.\d\d\r", port.read_until(b"\r"))
        port.write(b"PV 7\r")
        assert port.read_until(b"\r") == b"E01\r"
        port.write(b"OUT OFF\r")
        assert port.read_until(b"\r") == b"OK\r"
    finally:
        port.close()


def test_pyvisa_client(server):
    with visa_socket(server.port) as inst:
        inst.write_raw(b"ADR 6\r")
        assert inst.read_bytes(3) == b"OK\r"
        inst.write_raw(b"STT?$3A\r")
        reply = inst.read_bytes(61)
        assert re.fullmatch(rb"MV\(0\.0000\),PV\(6\.0000\),MC\(000\.00\),PC\(000\.00\),"
                            rb"SR\(84\),FR\(00\)\$[0-9A-F]{2}\r", reply)
        inst.write_raw(b"OVP?\r")
        assert inst.read_bytes(6) == b"7.500\r"


def test_driver_over_tcp(server):
    pool = LinkPool()
    try:
        link = pool.open(f"socket://127.0.0.1:{server.port}", GenesysSupply.SERIAL_DEFAULTS)
        source = GenesysSupply("source", link)
        source.set_current_A(10)
        assert source.current_setpoint_A() == 10.0
        assert source.identify().startswith("LAMBDA GEN6-200")
        source.make_safe()
        assert source.output_on() is False
    finally:
        pool.close()
