"""Modbus RTU thermocouple input module: codec, driver ↔ emulator on the evaporator,
and an independent TCP client."""

import time

import pytest
import serial
from conftest import sim_link, visa_socket

from lipon_hw.drivers.modbus_rtu import (
    READ_HOLDING_REGISTERS,
    READ_INPUT_REGISTERS,
    read_request,
    register_values,
    registers_reply,
    signed16,
)
from lipon_hw.drivers.modbus_thermometer import (
    ModbusThermometer,
    temperature_from_word,
    temperature_word,
)
from lipon_hw.errors import InputError, InstrumentError, LinkLost
from lipon_hw.interfaces import Thermometer
from lipon_hw.links import Health, LinkPool
from lipon_hw.sim.emulators.modbus_thermometer import ModbusThermometerEmulator
from lipon_hw.sim.tcp import serve
from lipon_hw.sim.world import World

H = bytes.fromhex

# --- codec --------------------------------------------------------------------------------


def test_read_input_register_frames():
    assert read_request(1, READ_INPUT_REGISTERS, 0, 1) == H("01 04 00 00 00 01 31 CA")
    assert read_request(1, READ_HOLDING_REGISTERS, 0, 1) == H("01 03 00 00 00 01 84 0A")


def test_application_protocol_example_for_function_04():
    """Spec v1.1b3, 6.4: read input register 9 → PDU 04 00 08 00 01, answer 04 02 00 0A."""
    assert read_request(0x11, READ_INPUT_REGISTERS, 8, 1)[1:-2] == H("04 00 08 00 01")
    reply = registers_reply(0x11, READ_INPUT_REGISTERS, [0x000A])
    assert reply[1:-2] == H("04 02 00 0A")
    assert register_values(reply) == [10]


def test_signed_tenths_of_a_degree():
    assert temperature_word(25.0) == 0x00FA
    assert temperature_word(-20.0) == 0xFF38
    assert temperature_from_word(0xFF38) == -20.0
    assert signed16(0x8000) == -32768
    assert registers_reply(2, READ_INPUT_REGISTERS, [0xFF38]) == H("02 04 02 FF 38 BD 12")


# --- driver ↔ emulator on the evaporator --------------------------------------------------


class RecordingThermometer(ModbusThermometerEmulator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = []

    def handle(self, data: bytes) -> bytes:
        self.requests.append(data)
        return super().handle(data)


@pytest.fixture
def module(world):
    return RecordingThermometer("tc", world.evaporator)


@pytest.fixture
def thermometer(module):
    return ModbusThermometer("substrate_tc", sim_link(module))


def test_reads_the_substrate_with_noise(thermometer, module):
    readings = [thermometer.temperature_C() for _ in range(20)]
    assert all(24.5 <= t <= 25.5 for t in readings)
    assert len(set(readings)) > 1
    assert module.requests[0] == H("02 04 00 00 00 01 31 F9")
    assert isinstance(thermometer, Thermometer)


def test_same_seed_same_readings(clock):
    def readings():
        emulator = ModbusThermometerEmulator("tc", World(clock, seed=7).evaporator)
        driver = ModbusThermometer("tc", sim_link(emulator))
        return [driver.temperature_C() for _ in range(5)]

    assert readings() == readings()


def test_follows_substrate_heating_by_a_powered_boat(world, clock, thermometer):
    world.evaporator.select_boat(1)
    world.evaporator.set_supply_output(True)
    world.evaporator.set_supply_current_A(45)
    clock.advance(900)
    reading = thermometer.temperature_C()
    assert reading > 40
    assert reading == pytest.approx(world.evaporator.substrate_temperature_C(), abs=0.55)


def test_identify_and_make_safe(thermometer, module):
    assert thermometer.identify() == "ICP DAS M-7018 thermocouple input, unit 2, channel 0"
    assert module.requests[-1] == H("02 03 01 E2 00 01 25 F3")
    sent = len(module.requests)
    thermometer.make_safe()
    assert len(module.requests) == sent


def test_open_thermocouple_is_instrument_error(module, thermometer):
    module.open_channels.add(0)
    with pytest.raises(InstrumentError, match="with 8000: channel 0 is open"):
        thermometer.temperature_C()


def test_unwired_channel_reads_open(module):
    unwired = ModbusThermometer("spare_tc", sim_link(module), channel=1)
    with pytest.raises(InstrumentError, match=r"02 04 00 01 00 01 60 39 with 8000"):
        unwired.temperature_C()


def test_garbled_reply_is_retried(module, thermometer):
    module.faults.garble_replies = 2
    assert 24.5 <= thermometer.temperature_C() <= 25.5
    assert module.faults.garble_replies == 0
    assert thermometer.link.health is Health.OK


def test_link_down_is_lost(module, thermometer):
    module.faults.link_down = True
    with pytest.raises(LinkLost, match="sim://tc is lost after 3 attempts"):
        thermometer.temperature_C()


def test_channel_beyond_the_module_is_refused(module):
    beyond = ModbusThermometer("tc9", sim_link(module), channel=8)
    with pytest.raises(InstrumentError, match=r"refused 02 04 00 08 00 01 b0 3b with Modbus "
                                              r"exception 02 \(illegal data address\)"):
        beyond.temperature_C()


def test_emulator_exceptions_and_framing(module):
    assert module.handle(H("02 06 00 00 00 01 48 39")) == H("02 86 01 73 A0")
    assert module.handle(H("02 04 00 00 00 00 F0 39")) == H("02 84 03 F3 01")
    assert module.handle(H("01 04 00 00 00 01 31 CA")) == b""  # another unit
    frame = H("02 04 00 01 00 01 60 39")
    assert module.handle(b"\x55" + frame[:4]) == b""  # line noise, then half a frame
    assert module.handle(frame[4:]) == H("02 04 02 80 00 9C F0")


def test_bad_settings_are_input_errors(world, module):
    with pytest.raises(InputError, match="must map channel"):
        ModbusThermometerEmulator("tc", world.evaporator, channels={0: "boat"})
    with pytest.raises(InputError, match="this tool has no thermocouple"):
        ModbusThermometerEmulator("tc", world.sputter)
    with pytest.raises(InputError, match="negative"):
        ModbusThermometer("tc", sim_link(module), channel=-1)
    with pytest.raises(InputError, match="outside 1..247"):
        ModbusThermometer("tc", sim_link(module), unit=248)


# --- an independent client over TCP --------------------------------------------------------


@pytest.fixture
def tcp():
    world = World(time.monotonic, seed=1)
    srv = serve(ModbusThermometerEmulator("tc", world.evaporator))
    yield srv, world
    srv.stop()


def test_pyserial_client(tcp):
    server, _ = tcp
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)
    try:
        port.write(H("02 04 00 00 00 01 31 F9"))  # channel 0: the substrate, ~25 °C
        reply = port.read(7)
        assert reply[:3] == H("02 04 02")
        assert 245 <= int.from_bytes(reply[3:5], "big") <= 255
        port.write(H("02 04 00 01 00 01 60 39"))  # channel 1: nothing wired, burn-out code
        assert port.read(7) == H("02 04 02 80 00 9C F0")
        port.write(H("02 03 01 E2 00 01 25 F3"))  # 40483: module name
        assert port.read(7) == H("02 03 02 70 18 D9 8E")
        port.timeout = 0.2
        port.write(H("02 04 00 00 00 01 31 F8"))  # bad CRC: no reply
        assert port.read(7) == b""
    finally:
        port.close()


def test_pyvisa_client(tcp):
    server, _ = tcp
    with visa_socket(server.port) as inst:
        inst.write_raw(H("02 04 00 08 00 01 B0 3B"))  # channel 8 of 0..7
        assert inst.read_bytes(5) == H("02 84 02 32 C1")
        inst.write_raw(H("02 04 00 01 00 01 60 39"))
        assert inst.read_bytes(7) == H("02 04 02 80 00 9C F0")


def test_driver_over_tcp(tcp):
    server, world = tcp
    pool = LinkPool()
    try:
        link = pool.open(f"socket://127.0.0.1:{server.port}", ModbusThermometer.SERIAL_DEFAULTS)
        reading = ModbusThermometer("substrate_tc", link).temperature_C()
        assert reading == pytest.approx(world.evaporator.substrate_temperature_C(), abs=0.55)
    finally:
        pool.close()
