"""Modbus RTU relay module: codec, drivers ↔ emulator (sputter and evaporator wiring),
and an independent TCP client."""

import time

import pytest
import pyvisa
import serial
from conftest import sim_link, visa_socket

from lipon_hw.drivers.modbus_relay import (
    ModbusRelayShutter,
    ModbusRelaySourceSelector,
    ModbusRelayValves,
    coil_state,
    read_coils_reply,
    read_coils_request,
    write_coil_request,
)
from lipon_hw.drivers.modbus_rtu import crc16, crc_ok, exception_reply, request_size, with_crc
from lipon_hw.errors import InputError, InstrumentError, LinkLost
from lipon_hw.links import Health, Link, LinkPool
from lipon_hw.ports import SimPort
from lipon_hw.sim.emulators.modbus_relay import ModbusRelayEmulator
from lipon_hw.sim.tcp import serve
from lipon_hw.sim.world import World

H = bytes.fromhex

# --- codec: CRC-16/MODBUS check value and known frames -----------------------------------


def test_crc_check_value():
    assert crc16(b"123456789") == 0x4B37


def test_known_frames():
    assert write_coil_request(1, 0, True) == H("01 05 00 00 FF 00 8C 3A")
    assert write_coil_request(1, 0, False) == H("01 05 00 00 00 00 CD CA")
    assert with_crc(H("01 03 00 00 00 0A")) == H("01 03 00 00 00 0A C5 CD")
    assert read_coils_request(1, 0, 1) == H("01 01 00 00 00 01 FD CA")


def test_replies():
    assert read_coils_reply(1, [True]) == H("01 01 01 01 90 48")
    assert read_coils_reply(1, [True, False, True] + [False] * 7) == H("01 01 02 05 00 BA AC")
    assert exception_reply(1, 0x03, 0x01) == H("01 83 01 80 F0")
    assert crc_ok(H("01 85 02 C3 51"))
    assert not crc_ok(H("01 05 00 00 FF 00 8C 3B"))


def test_coil_state_bit_order():
    reply = read_coils_reply(1, [False, True] + [False] * 7 + [True])
    assert [coil_state(reply, i) for i in (0, 1, 9)] == [False, True, True]


def test_request_size():
    assert request_size(H("01")) is None
    assert request_size(H("01 05 00")) == 8
    assert request_size(H("01 0F 00 00 00 0A")) is None
    assert request_size(H("01 0F 00 00 00 0A 02")) == 11
    assert request_size(H("01 2B 0E 01 00 70 77")) == 7  # other functions: until silence


# --- drivers ↔ emulator -----------------------------------------------------------------


class RecordingRelay(ModbusRelayEmulator):
    """Keeps every request frame, to check the order of valve moves."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = []

    def handle(self, data: bytes) -> bytes:
        self.requests.append(data)
        return super().handle(data)


@pytest.fixture
def relay(world):
    return RecordingRelay("io", world.sputter)


@pytest.fixture
def link(relay):
    return sim_link(relay)


def test_shutter_moves_the_tool_shutter(world, relay, link):
    shutter = ModbusRelayShutter("shutter", link)
    shutter.open()
    assert world.sputter.shutter_open() and shutter.is_open()
    shutter.make_safe()
    assert not world.sputter.shutter_open() and not shutter.is_open()


def test_valves_pump_and_vent_the_chamber(world, clock, relay, link):
    valves = ModbusRelayValves("valves", link)
    valves.pump()
    clock.advance(2 * 3600)
    assert world.sputter.pressure_torr() < 1e-5
    valves.vent()
    clock.advance(300)
    assert world.sputter.pressure_torr() == pytest.approx(760, rel=0.01)
    assert relay.coils[:3] == [False, False, True]
    valves.isolate()
    assert relay.coils[:3] == [False, False, False]


def test_valves_break_before_make(relay, link):
    valves = ModbusRelayValves("valves", link)
    valves.pump()
    valves.vent()
    assert relay.requests == [write_coil_request(1, 2, False), write_coil_request(1, 1, True),
                              write_coil_request(1, 1, False), write_coil_request(1, 2, True)]


def test_valves_make_safe_keeps_pumping(world, relay, link):
    valves = ModbusRelayValves("valves", link)
    valves.pump()
    sent = len(relay.requests)
    valves.make_safe()
    assert len(relay.requests) == sent
    assert relay.coils[1]


def test_shutter_and_valves_share_the_module(relay, link):
    shutter = ModbusRelayShutter("shutter", link)
    valves = ModbusRelayValves("valves", link)
    shutter.open()
    valves.pump()
    assert relay.coils[:3] == [True, True, False]
    assert shutter.identify() == "Modbus RTU relay module, unit 1 (coil 0 = shutter)"
    assert valves.identify() == "Modbus RTU relay module, unit 1 (coil 1 = pumping, coil 2 = vent)"


def test_garbled_reply_is_retried(world, relay, link):
    shutter = ModbusRelayShutter("shutter", link)
    relay.faults.garble_replies = 2
    shutter.open()
    assert shutter.is_open()
    assert relay.faults.garble_replies == 0
    assert link.health is Health.OK


class CorruptFirstWrite(SimPort):
    """A line hit once: the first request arrives with its CRC broken."""

    def __init__(self, endpoint):
        super().__init__(endpoint)
        self.hits = 1

    def write(self, data: bytes) -> None:
        if self.hits:
            self.hits -= 1
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        super().write(data)


def test_request_with_bad_crc_gets_no_reply_and_is_retried(world, relay):
    link = Link("sim://io", CorruptFirstWrite(relay), timeout_s=0.2)
    ModbusRelayShutter("shutter", link).open()
    assert len(relay.requests) == 2
    assert world.sputter.shutter_open()


def test_link_down_is_lost(relay, link):
    relay.faults.link_down = True
    with pytest.raises(LinkLost, match="sim://io is lost after 3 attempts"):
        ModbusRelayShutter("shutter", link).close()


def test_coil_beyond_the_module_is_refused(relay, link):
    with pytest.raises(InstrumentError, match=r"exception 02 \(illegal data address\)"):
        ModbusRelayShutter("shutter", link, coil=9).open()


def test_emulator_exceptions_broadcast_and_framing(world, relay):
    assert relay.handle(H("01 03 00 00 00 0A C5 CD")) == H("01 83 01 80 F0")
    assert relay.handle(with_crc(H("01 05 00 00 12 34"))) == exception_reply(1, 0x05, 0x03)
    assert relay.handle(with_crc(H("01 01 00 00 00 00"))) == exception_reply(1, 0x01, 0x03)
    assert relay.handle(write_coil_request(2, 0, True)) == b""  # another unit
    assert relay.handle(write_coil_request(0, 0, True)) == b""  # broadcast: acts silently
    assert world.sputter.shutter_open()
    frame = write_coil_request(1, 0, False)
    assert relay.handle(b"\x07" + frame[:3]) == b""  # line noise, then half a frame
    assert relay.handle(frame[3:]) == frame


def test_bad_wiring_is_input_error(world):
    with pytest.raises(InputError, match="must map coil"):
        ModbusRelayEmulator("io", world.sputter, coils={0: "heater"})


def test_bad_unit_is_input_error(link):
    with pytest.raises(InputError, match="outside 1..247"):
        ModbusRelayShutter("shutter", link, unit=0)


def test_snapshot_restores_coils(world, relay):
    relay.handle(write_coil_request(1, 5, True))
    fresh = ModbusRelayEmulator("io", world.sputter)
    fresh.restore(relay.snapshot())
    assert fresh.coils[5]


# --- the evaporator: boat contactors on coils 3..5 ----------------------------------------

EVAPORATOR_WIRING = {0: "shutter", 1: "pumping", 2: "vent", 3: "boat1", 4: "boat2", 5: "boat3"}


@pytest.fixture
def evap_relay(world):
    return RecordingRelay("evap_io", world.evaporator, coils=EVAPORATOR_WIRING)


def test_selecting_a_boat_routes_the_supply(world, evap_relay):
    selector = ModbusRelaySourceSelector("boats", sim_link(evap_relay))
    selector.select_source(2)
    assert world.evaporator.selected_boat() == 2
    assert selector.selected_source() == 2
    assert evap_relay.routed_boats == [2]
    selector.select_source(3)
    assert world.evaporator.selected_boat() == 3
    assert evap_relay.coils[3:6] == [False, False, True]


def test_boat_selection_breaks_before_make(evap_relay):
    ModbusRelaySourceSelector("boats", sim_link(evap_relay)).select_source(2)
    assert evap_relay.requests == [write_coil_request(1, 3, False),
                                   write_coil_request(1, 4, False),
                                   write_coil_request(1, 5, False),
                                   write_coil_request(1, 4, True)]


def test_boat_heats_through_the_selected_contactor(world, clock, evap_relay):
    ModbusRelaySourceSelector("boats", sim_link(evap_relay)).select_source(1)
    world.evaporator.set_supply_output(True)
    world.evaporator.set_supply_current_A(45)
    clock.advance(120)
    assert world.evaporator.boat_temperature_K(1) > 600
    assert world.evaporator.boat_temperature_K(2) == pytest.approx(300)


def test_source_make_safe_opens_every_boat_contactor(world, evap_relay):
    selector = ModbusRelaySourceSelector("boats", sim_link(evap_relay))
    selector.select_source(2)
    selector.make_safe()
    assert evap_relay.coils[3:6] == [False, False, False]
    assert selector.selected_source() is None
    assert evap_relay.routed_boats == []
    assert world.evaporator.selected_boat() == 0  # no boat on the supply any more


def test_two_boats_on_at_once_is_reported(evap_relay):
    evap_relay.handle(write_coil_request(1, 3, True))
    evap_relay.handle(write_coil_request(1, 5, True))
    with pytest.raises(InstrumentError, match=r"boats \[1, 3\] switched on at once"):
        ModbusRelaySourceSelector("boats", sim_link(evap_relay)).selected_source()


def test_source_selector_rejects_missing_boats(evap_relay):
    selector = ModbusRelaySourceSelector("boats", sim_link(evap_relay))
    with pytest.raises(InputError, match="boat 4 does not exist"):
        selector.select_source(4)
    assert evap_relay.requests == []
    with pytest.raises(InputError, match="at least 1"):
        ModbusRelaySourceSelector("boats", sim_link(evap_relay), boats=0)


def test_evaporator_module_shares_shutter_valves_and_boats(world, clock, evap_relay):
    link = sim_link(evap_relay)
    selector = ModbusRelaySourceSelector("boats", link)
    ModbusRelayShutter("shutter", link).open()
    ModbusRelayValves("valves", link).pump()
    selector.select_source(3)
    clock.advance(3600)
    assert world.evaporator.shutter_open()
    assert world.evaporator.pressure_torr() < 1e-4
    assert evap_relay.coils[:6] == [True, True, False, False, False, True]
    assert selector.identify() == "Modbus RTU relay module, unit 1 (coils 3..5 = boats 1..3)"


def test_source_selector_retries_a_garbled_reply(world, evap_relay):
    evap_relay.faults.garble_replies = 1
    ModbusRelaySourceSelector("boats", sim_link(evap_relay)).select_source(3)
    assert world.evaporator.selected_boat() == 3
    assert evap_relay.faults.garble_replies == 0


def test_source_selector_link_down_is_lost(evap_relay):
    evap_relay.faults.link_down = True
    with pytest.raises(LinkLost, match="sim://evap_io is lost after 3 attempts"):
        ModbusRelaySourceSelector("boats", sim_link(evap_relay)).make_safe()


def test_boat_coil_beyond_the_module_is_refused(evap_relay):
    selector = ModbusRelaySourceSelector("boats", sim_link(evap_relay), first_coil=6)
    with pytest.raises(InstrumentError, match=r"exception 02 \(illegal data address\)"):
        selector.select_source(3)


def test_boats_cannot_be_wired_to_the_sputter_tool(world):
    with pytest.raises(InputError, match="must map coil"):
        ModbusRelayEmulator("io", world.sputter, coils={3: "boat1"})


# --- an independent client over TCP -----------------------------------------------------


@pytest.fixture
def tcp():
    world = World(time.monotonic, seed=1)
    srv = serve(ModbusRelayEmulator("io", world.sputter))
    yield srv, world
    srv.stop()


def test_pyserial_client(tcp):
    server, world = tcp
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)
    try:
        port.write(H("01 05 00 00 FF 00 8C 3A"))
        assert port.read(8) == H("01 05 00 00 FF 00 8C 3A")
        assert world.sputter.shutter_open()
        port.write(H("01 01 00 00 00 01 FD CA"))
        assert port.read(6) == H("01 01 01 01 90 48")
        port.write(H("01 03 00 00 00 0A C5 CD"))
        assert port.read(5) == H("01 83 01 80 F0")
        port.timeout = 0.2
        port.write(H("01 05 00 00 00 00 CD CB"))  # bad CRC: no reply, nothing moves
        assert port.read(8) == b""
        assert world.sputter.shutter_open()
    finally:
        port.close()


def test_pyvisa_client(tcp):
    server, world = tcp
    with visa_socket(server.port) as inst:
        inst.write_raw(H("01 05 00 09 FF 00 5C 38"))
        assert inst.read_bytes(5) == H("01 85 02 C3 51")  # coil 9 of 8: illegal address
        inst.write_raw(H("01 05 00 00 00 00 CD CA"))
        assert inst.read_bytes(8) == H("01 05 00 00 00 00 CD CA")
        assert not world.sputter.shutter_open()


def test_drivers_over_tcp(tcp):
    server, world = tcp
    pool = LinkPool()
    try:
        link = pool.open(f"socket://127.0.0.1:{server.port}", ModbusRelayShutter.SERIAL_DEFAULTS)
        ModbusRelayShutter("shutter", link).open()
        ModbusRelayValves("valves", link).pump()
        assert world.sputter.shutter_open()
    finally:
        pool.close()


def test_evaporator_boats_over_tcp():
    world = World(time.monotonic, seed=1)
    server = serve(ModbusRelayEmulator("evap_io", world.evaporator, coils=EVAPORATOR_WIRING))
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)
    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(f"TCPIP::127.0.0.1::{server.port}::SOCKET")
    pool = LinkPool()
    try:
        port.write(H("01 05 00 04 FF 00 CD FB"))  # coil 4 on: boat 2
        assert port.read(8) == H("01 05 00 04 FF 00 CD FB")
        assert world.evaporator.selected_boat() == 2
        port.write(H("01 01 00 03 00 03 8C 0B"))  # coils 3..5
        assert port.read(6) == H("01 01 01 02 D0 49")
        inst.read_termination = None
        inst.timeout = 1000
        inst.write_raw(H("01 05 00 04 00 00 8C 0B"))  # coil 4 off
        assert inst.read_bytes(8) == H("01 05 00 04 00 00 8C 0B")
        link = pool.open(f"socket://127.0.0.1:{server.port}",
                         ModbusRelaySourceSelector.SERIAL_DEFAULTS)
        selector = ModbusRelaySourceSelector("boats", link)
        assert selector.selected_source() is None
        selector.select_source(3)
        assert world.evaporator.selected_boat() == 3
    finally:
        pool.close()
        inst.close()
        rm.close()
        port.close()
        server.stop()
