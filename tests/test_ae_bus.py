"""AE Bus RF generator: codec, emulator, driver ↔ emulator, and an independent TCP client.

Manual examples: protocols.md §2.1 (verified there against InstrumentKit's Cesar 1312
test vectors); the identity, control- and regulation-mode vectors come from the same
InstrumentKit tests (tests/test_dressler/test_cesar_1312.py).
"""

from __future__ import annotations

import time

import pytest
import pyvisa
import serial
from conftest import sim_link

from lipon_hw.drivers.ae_bus import (
    ACK,
    NAK,
    AEBusGenerator,
    checksum,
    decode_packet,
    encode_packet,
    frame_length,
)
from lipon_hw.errors import FrameError, InstrumentError, LinkLost
from lipon_hw.interfaces import SputterSupply
from lipon_hw.links import Health, LinkPool
from lipon_hw.sim.emulators.ae_bus import AEBusEmulator
from lipon_hw.sim.tcp import serve
from lipon_hw.sim.world import World

H = bytes.fromhex

# --- 1. codec against the manual ---------------------------------------------------
HOST_PACKETS = [  # (address, command, data, bytes on the wire)
    (1, 1, b"", "08 01 09"),  # RF off
    (1, 2, b"", "08 02 0A"),  # RF on
    (1, 8, H("E8 03"), "0A 08 E8 03 E9"),  # set 1000 W
    (1, 3, H("06"), "09 03 06 0C"),  # regulation: forward
    (1, 14, H("02"), "09 0E 02 05"),  # control mode: host
    (1, 162, b"", "08 A2 AA"),
    (1, 164, b"", "08 A4 AC"),
    (1, 165, b"", "08 A5 AD"),
    (1, 166, b"", "08 A6 AE"),
    (1, 128, b"", "08 80 88"),
    (1, 155, b"", "08 9B 93"),
    (3, 2, H("00 04 00 00"), "1C 02 00 04 00 00 1A"),  # InstrumentKit, address 3
    (1, 1, H("01 02 03 04 05 00 04 00 00"), "0F 01 09 01 02 03 04 05 00 04 00 00 02"),
]

UNIT_REPLIES = [  # (command, data, bytes on the wire)
    (2, H("00"), "09 02 00 0B"),  # CSR OK to RF on
    (8, H("00"), "09 08 00 01"),  # CSR OK to set 1000 W
    (162, H("20 00 00 00"), "0C A2 20 00 00 00 8E"),  # RF on
    (164, H("E8 03 06"), "0B A4 E8 03 06 42"),  # 1000 W, forward regulation
    (165, H("F4 01"), "0A A5 F4 01 5A"),  # 500 W forward
    (166, H("01 00"), "0A A6 01 00 AD"),  # 1 W reflected
    (128, b"CESAR", "0D 80 43 45 53 41 52 CB"),
]


@pytest.mark.parametrize(("address", "command", "data", "wire"), HOST_PACKETS)
def test_encode_matches_manual(address, command, data, wire):
    assert encode_packet(address, command, data) == H(wire)


@pytest.mark.parametrize(("command", "data", "wire"), UNIT_REPLIES)
def test_decode_matches_manual(command, data, wire):
    assert decode_packet(H(wire)) == (1, command, data)
    assert encode_packet(1, command, data) == H(wire)


def test_long_packet_carries_its_length_after_the_command():
    packet = H("0F 01 09 01 02 03 04 05 00 04 00 00 02")
    assert frame_length(packet[:2]) is None
    assert frame_length(packet[:3]) == len(packet)
    assert decode_packet(packet)[2] == H("01 02 03 04 05 00 04 00 00")


def test_a_valid_packet_xors_to_zero_and_a_flipped_byte_does_not():
    assert checksum(H("0B A4 E8 03 06 42")) == 0
    with pytest.raises(FrameError, match="checksum"):
        decode_packet(H("0B A4 E8 13 06 42"))
    with pytest.raises(FrameError, match="length"):
        decode_packet(H("0B A4 E8 42"))


# --- emulator, byte-exact ------------------------------------------------------------
def pump_and_gas(tool, clock):
    """15 mTorr of N2 after a 3-hour pump-down: the plasma can ignite."""
    tool.set_pumping(True)
    clock.advance(3 * 3600)
    tool.set_n2_flow_sccm(20)
    clock.advance(30)


def host(emulator, *packets):
    """Send packets as a host would (ACKing each reply); return the last answer."""
    answer = b""
    for packet in packets:
        answer = emulator.handle(H(packet))
        if answer[:1] == ACK:
            emulator.handle(ACK)
    return answer


@pytest.fixture
def quiet(world):
    """A 1.25 kW unit without reading noise, in host control, so replies are exact."""
    emulator = AEBusEmulator("rf", world.sputter, rated_power_W=1250, noise_pct=0, noise_W=0)
    assert host(emulator, "09 0E 02 05") == ACK + H("09 0E 00 07")
    return emulator


def test_emulator_answers_set_commands_like_the_manual(quiet, world):
    assert host(quiet, "08 02 0A") == ACK + H("09 02 00 0B")
    assert host(quiet, "09 03 06 0C") == ACK + H("09 03 00 0A")
    assert host(quiet, "0A 08 E8 03 E9") == ACK + H("09 08 00 01")
    assert host(quiet, "08 A4 AC") == ACK + H("0B A4 E8 03 06 42")
    assert world.sputter.rf_readings()["setpoint_W"] == 1000
    assert host(quiet, "08 01 09") == ACK + H("09 01 00 08")
    assert not world.sputter.rf_readings()["rf_on"]


def test_emulator_status_and_forward_power_like_the_manual(quiet, clock):
    assert host(quiet, "08 A2 AA") == ACK + H("0C A2 00 00 00 00 AE")
    host(quiet, "0A 08 F4 01 F7", "08 02 0A")  # 500 W, RF on
    clock.advance(1)
    assert host(quiet, "08 A2 AA") == ACK + H("0C A2 20 00 00 00 8E")
    assert host(quiet, "08 A5 AD") == ACK + H("0A A5 F4 01 5A")


def test_emulator_reflected_power_of_a_matched_plasma(quiet, world, clock):
    pump_and_gas(world.sputter, clock)
    host(quiet, "0A 08 A7 00 A5", "08 02 0A")  # 167 W: 0.6 % reflected once matched
    clock.advance(30)
    assert world.sputter.rf_readings()["plasma"]
    assert host(quiet, "08 A6 AE") == ACK + H("0A A6 01 00 AD")


def test_emulator_identity_and_modes_like_instrumentkit(world):
    emulator = AEBusEmulator("rf", world.sputter)
    assert host(emulator, "08 80 88") == ACK + H("0D 80 43 45 53 41 52 CB")
    assert host(emulator, "08 81 89") == ACK + H("0D 81 5F 31 33 31 32 D2")
    assert host(emulator, "08 9B 93") == ACK + H("09 9B 06 94")  # front panel
    assert host(emulator, "09 0E 02 05") == ACK + H("09 0E 00 07")
    assert host(emulator, "08 9B 93") == ACK + H("09 9B 02 90")  # host
    assert host(emulator, "08 9A 92") == ACK + H("09 9A 06 95")  # forward regulation


def test_emulator_refuses_with_csr(world):
    emulator = AEBusEmulator("rf", world.sputter)
    assert host(emulator, "08 02 0A") == ACK + H("09 02 01 0A")  # front panel: CSR 1
    host(emulator, "09 0E 02 05")
    assert host(emulator, "0A 08 E8 03 E9") == ACK + H("09 08 04 05")  # 1000 W > 600 W
    assert host(emulator, "09 08 E8 E9") == ACK + H("09 08 09 08")  # 1 data byte: CSR 9
    assert host(emulator, "08 00 08") == ACK + H("09 00 63 6A")  # unknown: CSR 99
    assert not world.sputter.rf_readings()["rf_on"]


def test_emulator_handshake_partial_packets_and_other_units(world):
    emulator = AEBusEmulator("rf", world.sputter, inter_byte_timeout_s=60)
    assert emulator.handle(H("08 9B")) == b""  # half a packet: wait
    assert emulator.handle(H("93")) == ACK + H("09 9B 06 94")
    assert emulator.handle(NAK) == H("09 9B 06 94")  # host NAK: the reply again
    assert emulator.handle(ACK) == b""
    assert emulator.handle(H("08 9B 94")) == NAK  # corrupt packet
    assert emulator.handle(H("10 9B 8B")) == b""  # unit 2's packet
    assert emulator.handle(H("01 0E 02 0D")) == b""  # broadcast: acted on, no answer
    assert emulator.control_mode == 2


def test_emulator_drops_line_noise_after_an_inter_byte_gap(world):
    emulator = AEBusEmulator("rf", world.sputter)
    assert emulator.handle(H("FF 01")) == b""  # looks like the start of a long packet
    time.sleep(0.05)
    assert emulator.handle(H("08 9B 93")) == ACK + H("09 9B 06 94")


# --- 2. driver ↔ emulator ----------------------------------------------------------
class Wire:
    """The in-process wire: logs (host bytes, unit bytes) and can corrupt host packets."""

    def __init__(self, emulator, corrupt_host_packets: int = 0):
        self.emulator = emulator
        self.name = emulator.name
        self.corrupt = corrupt_host_packets
        self.log: list[tuple[bytes, bytes]] = []

    def handle(self, data: bytes) -> bytes:
        if self.corrupt and len(data) > 1:
            self.corrupt -= 1
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        reply = self.emulator.handle(data)
        self.log.append((data, reply))
        return reply

    def reset_connection(self) -> None:
        self.emulator.reset_connection()


@pytest.fixture
def emulator(world):
    return AEBusEmulator("rf", world.sputter)


@pytest.fixture
def wire(emulator):
    return Wire(emulator)


@pytest.fixture
def gen(wire):
    return AEBusGenerator("rf-gen", sim_link(wire))


def test_driver_is_a_sputter_supply(gen):
    assert isinstance(gen, SputterSupply)
    assert AEBusGenerator.SERIAL_DEFAULTS == {"baudrate": 19200, "parity": "O",
                                              "bytesize": 8, "stopbits": 1}


def test_driver_identifies_the_unit(gen):
    assert gen.identify() == "CESAR_1312 firmware V1.07.0"


def test_driver_claims_host_control_once_then_sends_manual_bytes(gen, wire):
    gen.set_output(True)
    gen.set_output(False)
    sent = [data for data, _reply in wire.log]
    assert sent == [H("09 0E 02 05"), ACK, H("08 02 0A"), ACK, H("08 01 09"), ACK]


def test_rf_on_at_15_mtorr_n2_ignites_a_plasma(gen, world, clock):
    pump_and_gas(world.sputter, clock)
    gen.set_regulation_mode("forward")
    gen.set_power_setpoint_W(50)
    gen.set_output(True)
    clock.advance(10)
    assert world.sputter.rf_readings()["plasma"]
    assert gen.power_setpoint_W() == 50
    assert gen.forward_power_W() == pytest.approx(50, abs=1)
    assert gen.reflected_power_W() == pytest.approx(0, abs=1)
    assert gen.load_power_W() == pytest.approx(50, abs=1)
    assert gen.dc_bias_V() == pytest.approx(-26 * 50**0.5, abs=3)  # ≈ −184 V
    status = gen.status()
    assert status.output_on and status.setpoint_reached
    assert not status.interlock_open and not status.fault


def test_load_regulation_without_plasma_misses_the_setpoint(gen, world, clock):
    gen.set_regulation_mode("load")
    gen.set_power_setpoint_W(50)
    gen.set_output(True)
    clock.advance(2)
    assert world.sputter.rf_readings()["regulation"] == "load"
    assert gen.forward_power_W() == pytest.approx(600, abs=3)  # at the forward limit
    assert gen.load_power_W() < 20
    status = gen.status()
    assert status.output_on and not status.setpoint_reached


def test_make_safe_switches_rf_off_then_zeroes_the_setpoint(gen, world):
    gen.set_power_setpoint_W(100)
    gen.set_output(True)
    gen.make_safe()
    readings = world.sputter.rf_readings()
    assert not readings["rf_on"] and readings["setpoint_W"] == 0
    assert not gen.status().output_on


def test_garbled_reply_is_nakked_and_resent(gen, wire, emulator):
    emulator.faults.garble_replies = 1
    gen.set_output(True)
    sent = [data for data, _reply in wire.log]
    assert sent == [H("09 0E 02 05"), NAK, ACK, H("08 02 0A"), ACK]
    assert gen.link.health is Health.OK


def test_persistently_garbled_replies_retry_the_whole_exchange(gen, wire, emulator):
    emulator.faults.garble_replies = 3  # the first reply and both of its resends
    assert gen.identify().startswith("CESAR")
    assert [data for data, _reply in wire.log][:5] == [H("08 80 88"), NAK, NAK, H("08 80 88"),
                                                       ACK]


def test_unit_nak_of_a_corrupt_packet_is_retried(emulator, world):
    wire = Wire(emulator, corrupt_host_packets=1)
    gen = AEBusGenerator("rf-gen", sim_link(wire))
    gen.set_output(True)
    assert wire.log[0][1] == NAK
    assert world.sputter.rf_readings()["rf_on"]
    assert gen.link.health is Health.OK


def test_dropped_link_is_lost_with_a_clear_message(gen, emulator):
    emulator.faults.link_down = True
    with pytest.raises(LinkLost, match=r"sim://rf is lost after 3 attempts: .*timing out"):
        gen.forward_power_W()
    assert gen.link.health is Health.LOST


def test_setpoint_above_the_rated_power_is_refused_with_csr_4(emulator, world):
    gen = AEBusGenerator("rf-gen", sim_link(emulator), max_power_W=1000)
    with pytest.raises(InstrumentError, match=r"rf-gen refused .* CSR 4 \(data out of range\)"):
        gen.set_power_setpoint_W(700)
    assert world.sputter.rf_readings()["setpoint_W"] == 0


def test_front_panel_takeover_is_refused_with_csr_1(gen, emulator, world):
    gen.set_power_setpoint_W(50)
    emulator.control_mode = 6  # an operator took the front panel
    with pytest.raises(InstrumentError, match=r"CSR 1 \(wrong control mode\)"):
        gen.set_output(True)
    assert not world.sputter.rf_readings()["rf_on"]


def test_driver_limit_is_checked_before_anything_is_sent(gen, wire):
    with pytest.raises(InstrumentError, match=r"rf-gen will not set 601 W.*max_power_W"):
        gen.set_power_setpoint_W(601)
    assert wire.log == []


# --- 3. an independent client over TCP ----------------------------------------------
@pytest.fixture
def server():
    world = World(time.monotonic, seed=1)
    srv = serve(AEBusEmulator("rf", world.sputter))
    yield srv
    srv.stop()


def test_pyserial_client_speaks_the_manual_bytes(server):
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)

    def ask(packet: str, size: int) -> bytes:
        port.write(H(packet))
        return port.read(size)

    try:
        assert ask("08 80 88", 9) == H("06 0D 80 43 45 53 41 52 CB")
        port.write(ACK)
        assert ask("08 02 0A", 5) == H("06 09 02 01 0A")  # front panel: CSR 1
        port.write(ACK)
        assert ask("09 0E 02 05", 5) == H("06 09 0E 00 07")
        port.write(ACK)
        assert ask("0A 08 32 00 30", 5) == H("06 09 08 00 01")  # 50 W
        port.write(ACK)
        assert ask("08 02 0A", 5) == H("06 09 02 00 0B")
        port.write(ACK)
        assert ask("08 A2 AA", 8) == H("06 0C A2 20 00 00 00 8E")
        port.write(ACK)
        assert ask("08 A4 AC", 7) == H("06 0B A4 32 00 06 9B")
        assert ask("15", 6) == H("0B A4 32 00 06 9B")  # NAK: sent again
        port.write(ACK)
        assert ask("08 02 0B", 1) == NAK  # corrupt packet
        assert ask("08 01 09", 5) == H("06 09 01 00 08")
        port.write(ACK)
    finally:
        port.close()


def test_pyvisa_client_speaks_the_manual_bytes(server):
    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(f"TCPIP::127.0.0.1::{server.port}::SOCKET")
    inst.read_termination = None
    inst.write_termination = None
    inst.timeout = 1000

    def ask(packet: str, size: int) -> bytes:
        inst.write_raw(H(packet))
        reply = inst.read_bytes(size, break_on_termchar=False)
        inst.write_raw(ACK)
        return reply

    try:
        assert ask("08 81 89", 9) == H("06 0D 81 5F 31 33 31 32 D2")
        assert ask("09 0E 02 05", 5) == H("06 09 0E 00 07")
        assert ask("0A 08 E8 03 E9", 5) == H("06 09 08 04 05")  # 1000 W > 600 W: CSR 4
        assert ask("08 A5 AD", 6) == H("06 0A A5 00 00 AF")  # RF off: 0 W forward
    finally:
        inst.close()
        rm.close()


def test_driver_over_a_real_socket(server):
    pool = LinkPool()
    link = pool.open(f"socket://127.0.0.1:{server.port}", AEBusGenerator.SERIAL_DEFAULTS)
    gen = AEBusGenerator("rf-gen", link)
    try:
        assert gen.identify() == "CESAR_1312 firmware V1.07.0"
        gen.set_power_setpoint_W(100)
        gen.set_output(True)
        assert gen.status().output_on
        assert gen.forward_power_W() == pytest.approx(100, abs=2)
        gen.make_safe()
        assert not gen.status().output_on
        assert gen.power_setpoint_W() == 0
    finally:
        pool.close()
