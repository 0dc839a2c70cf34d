"""INFICON SQC-310: codec against the manual's bytes, driver against the emulator on the
simulated evaporator (the closed rate loop included), raw clients over TCP."""

import json
import time

import numpy as np
import pytest
import serial
from conftest import ManualClock, sim_link, visa_socket

from lipon_hw.drivers.inficon_packet import (
    COMMAND_OFFSET,
    REPLY_OFFSET,
    decode_packet,
    encode_command,
    encode_reply,
)
from lipon_hw.drivers.inficon_sqc310 import (
    I_TERM,
    SQC310,
    get_command,
    parse_pairs,
    set_command,
)
from lipon_hw.errors import InputError, InstrumentError, LinkLost
from lipon_hw.interfaces import Film, ThicknessMonitor
from lipon_hw.links import Link, LinkPool
from lipon_hw.ports import SimPort
from lipon_hw.sim.emulators.inficon_sqc310 import SQC310Emulator
from lipon_hw.sim.tcp import serve
from lipon_hw.sim.world import World


def manual(text: str, *codes: int) -> bytes:
    """A frame as the SQC-310 manual prints it: text, then the CRC bytes in decimal."""
    return text.encode("latin-1") + bytes(codes)


ACK = manual("!$A", 53, 151)
IDLE_K1 = manual("!cA0.00 0.00 100.00 0.000 0.00" + " -1" * 12, 44, 90)
#: (command frame, reply frame) pairs from the manual (PN 074-550-P1C §4.3); replies as an
#: idle controller whose crystal reads 5.95 MHz gives them
MANUAL_EXCHANGES = [
    (manual("!#J", 79, 56), manual("!%A4", 119, 61)),
    (manual("!$K1", 93, 49), IDLE_K1),
    (manual("!$L1", 102, 50), manual("!)A 0.00", 87, 100)),
    (manual("!$M1", 92, 113), manual("!)A 0.00", 87, 100)),
    (manual("!$N1", 93, 81), manual("!*A 0.000", 90, 92)),
    (manual("!$O1", 103, 146), manual("!*A 0.000", 90, 92)),
    (manual("!$P1", 90, 145), manual("!.A5950000.00", 93, 84)),
    (manual("!%PA1", 74, 147), manual("!6A0 5950000.00 95.00", 70, 99)),
    (manual("!$Q1", 104, 82), manual("!+A100.00 ", 67, 127)),
    (manual("!&S? 2", 48, 135), manual("!)A0.00 ", 97, 136)),
    (manual("!(S2 500", 54, 63), ACK),
    (manual("!$S0", 154, 146), ACK),
]


# --- codec ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "frame"), [
    (frame.decode("latin-1")[2:-2], frame) for frame, _ in MANUAL_EXCHANGES] + [
    # a public EPICS driver's frames, run against an SQC-310C
    ("@", b"!#@O7"), ("F1 1,5", b"!(F1 1,5G|"), ("U32", manual("!%U32", 148, 83)),
    ("U33", manual("!%U33", 85, 112)), ("U0", manual("!$U0", 155, 82)),
    ("U1", manual("!$U1", 90, 113)), ("V?", manual("!$V?", 90, 116)),
])
def test_command_frames_match_the_manual(command, frame):
    assert encode_command(command) == frame
    assert decode_packet(frame, COMMAND_OFFSET) == command.encode()


@pytest.mark.parametrize("frame", [reply for _, reply in MANUAL_EXCHANGES] + [
    # K2 of a 4-sensor unit: 93 body bytes, so the length byte is 0x80
    manual("!\x80A0.00" + " 0.00 0.000 5950000.00" * 4, 80, 85)])
def test_reply_frames_match_the_manual(frame):
    body = decode_packet(frame, REPLY_OFFSET)
    assert encode_reply(body[:1], body[1:].decode()) == frame


def test_parameter_commands_follow_the_manual_examples():
    assert get_command("A2", 1, [1, 2, 3]) == "A2 1? 1 2 3"
    assert set_command("A2", 1, {1: 50, 2: 5, 3: 0}) == "A2 1 1,50 2,5 3,0"
    assert get_command("B", None, [3, 4]) == "B? 3 4"
    assert set_command("B", None, {3: 100, 4: 100}) == "B 3,100 4,100"
    assert set_command("F", 1, {2: 893}) == "F1 2,893"
    assert get_command("HA", 1, [1]) == "HA1? 1"
    assert parse_pairs("1,50 2,5 3,0 ") == {1: "50", 2: "5", 3: "0"}
    assert I_TERM.to_wire(0.5) == 5  # "a Set value of 5 for the I Term sets .5"


# --- emulator bytes --------------------------------------------------------------------------
@pytest.fixture
def tool(world):
    return world.evaporator


@pytest.fixture
def emulator(tool):
    return SQC310Emulator("qcm", tool)


@pytest.fixture
def qcm(emulator):
    return SQC310("qcm", sim_link(emulator))


def set_crystal(tool, **fields):
    state = tool.snapshot()
    state.update(fields)
    tool.restore(state)


def test_emulator_answers_the_manual_examples_byte_for_byte(tool, emulator):
    set_crystal(tool, crystal_f0_Hz=5.95e6)
    for sent, expected in MANUAL_EXCHANGES:
        assert emulator.handle(sent) == expected, sent
    assert emulator.handle(b"!#@O7") == encode_reply(b"A", "SQC-310 Ver 6.01")
    assert emulator.handle(encode_command("A2 1? 1 2 3")) == encode_reply(b"A", "1,50 2,5 3,0 ")
    assert emulator.handle(encode_command("B? 3 4")) == encode_reply(b"A", "3,100 4,100 ")


def test_emulator_framing(emulator):
    j = manual("!%A4", 119, 61)
    assert emulator.handle(b"!#J\0\0") == j  # NUL CRC: the instrument skips the check
    assert emulator.handle(b"!#JO9") == encode_reply(b"F")  # bad CRC: status F
    assert emulator.handle(b"noise") == b""
    assert emulator.handle(b"!%L1") == b""  # half a packet ...
    assert emulator.handle(manual("!#J", 79, 56)) == j  # ... abandoned at the next '!'
    assert b"".join(emulator.handle(bytes([b])) for b in manual("!#J", 79, 56)) == j
    assert emulator.handle(encode_command("X1")) == encode_reply(b"C")
    assert emulator.handle(encode_command("A2 99? 1")) == encode_reply(b"D")


# --- driver <-> emulator ---------------------------------------------------------------------
def pump(tool, clock):
    tool.set_pumping(True)
    clock.advance(5 * 3600)


CU = (1, "Cu", 8.93, 0.437)
LI = (3, "Li", 0.53, 5.9)


def configure(qcm, tool, boat, name, density, z, rate_A_s, final_nm=100.0):
    """Tooling as calibrated; preconditioning near the deposition power (the manual's
    PWR_DR); one PID tuning for both sources (boat time constants 50-200 s)."""
    tool.select_boat(boat)
    qcm.set_film(Film(name, density, z, tool.true_tooling_pct))
    soak = {"Cu": (35, 10, 60, 20.7, 5, 60), "Li": (22, 10, 40, 14.5, 5, 30)}[name]
    qcm.set_preconditioning(*soak)
    qcm.set_rate_control(rate_A_s, final_nm, p_gain=8, i_time_s=40, d_time_s=0,
                         max_power_pct=30, shutter_delay_s=20, capture_pct=5)


def advance_until(qcm, clock, phase, limit_s=2000):
    for _ in range(limit_s):
        if qcm.phase() == phase:
            return clock.t
        clock.advance(1.0)
    raise AssertionError(f"{qcm.name} never reached {phase} (is {qcm.run_state().name})")


def grown_nm(world, material, since_s):
    """Film grown on the substrate since `since_s`; cold boats add ~1e-19 nm layers of their
    own material every step, so the layers of `material` are summed."""
    return sum(layer["thickness_nm"] for layer in world.film_stack()
               if layer["material"] == material and layer["t_start_s"] >= since_s - 1)


def test_driver_is_a_thickness_monitor_and_identifies(qcm, emulator):
    assert isinstance(qcm, ThicknessMonitor)
    assert qcm.identify() == "SQC-310 Ver 6.01"
    assert qcm.phase() == "idle"
    assert qcm.frequency_Hz() == pytest.approx(6.0e6, rel=1e-3)
    assert 90 < qcm.crystal_life_pct() <= 100
    assert not qcm.crystal_failed()


def test_set_film_writes_material_and_film(qcm, emulator):
    qcm.set_film(Film("LiPON cap", density_g_cm3=2.5, z_ratio=1.0, tooling_pct=125.4))
    assert emulator.memory.materials[1] == {1: "LiPON cap", 2: 250, 3: 1000}
    assert emulator.memory.films[1]["A1"][1] == "LiPON cap"
    assert qcm.get_parameters("A2", 1, [4, 6]) == {4: "1", 6: "125"}
    with pytest.raises(InputError, match="density_g_cm3"):
        qcm.set_film(Film("AIR", density_g_cm3=0.1, z_ratio=1.0))


def test_rate_control_parameters_are_scaled_integers(qcm, emulator):
    qcm.set_rate_control(1.5, 100, p_gain=8, i_time_s=40.5, d_time_s=0.5, max_power_pct=30,
                         shutter_delay_s=20, capture_pct=2.5)
    assert qcm.get_parameters("A2", 1, [1, 2, 3]) == {1: "8", 2: "405", 3: "5"}
    assert qcm.get_parameters("A4", 1, [1, 2]) == {1: "20", 2: "25"}
    assert emulator.memory.layers[1][1] == 150  # 1.50 Å/s
    assert emulator.memory.layers[1][2] == 1000  # 100 nm = 1.000 kÅ
    assert emulator.memory.layers[1][6] == 300  # max power 30.0 %


def test_a_layer_drives_the_supply_through_its_phases(qcm, tool, clock):
    pump(tool, clock)
    qcm.set_preconditioning(10, 10, 10, 5, 5, 10)
    qcm.set_rate_control(1.0, 100, 8, 40, 0, 30)
    qcm.start_layer()
    clock.advance(5)
    assert qcm.phase() == "ramp"
    assert qcm.output_pct() == pytest.approx(5.0, abs=0.1)
    assert tool.supply_readings()["current_set_A"] == pytest.approx(10.0, abs=0.2)
    assert tool.supply_readings()["output_on"]
    clock.advance(10)
    assert qcm.run_state().name == "Soak 1"
    assert qcm.output_pct() == pytest.approx(10.0)
    assert tool.boat_temperature_K(1) > 303  # 20 A into a cold boat
    with pytest.raises(InstrumentError, match="wrong mode") as err:
        qcm.start_layer()
    assert repr(encode_command("U2")) in str(err.value)
    qcm.stop_layer()
    assert qcm.phase() == "done"
    assert qcm.output_pct() == 0.0
    assert tool.supply_readings()["current_set_A"] == 0.0


def test_hardware_loop_holds_the_rate_and_ends_at_the_final_thickness(qcm, world, tool, clock):
    """Cu at 1 Å/s, then Li at 3.5 Å/s, each to 100 nm on the substrate; the rate is sampled
    every second for 5 min of deposit (Li reaches 100 nm sooner, after ~290 s)."""
    pump(tool, clock)
    for (boat, name, density, z), rate in ((CU, 1.0), (LI, 3.5)):
        configure(qcm, tool, boat, name, density, z, rate)
        qcm.start_layer()
        advance_until(qcm, clock, "shutter-delay")
        assert not tool.shutter_open()
        opened = advance_until(qcm, clock, "deposit")
        assert tool.shutter_open()
        rates = []
        while qcm.phase() == "deposit" and clock.t - opened < 300:
            rates.append(qcm.rate_A_s())
            clock.advance(1.0)
        error = np.array(rates) / rate - 1
        assert abs(error.mean()) < 0.05, name
        assert np.percentile(np.abs(error), 95) < 0.05, name
        assert error[:20].max() < 0.10, name  # overshoot once the shutter opens
        advance_until(qcm, clock, "done")
        assert not tool.shutter_open()
        assert qcm.output_pct() == 0.0
        assert grown_nm(world, name, opened) == pytest.approx(100.0, rel=0.02), name
        assert qcm.thickness_nm() == pytest.approx(100.0, abs=1.0)


def test_crystal_failure_stops_the_layer(qcm, tool, clock):
    pump(tool, clock)
    configure(qcm, tool, *CU, rate_A_s=1.0)
    qcm.start_layer()
    advance_until(qcm, clock, "deposit")
    clock.advance(30)
    held = qcm.thickness_nm()
    tool.fail_crystal()
    clock.advance(1)
    assert qcm.phase() == "crystal-fail"
    assert qcm.crystal_failed()
    assert qcm.output_pct() == 0.0
    assert not tool.shutter_open()
    assert qcm.thickness_nm() == pytest.approx(held, abs=0.1)
    with pytest.raises(InstrumentError, match="qcm has a failed crystal on sensor 1"):
        qcm.rate_A_s()


def test_make_safe_stops_the_process_and_closes_the_shutter(qcm, emulator, tool, clock):
    pump(tool, clock)
    configure(qcm, tool, *CU, rate_A_s=1.0)
    qcm.set_relay(3, True)
    qcm.start_layer()
    advance_until(qcm, clock, "deposit")
    qcm.make_safe()
    assert qcm.phase() == "idle"
    assert qcm.output_pct() == 0.0
    assert tool.supply_readings()["current_set_A"] == 0.0
    assert not tool.shutter_open()
    assert not emulator.relays[3]


def test_zero_restarts_thickness(qcm, tool, clock):
    pump(tool, clock)
    configure(qcm, tool, *CU, rate_A_s=1.0, final_nm=0)
    qcm.start_layer()
    advance_until(qcm, clock, "deposit")
    clock.advance(60)
    assert qcm.thickness_nm() == pytest.approx(6.0, rel=0.1)
    qcm.zero()
    assert qcm.thickness_nm() == pytest.approx(0.0, abs=0.05)


def test_relays_are_set_remotely_except_the_source_shutter(qcm, emulator):
    qcm.set_relay(2, True)
    assert emulator.relays[2] and 2 in emulator.locked
    assert qcm.get_parameters("GC", 2, [1]) == {1: "1"}
    qcm.release_relay(2)
    assert not emulator.relays[2] and 2 not in emulator.locked
    with pytest.raises(InstrumentError, match="problem with the data") as err:
        qcm.set_relay(1, True)  # source 1's shutter relay belongs to the controller
    assert repr(encode_command("GE1 1")) in str(err.value)


def test_manual_power_between_layers(qcm, tool, clock):
    qcm.query("S1 150")
    assert qcm.phase() == "manual"
    assert tool.supply_readings()["current_set_A"] == pytest.approx(30.0)
    qcm.query("S0")
    assert qcm.phase() == "idle"
    assert tool.supply_readings()["current_set_A"] == 0.0


def test_garbled_reply_is_retried(qcm, emulator):
    emulator.faults.garble_replies = 1
    assert qcm.identify() == "SQC-310 Ver 6.01"
    assert emulator.faults.garble_replies == 0


class CorruptFirstRequest:
    """The line between host and controller flips a bit of the first packet."""

    def __init__(self, emulator):
        self.emulator, self.corrupted = emulator, False

    def handle(self, data: bytes) -> bytes:
        if not self.corrupted:
            self.corrupted, data = True, data[:-1] + bytes([data[-1] ^ 1])
        return self.emulator.handle(data)

    def reset_connection(self) -> None:
        self.emulator.reset_connection()


def test_crc_error_reported_by_the_controller_is_retried(emulator):
    qcm = SQC310("qcm", Link("sim://qcm", SimPort(CorruptFirstRequest(emulator))))
    assert qcm.identify() == "SQC-310 Ver 6.01"
    assert qcm.link.health.value == "ok"


def test_dropped_link_is_lost_with_a_clear_message(qcm, emulator):
    emulator.faults.link_down = True
    with pytest.raises(LinkLost, match=r"sim://qcm is lost after 3 attempts"):
        qcm.identify()


def test_checkpoint_resumes_the_layer_in_a_new_process(qcm, world, tool, clock, emulator):
    pump(tool, clock)
    configure(qcm, tool, *CU, rate_A_s=1.0, final_nm=40)
    qcm.start_layer()
    opened = advance_until(qcm, clock, "deposit")
    clock.advance(150)
    world_state = json.loads(json.dumps(world.snapshot()))
    qcm_state = json.loads(json.dumps(emulator.snapshot()))

    clock2 = ManualClock(clock.t)
    world2 = World(clock2, seed=7)
    world2.restore(world_state)
    emulator2 = SQC310Emulator("qcm", world2.evaporator)
    emulator2.restore(qcm_state)
    qcm2 = SQC310("qcm", sim_link(emulator2))
    assert qcm2.phase() == "deposit"
    assert qcm2.thickness_nm() == pytest.approx(15.0, rel=0.05)
    advance_until(qcm2, clock2, "done")
    assert grown_nm(world2, "Cu", opened) == pytest.approx(40.0, rel=0.02)


# --- an independent client over TCP ---------------------------------------------------------
CHANNELS_J = MANUAL_EXCHANGES[0]
DEVIATION = MANUAL_EXCHANGES[8]
POWER_2 = MANUAL_EXCHANGES[9]
RATE_1 = MANUAL_EXCHANGES[2]
THICKNESS_1 = MANUAL_EXCHANGES[4]


@pytest.fixture
def server():
    world = World(time.monotonic, seed=1)
    running = serve(SQC310Emulator("qcm", world.evaporator))
    yield running
    running.stop()


def test_pyserial_client_speaks_the_manual_bytes(server):
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)
    try:
        for sent, expected in (CHANNELS_J, DEVIATION, POWER_2, (b"!$K1]1", IDLE_K1),
                               (b"!$S0\x9a\x92", b"!$A5\x97")):
            port.write(sent)
            assert port.read(len(expected)) == expected
    finally:
        port.close()


def test_pyvisa_client_speaks_the_manual_bytes(server):
    with visa_socket(server.port) as inst:
        for sent, expected in (CHANNELS_J, RATE_1, THICKNESS_1):
            inst.write_raw(sent)
            assert inst.read_bytes(len(expected), break_on_termchar=False) == expected


def test_driver_over_a_socket_link(server):
    pool = LinkPool()
    link = pool.open(f"socket://127.0.0.1:{server.port}", SQC310.SERIAL_DEFAULTS)
    try:
        qcm = SQC310("qcm", link)
        assert qcm.identify() == "SQC-310 Ver 6.01"
        assert qcm.frequency_Hz() == pytest.approx(6.0e6, rel=1e-3)
        assert qcm.phase() == "idle"
    finally:
        pool.close()
