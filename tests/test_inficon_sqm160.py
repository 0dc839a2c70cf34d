"""INFICON SQM-160: codec against the manual's bytes, driver against the emulator, raw clients."""

import json
import time

import pytest
import serial
from conftest import sim_link, visa_socket
from hypothesis import given
from hypothesis import strategies as st

from lipon_hw.drivers.inficon_packet import (
    COMMAND_OFFSET,
    REPLY_OFFSET,
    decode_packet,
    encode_command,
    encode_reply,
    inficon_crc,
)
from lipon_hw.drivers.inficon_sqm160 import (
    SQM160,
    UNITS_REREAD_EVERY,
    FilmRecord,
    SystemRecord1,
)
from lipon_hw.errors import FrameError, InputError, InstrumentError, LinkLost
from lipon_hw.interfaces import Film, ReadsTogether, ThicknessMonitor
from lipon_hw.links import LinkPool
from lipon_hw.sim.emulators.inficon_sensor import RATE_NOISE_A_S
from lipon_hw.sim.emulators.inficon_sqm160 import SQM160Emulator, parse_film_setting
from lipon_hw.sim.tcp import serve
from lipon_hw.sim.world import World

LIPON = Film("LiPON", density_g_cm3=2.5, z_ratio=1.0, tooling_pct=125)


def manual(text: str, *codes: int) -> bytes:
    """A frame as the SQC-310 manual prints it: text, then the CRC bytes in decimal."""
    return text.encode("ascii") + bytes(codes)


# --- codec ---------------------------------------------------------------------------------
def test_crc_matches_the_manual_checksum_examples():
    assert inficon_crc(b"#@") == b"O7"
    assert inficon_crc(b"$C?") == b"g/"


def bitwise_crc(data: bytes) -> bytes:
    """The manual's CRC, bit by bit as it describes it (the driver's is table-driven)."""
    crc = 0x3FFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            carry = crc & 1
            crc >>= 1
            if carry:
                crc ^= 0x2001
        crc &= 0x3FFF
    return bytes(((crc & 0x7F) + 34, ((crc >> 7) & 0x7F) + 34))


@given(st.binary(max_size=300))
def test_table_crc_equals_the_bitwise_crc(data):
    assert inficon_crc(data) == bitwise_crc(data)


@pytest.mark.parametrize(("command", "frame"), [
    # protocols.md §1.1 table
    ("@", b"!#@O7"), ("J", b"!#JO8"), ("M", b"!#M\x8e\x8a"), ("O", b"!#O\x8f9"),
    ("L1?", b"!%L1?\x85{"), ("P1", b"!$P1Z\x91"), ("S", b"!#S\x8e\x8f"), ("T", b"!#TO5"),
    ("W", b"!#W\x8f5"), ("U1", b"!$U1Zq"), ("U0", b"!$U0\x9bR"),
    # SQC-310 manual §4.3 examples (same framing, §1.2)
    ("J", manual("!#J", 79, 56)), ("M1", manual("!$M1", 92, 113)),
    ("N1", manual("!$N1", 93, 81)), ("O1", manual("!$O1", 103, 146)),
    ("K1", manual("!$K1", 93, 49)), ("K2", manual("!$K2", 157, 49)),
    ("L1", manual("!$L1", 102, 50)), ("P1", manual("!$P1", 90, 145)),
    ("PA1", manual("!%PA1", 74, 147)), ("Q1", manual("!$Q1", 104, 82)),
])
def test_command_frames_match_the_reference(command, frame):
    assert encode_command(command) == frame
    assert decode_packet(frame, COMMAND_OFFSET) == command.encode()


@pytest.mark.parametrize(("data", "frame"), [
    ("MON Ver 4.13", b"!0AMON Ver 4.13Uw"), ("6", b"!%A6v\x86"),
    ("5875830.230", b"!/A5875830.230:X"), ("", b"!$A5\x97"),
    ("4", b"!%A4w="),
    (" 0.00", manual("!)A 0.00", 87, 100)), (" 0.000", manual("!*A 0.000", 90, 92)),
    ("5950000.00", manual("!.A5950000.00", 93, 84)),
    ("0 5950000.00 95.00", manual("!6A0 5950000.00 95.00", 70, 99)),
    ("100.00 ", manual("!+A100.00 ", 67, 127)),
])
def test_reply_frames_match_the_reference(data, frame):
    assert encode_reply(b"A", data) == frame
    assert decode_packet(frame, REPLY_OFFSET) == b"A" + data.encode()


@pytest.mark.parametrize(("frame", "problem"), [
    (b"!0AMON Ver 4.13Uv", "CRC"), (b"!1AMON Ver 4.13Uw", "length"), (b"?#@O7", "not an"),
])
def test_decode_rejects_bad_frames_naming_source_and_bytes(frame, problem):
    offset = REPLY_OFFSET if b"MON" in frame else COMMAND_OFFSET
    with pytest.raises(FrameError, match=problem) as err:
        decode_packet(frame, offset, "qcm")
    assert str(err.value).startswith(f"qcm sent {frame!r}")


def test_commands_cannot_carry_the_sync_character():
    with pytest.raises(InputError, match="'!'"):
        encode_command("A1NAME!")


def test_film_record_round_trips_and_splits_film_number_from_name():
    record = FilmRecord("2ND FILM", 2.5, 125, 1.0, 0.5, 0.0, 0, 3)
    assert FilmRecord.parse(record.format()) == record
    assert parse_film_setting("1" + record.format()) == (1, record)
    assert parse_film_setting("12" + record.format()) == (12, record)


# --- driver <-> emulator ---------------------------------------------------------------------
@pytest.fixture
def tool(world):
    return world.sputter


@pytest.fixture
def emulator(tool):
    return SQM160Emulator("qcm", tool)


@pytest.fixture
def qcm(emulator):
    return SQM160("qcm", sim_link(emulator))


def deposit(tool, clock, seconds=3600.0):
    """Pump down, N2 at 20 sccm, 50 W load-regulated RF: the reference LiPON process."""
    tool.set_pumping(True)
    clock.advance(3 * 3600)
    tool.set_n2_flow_sccm(20)
    clock.advance(30)
    tool.set_rf_regulation("load")
    tool.set_rf_setpoint_W(50)
    tool.set_rf_output(True)
    clock.advance(seconds)


def fail_crystal(tool):
    state = tool.snapshot()
    state["crystal_failed"] = True
    tool.restore(state)


def test_driver_is_a_thickness_monitor_and_identifies(qcm):
    assert isinstance(qcm, ThicknessMonitor)
    assert qcm.identify() == "MON Ver 4.13"
    qcm.make_safe()


def test_set_film_writes_the_slot_and_selects_it(tool):
    emulator = SQM160Emulator("qcm", tool, channels=6)
    qcm = SQM160("qcm", sim_link(emulator), sensor=2, film=7)
    qcm.set_film(LIPON)
    assert emulator.active_film == 7
    assert emulator.films[7] == FilmRecord("LIPON", 2.5, 125, 1.0, sensor_mask=0b11)
    assert qcm.film_parameters().density_g_cm3 == 2.5


def test_an_hour_of_lipon_reads_166_nm(qcm, tool, clock):
    qcm.set_film(LIPON)
    f_start = qcm.frequency_Hz()
    deposit(tool, clock)
    assert qcm.thickness_nm() == pytest.approx(0.46 * 3600 / 10, rel=0.03)
    assert qcm.rate_A_s() == pytest.approx(0.46, abs=0.2)
    assert qcm.frequency_Hz() < f_start
    assert 0 < qcm.crystal_life_pct() <= 100


def test_thickness_follows_the_configured_density(qcm, tool, clock):
    qcm.set_film(Film("DENSE", density_g_cm3=5.0, z_ratio=1.0, tooling_pct=125))
    deposit(tool, clock)
    assert qcm.thickness_nm() == pytest.approx(0.46 * 3600 / 10 / 2, rel=0.03)


def test_zero_restarts_thickness(qcm, tool, clock):
    qcm.set_film(LIPON)
    deposit(tool, clock)
    qcm.zero()
    assert qcm.thickness_nm() == pytest.approx(0.0, abs=0.1)
    clock.advance(600)
    assert qcm.thickness_nm() == pytest.approx(0.46 * 600 / 10, rel=0.03)


def test_nanometre_display_mode_is_converted(qcm, tool, clock):
    qcm.set_film(LIPON)
    deposit(tool, clock)
    in_kA = qcm.thickness_nm()
    qcm.query("B 0.25 0 1 0 8 100 100 100 100 100 100")
    assert qcm.thickness_nm() == pytest.approx(in_kA, abs=1.0)
    assert qcm.rate_A_s() == pytest.approx(0.46, abs=0.3)


def test_display_mode_without_thickness_is_refused(qcm, emulator):
    emulator.system1 = SystemRecord1(display_mode=2)  # set from the front panel
    with pytest.raises(InstrumentError, match="display mode 2 reports no thickness"):
        qcm.thickness_nm()
    with pytest.raises(InstrumentError, match="problem with the data"):
        qcm.query("B 0.25 0 2 0 8 100 100 100 100 100 100")


def count_unit_reads(emulator) -> list[str]:
    """The 'B' commands the emulator is sent from now on (its display-unit reads)."""
    sent, handler = [], emulator.handlers["B"]

    def counted(arg: str) -> str:
        sent.append(arg)
        return handler(arg)

    emulator.handlers["B"] = counted
    return sent


def test_display_units_are_read_once_then_again_after_a_write(qcm, emulator, tool, clock):
    qcm.set_film(LIPON)
    deposit(tool, clock, seconds=600)
    reads = count_unit_reads(emulator)
    for _ in range(UNITS_REREAD_EVERY // 2):
        qcm.rate_A_s(), qcm.thickness_nm()
    assert reads == ["?"]
    qcm.set_film(LIPON)  # a film record written and selected: units asked again
    qcm.thickness_nm()
    qcm.zero()
    qcm.thickness_nm()
    assert reads == ["?", "?", "?"]


def test_front_panel_unit_change_is_seen_within_the_reread_period(qcm, emulator, tool, clock):
    qcm.set_film(LIPON)
    deposit(tool, clock)
    in_kA = qcm.thickness_nm()
    emulator.system1 = SystemRecord1(display_mode=1)  # nm, set from the front panel
    values = [qcm.thickness_nm() for _ in range(UNITS_REREAD_EVERY + 1)]
    assert values[-1] == pytest.approx(in_kA, abs=1.0)


def test_a_failed_attempt_on_the_link_forgets_the_display_units(qcm, emulator, tool, clock):
    qcm.set_film(LIPON)
    deposit(tool, clock, seconds=600)
    qcm.thickness_nm()
    reads = count_unit_reads(emulator)
    emulator.faults.garble_replies = 1  # the instrument may have restarted meanwhile
    qcm.frequency_Hz()
    qcm.thickness_nm()
    assert reads == ["?"]


def test_crystal_failure_is_reported(qcm, tool, clock):
    qcm.set_film(LIPON)
    deposit(tool, clock, seconds=600)
    before = qcm.thickness_nm()
    fail_crystal(tool)
    clock.advance(600)
    assert qcm.crystal_failed()
    assert qcm.frequency_Hz() == 0.0
    assert qcm.crystal_life_pct() == 0.0
    assert qcm.thickness_nm() == before
    with pytest.raises(InstrumentError, match="qcm has a failed crystal on sensor 1"):
        qcm.rate_A_s()


def test_garbled_reply_is_retried(qcm, emulator):
    emulator.faults.garble_replies = 1
    assert qcm.identify() == "MON Ver 4.13"
    assert emulator.faults.garble_replies == 0


def test_dropped_link_is_lost_with_a_clear_message(qcm, emulator):
    emulator.faults.link_down = True
    with pytest.raises(LinkLost, match=r"sim://qcm is lost after 3 attempts"):
        qcm.identify()


def test_invalid_command_is_refused(qcm):
    with pytest.raises(InstrumentError, match="invalid command") as err:
        qcm.query("X1")  # U1 (the shutter relay) is a command since the manual walk
    assert repr(b"!$X1i2") in str(err.value)


def test_out_of_range_film_data_is_refused(qcm):
    with pytest.raises(InstrumentError, match="problem with the data"):
        qcm.set_film(Film("AIR", density_g_cm3=0.1, z_ratio=1.0))


def test_missing_sensor_is_refused(emulator):
    with pytest.raises(InstrumentError, match="qcm refused"):
        SQM160("qcm", sim_link(emulator), sensor=5).rate_A_s()


def test_film_memory_survives_a_new_connection(qcm, emulator):
    qcm.set_film(LIPON)
    again = SQM160("qcm", sim_link(emulator))
    assert again.film_parameters().name == "LIPON"


def test_snapshot_restores_zero_and_films(qcm, emulator, tool, clock):
    qcm.set_film(LIPON)
    deposit(tool, clock, seconds=1800)
    reading = qcm.thickness_nm()
    state = json.loads(json.dumps(emulator.snapshot()))
    fresh = SQM160Emulator("qcm", tool)
    fresh.restore(state)
    assert SQM160("qcm", sim_link(fresh)).thickness_nm() == reading
    assert fresh.films[1].name == "LIPON"


def test_emulator_framing_follows_the_manual(emulator):
    ok = b"!0AMON Ver 4.13Uw"
    assert emulator.handle(b"!#@\0\0") == ok  # NUL CRC: the instrument skips the check
    assert emulator.handle(b"!#@O8") == b""  # bad CRC: dropped
    assert emulator.handle(b"noise") == b""
    assert emulator.handle(b"!%L1") == b""  # half a packet ...
    assert emulator.handle(b"!#@O7") == ok  # ... abandoned at the next '!'
    assert b"".join(emulator.handle(bytes([b])) for b in b"!#@O7") == ok


def test_other_commands_answer(qcm):
    assert qcm.query("Y") == "1"
    assert qcm.query("Y") == "0"
    assert qcm.query("J") == "2"
    assert qcm.query("W").split()[0] == "00.00"
    assert float(qcm.query("O")) == pytest.approx(0.0)
    qcm.query("Z")


# --- an independent client over TCP ---------------------------------------------------------
IDENTIFY = (b"!#@O7", b"!0AMON Ver 4.13Uw")
CHANNELS = (b"!#JO8", b"!%A6v\x86")
ZERO = (b"!#S\x8e\x8f", b"!$A5\x97")


@pytest.fixture
def server():
    world = World(time.monotonic, seed=1)
    running = serve(SQM160Emulator("qcm", world.sputter, channels=6))
    yield running
    running.stop()


def test_pyserial_client_speaks_the_manual_bytes(server):
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)
    try:
        for sent, expected in (IDENTIFY, CHANNELS, ZERO):
            port.write(sent)
            assert port.read(len(expected)) == expected
        port.write(b"!$P1Z\x91")
        reply = port.read(2)
        reply += port.read(reply[1] - 35 + 2)
        assert reply[2:3] == b"A"
        assert float(reply[3:-2]) == pytest.approx(6.0e6, rel=1e-2)
    finally:
        port.close()


def test_pyvisa_client_speaks_the_manual_bytes(server):
    with visa_socket(server.port) as inst:
        for sent, expected in (IDENTIFY, CHANNELS):
            inst.write_raw(sent)
            assert inst.read_bytes(len(expected), break_on_termchar=False) == expected


def test_driver_over_a_socket_link(server):
    pool = LinkPool()
    link = pool.open(f"socket://127.0.0.1:{server.port}", SQM160.SERIAL_DEFAULTS)
    try:
        qcm = SQM160("qcm", link)
        assert qcm.identify() == "MON Ver 4.13"
        assert qcm.frequency_Hz() == pytest.approx(6.0e6, rel=1e-2)
    finally:
        pool.close()


# --- W, "all readings": rate, thickness and frequency in one exchange -------------------------
ENGINE_ASKS = ("rate_A_s", "thickness_nm", "frequency_Hz", "crystal_life_pct")


def commands_sent(emulator) -> list[str]:
    """Every command the emulator is sent from now on, as its code and argument."""
    sent = []
    for code, handler in list(emulator.handlers.items()):
        def counted(arg, code=code, handler=handler):
            sent.append(code + arg)
            return handler(arg)
        emulator.handlers[code] = counted
    return sent


def test_one_W_and_one_R_read_what_four_queries_read(qcm, emulator, tool, clock):
    assert isinstance(qcm, ReadsTogether)
    qcm.set_film(LIPON)
    deposit(tool, clock, 1800)
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
    deposit(tool, clock, 600)
    held = qcm.thickness_nm()
    fail_crystal(tool)
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
    deposit(tool, clock, 600)
    qcm.read_together(ENGINE_ASKS)
    sent = commands_sent(emulator)
    for _ in range(UNITS_REREAD_EVERY // 2):  # each W is a rate and a thickness reading
        qcm.read_together(ENGINE_ASKS)
    assert sent.count("B?") == 1


def test_an_instrument_that_refuses_W_is_read_quantity_by_quantity(qcm, emulator, tool,
                                                                  clock):
    del emulator.handlers["W"]  # an older firmware: 'W' is answered as an invalid command
    qcm.set_film(LIPON)
    deposit(tool, clock, 600)
    qcm.thickness_nm()
    sent = commands_sent(emulator)
    first = qcm.read_together(ENGINE_ASKS)
    again = qcm.read_together(ENGINE_ASKS)
    assert sent == ["L1", "N1", "P1", "R1"] * 2  # the refused W itself reaches no handler
    assert first["thickness_nm"] == again["thickness_nm"] > 0
    assert all(isinstance(v, float) for v in (*first.values(), *again.values()))
