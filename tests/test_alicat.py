"""Alicat mass-flow controller: codec, driver ↔ emulator, and an independent TCP client."""

import re
import time

import pytest
import serial
from conftest import sim_link, visa_socket

from lipon_hw.drivers.alicat import (
    AlicatMFC,
    DataFrame,
    encode_command,
    format_data_frame,
    is_refusal,
    parse_data_frame,
    parse_firmware,
)
from lipon_hw.errors import InputError, InstrumentError, LinkLost
from lipon_hw.links import Health, LinkPool
from lipon_hw.sim.emulators.alicat import AlicatEmulator
from lipon_hw.sim.tcp import serve
from lipon_hw.sim.world import World

# --- codec: MC-series manual and protocols.md §3.4 examples ------------------------------


def test_manual_setpoint_command():
    assert encode_command("A", "S4.54") == b"AS4.54\r"
    assert encode_command("A") == b"A\r"


def test_manual_data_frame():
    frame = parse_data_frame("A +014.70 +025.00 +02.004 +02.004 2.004 Air")
    assert frame == DataFrame("A", 14.70, 25.00, 2.004, 2.004, 2.004, "Air")


def test_reference_data_frame_round_trips_byte_exact():
    line = b"A +014.70 +025.00 +000.00 +000.00 000.00 N2\r"
    frame = parse_data_frame(line.decode().strip())
    assert frame == DataFrame("A", 14.70, 25.00, 0.0, 0.0, 0.0, "N2")
    assert format_data_frame(frame) == line


def test_status_codes_and_negative_flow():
    frame = parse_data_frame("A +014.70 +025.00 -000.08 -000.08 000.00 N2 LCK MOV")
    assert frame.mass_flow == -0.08
    assert frame.status == ("LCK", "MOV")


@pytest.mark.parametrize("line", ["A +014.70 +025.00 +000.00 +000.00 000.00",
                                  "A +014.70 +025.0j +000.00 +000.00 000.00 N2",
                                  "A +014.70 +025.00 +000.00 +000.00 000.00 N2 l0k"])
def test_malformed_frames_are_rejected(line):
    with pytest.raises(ValueError):
        parse_data_frame(line)


def test_firmware_version():
    assert parse_firmware("A 10v05.0-R24") == "10v05.0-R24"
    with pytest.raises(ValueError):
        parse_firmware("A 10j05")


def test_refusal():
    assert is_refusal("?")
    assert is_refusal("A ?")
    assert not is_refusal("A +014.70 +025.00 +000.00 +000.00 000.00 N2")


# --- driver ↔ emulator ------------------------------------------------------------------


@pytest.fixture
def mfc_emulator(world):
    return AlicatEmulator("mfc", world.sputter)


def test_setpoint_sets_the_chamber_flow(world, clock, mfc_emulator):
    mfc = AlicatMFC("n2", sim_link(mfc_emulator))
    world.sputter.set_pumping(True)
    clock.advance(3 * 3600)
    base = world.sputter.pressure_torr()
    mfc.set_flow_sccm(20)
    clock.advance(60)
    assert world.sputter.n2_flow_sccm() == 20
    assert world.sputter.pressure_torr() - base == pytest.approx(0.015, rel=0.1)  # 15 mTorr
    assert mfc.flow_setpoint_sccm() == 20
    flows = [mfc.flow_sccm() for _ in range(50)]
    assert all(abs(f - 20) < 0.5 for f in flows)  # 0.2 % of 50 sccm is 0.1 sccm
    assert len(set(flows)) > 1


def test_make_safe_stops_the_flow(world, mfc_emulator):
    mfc = AlicatMFC("n2", sim_link(mfc_emulator))
    mfc.set_flow_sccm(30)
    mfc.make_safe()
    assert world.sputter.n2_flow_sccm() == 0
    assert mfc.flow_setpoint_sccm() == 0


def test_setpoint_above_the_limit_is_refused_before_sending(world, mfc_emulator):
    mfc = AlicatMFC("n2", sim_link(mfc_emulator), max_flow_sccm=40)
    with pytest.raises(InstrumentError, match="limit is 0 to 40.0 sccm"):
        mfc.set_flow_sccm(45)
    assert world.sputter.n2_flow_sccm() == 0


def test_device_refuses_a_setpoint_beyond_full_scale(world, mfc_emulator):
    mfc = AlicatMFC("n2", sim_link(mfc_emulator), max_flow_sccm=100)
    with pytest.raises(InstrumentError, match=r"n2 refused b'AS80.00\\r' \(it answered '\?'\)"):
        mfc.set_flow_sccm(80)
    assert world.sputter.n2_flow_sccm() == 0


def test_identify(mfc_emulator):
    assert AlicatMFC("n2", sim_link(mfc_emulator)).identify() == (
        "Alicat unit A, firmware 10v05.0-R24")


def test_bad_unit_id_is_input_error(mfc_emulator):
    with pytest.raises(InputError, match="one letter"):
        AlicatMFC("n2", sim_link(mfc_emulator), unit="AB")


def test_garbled_reply_is_retried(world, mfc_emulator):
    link = sim_link(mfc_emulator)
    mfc = AlicatMFC("n2", link)
    mfc_emulator.faults.garble_replies = 1
    mfc.set_flow_sccm(10)
    assert mfc_emulator.faults.garble_replies == 0
    assert link.health is Health.OK
    assert world.sputter.n2_flow_sccm() == 10


def test_link_down_is_lost(mfc_emulator):
    mfc_emulator.faults.link_down = True
    with pytest.raises(LinkLost, match="sim://mfc is lost after 3 attempts"):
        AlicatMFC("n2", sim_link(mfc_emulator)).flow_sccm()


def test_other_unit_ids_are_ignored(mfc_emulator):
    assert mfc_emulator.handle(b"B\r") == b""
    with pytest.raises(LinkLost):
        AlicatMFC("n2", sim_link(mfc_emulator), unit="B").flow_sccm()


def test_emulator_accepts_partial_lines_lower_case_and_integer_setpoints(world, mfc_emulator):
    assert mfc_emulator.handle(b"a") == b""
    assert mfc_emulator.handle(b"s12.5\r").endswith(b" 012.50 N2\r")
    assert mfc_emulator.handle(b"A32000\r").endswith(b" 025.00 N2\r")  # half of 64000
    assert world.sputter.n2_flow_sccm() == 25
    assert mfc_emulator.handle(b"AXYZ\r") == b"?\r"


# --- an independent client over TCP -----------------------------------------------------

FRAME = re.compile(rb"A \+014\.70 \+025\.00 ([+-]\d{3}\.\d\d) ([+-]\d{3}\.\d\d) "
                   rb"(\d{3}\.\d\d) N2\r")


@pytest.fixture
def server():
    srv = serve(AlicatEmulator("mfc", World(time.monotonic, seed=1).sputter))
    yield srv
    srv.stop()


def test_pyserial_client(server):
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)
    try:
        port.write(b"AS20.00\r")
        match = FRAME.fullmatch(port.read_until(b"\r"))
        assert match[3] == b"020.00"
        assert abs(float(match[2]) - 20) < 0.5
        port.write(b"A\r")
        assert FRAME.fullmatch(port.read_until(b"\r"))[3] == b"020.00"
        port.write(b"AXYZ\r")
        assert port.read_until(b"\r") == b"?\r"
        port.timeout = 0.2
        port.write(b"B\r")
        assert port.read(1) == b""
    finally:
        port.close()


def test_pyvisa_client(server):
    with visa_socket(server.port) as inst:
        inst.write_raw(b"AS5.00\r")
        frame = inst.read_bytes(44)  # every field has a fixed width below 100 sccm
        assert FRAME.fullmatch(frame)[3] == b"005.00"
        inst.write_raw(b"AS99\r")
        assert inst.read_bytes(2) == b"?\r"


def test_driver_over_tcp(server):
    pool = LinkPool()
    try:
        link = pool.open(f"socket://127.0.0.1:{server.port}", AlicatMFC.SERIAL_DEFAULTS)
        mfc = AlicatMFC("n2", link)
        mfc.set_flow_sccm(12.5)
        assert mfc.flow_setpoint_sccm() == 12.5
    finally:
        pool.close()
