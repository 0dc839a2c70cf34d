"""MKS 937B gauge controller: codec, driver ↔ emulator, and an independent TCP client."""

import contextlib
import re
import socket
import time

import pytest
import serial
from conftest import sim_link, visa_socket

from lipon_hw.drivers.mks937b import (
    MKS937B,
    decode_reply,
    decode_request,
    encode_query,
    encode_set,
    format_pressure,
    parse_number,
)
from lipon_hw.errors import InstrumentError, LinkLost
from lipon_hw.links import Health, LinkPool
from lipon_hw.sim import tcp
from lipon_hw.sim.emulators.mks937b import MKS937BEmulator
from lipon_hw.sim.tcp import serve
from lipon_hw.sim.world import World

# --- codec: manual (§9.2) and pymeasure test examples -----------------------------------


def test_manual_pressure_query_and_reply():
    assert encode_query(3, "PR1") == b"@003PR1?;FF"
    reply = decode_reply(b"@003ACK7.602E+2;FF")
    assert (reply.address, reply.ack, reply.body) == (3, True, "7.602E+2")
    assert parse_number(reply.body) == pytest.approx(760.2)


def test_manual_set_command():
    assert encode_set(1, "BR", "19200") == b"@001BR!19200;FF"
    assert decode_reply(b"@001ACK19200;FF").body == "19200"


def test_pymeasure_examples():
    assert encode_query(253, "PR1") == b"@253PR1?;FF"
    assert parse_number(decode_reply(b"@253ACK1.10e-9;FF").body) == pytest.approx(1.1e-9)
    assert encode_set(253, "U", "MICRON") == b"@253U!MICRON;FF"
    assert decode_reply(b"@253ACKTORR;FF").body == "TORR"


def test_nak_reply():
    reply = decode_reply(b"@253NAK160;FF")
    assert (reply.ack, reply.body) == (False, "160")


@pytest.mark.parametrize("frame", [b"@253ACK1.10E-9", b"253ACK1;FF", b"@25ACK1;FF",
                                   b"@253NAKxyz;FF", b"@253ACK1\x00;FF"])
def test_malformed_replies_are_rejected(frame):
    with pytest.raises(ValueError):
        decode_reply(frame)


def test_request_decoding():
    assert decode_request(b"@253PR1?;FF").command == "PR1"
    assert decode_request(b"@253PR1?;FF").value is None
    assert decode_request(b"@254CP1!OFF;FF").value == "OFF"
    with pytest.raises(ValueError):
        decode_request(b"@253PR1?x;FF")


@pytest.mark.parametrize("value, text", [(760.2, "7.602E+2"), (1.1e-9, "1.100E-9"),
                                         (9.9996, "1.000E+1"), (0.015, "1.500E-2")])
def test_pressure_format(value, text):
    assert format_pressure(value) == text


# --- driver ↔ emulator ------------------------------------------------------------------


@pytest.fixture
def gauges(world):
    return MKS937BEmulator("gauges", world.sputter, serial="1103937001")


def test_both_channels_follow_the_chamber(world, clock, gauges):
    link = sim_link(gauges)
    chamber = MKS937B("chamber", link, channel=1)
    process = MKS937B("process", link, channel=3, lower_limit_torr=1e-5)
    assert chamber.pressure_torr() == pytest.approx(760 * gauges.calibration, rel=0.05)
    assert process.pressure_torr() == pytest.approx(0.1)  # clipped at full scale
    world.sputter.set_pumping(True)
    clock.advance(3 * 3600)
    true = world.sputter.pressure_torr()
    assert chamber.pressure_torr() == pytest.approx(true * gauges.calibration, rel=0.05)
    assert process.pressure_torr() == 1e-5  # "LO": below the manometer's range
    world.sputter.set_n2_flow_sccm(20)
    clock.advance(60)
    assert process.pressure_torr() == pytest.approx(world.sputter.pressure_torr(), rel=0.003)


def test_calibration_factor_is_seeded_and_within_15_percent(clock):
    factors = [MKS937BEmulator("g", World(clock, seed=7).sputter).calibration for _ in range(2)]
    assert factors[0] == factors[1]
    assert 0.85 <= factors[0] <= 1.15


def test_driver_switches_a_front_panel_unit_back_to_torr(world, gauges):
    gauges.unit = "MBAR"
    gauge = MKS937B("chamber", sim_link(gauges))
    assert gauge.pressure_torr() == pytest.approx(760 * gauges.calibration, rel=0.05)
    assert gauges.unit == "TORR"


def test_identify(gauges):
    assert MKS937B("g", sim_link(gauges)).identify() == (
        "MKS 937B gauge controller, serial 1103937001, channel 1")


def test_garbled_reply_is_retried(gauges):
    link = sim_link(gauges)
    gauge = MKS937B("chamber", link)
    gauge.pressure_torr()
    gauges.faults.garble_replies = 1
    assert gauge.pressure_torr() > 100
    assert gauges.faults.garble_replies == 0
    assert link.health is Health.OK


def test_link_down_is_lost(gauges):
    gauges.faults.link_down = True
    with pytest.raises(LinkLost, match="sim://gauges is lost after 3 attempts"):
        MKS937B("chamber", sim_link(gauges)).pressure_torr()


def test_invalid_channel_is_refused_with_nak_160(gauges):
    with pytest.raises(InstrumentError, match=r"chamber refused b'@253PR7\?;FF' with NAK160"):
        MKS937B("chamber", sim_link(gauges), channel=7).pressure_torr()


def test_channel_switched_off_reads_off(gauges):
    assert gauges.handle(b"@253CP1!OFF;FF") == b"@253ACKOFF;FF"
    with pytest.raises(InstrumentError, match="answered 'OFF'"):
        MKS937B("chamber", sim_link(gauges)).pressure_torr()


def test_empty_channel_reads_misconn(gauges):
    with pytest.raises(InstrumentError, match="'MISCONN'"):
        MKS937B("chamber", sim_link(gauges), channel=4).pressure_torr()


def test_atm_reads_as_760_torr(gauges):
    gauges.calibration = 1.5  # a gauge so far off that it reads above its 1000 Torr range
    assert gauges.handle(b"@253PR1?;FF") == b"@253ACKATM;FF"
    assert MKS937B("chamber", sim_link(gauges)).pressure_torr() == 760.0


def test_emulator_framing(gauges):
    assert gauges.handle(b"junk@253U") == b""
    assert gauges.handle(b"?;FF") == b"@253ACKTORR;FF"
    assert gauges.handle(b"@001U?;FF") == b""  # another controller on the bus
    assert gauges.handle(b"@254U?;FF") == b"@253ACKTORR;FF"  # broadcast
    assert gauges.handle(b"@253U!FURLONG;FF") == b"@253NAK169;FF"


def test_snapshot_restores_unit_and_power(world, gauges):
    gauges.handle(b"@253U!PASCAL;FF")
    gauges.handle(b"@253CP3!OFF;FF")
    fresh = MKS937BEmulator("gauges", world.sputter)
    fresh.restore(gauges.snapshot())
    assert fresh.handle(b"@253U?;FF") == b"@253ACKPASCAL;FF"
    assert fresh.handle(b"@253PR3?;FF") == b"@253ACKOFF;FF"


# --- an independent client over TCP -----------------------------------------------------

PRESSURE_REPLY = re.compile(rb"@253ACK(\d\.\d{3}E[+-]\d+);FF")


@pytest.fixture
def server():
    emulator = MKS937BEmulator("gauges", World(time.monotonic, seed=1).sputter)
    srv = serve(emulator)
    yield srv
    srv.stop()


def test_pyserial_client(server):
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)
    try:
        port.write(b"@253MD?;FF")
        assert port.read_until(b";FF") == b"@253ACK937B;FF"
        port.write(b"@253U?;FF")
        assert port.read_until(b";FF") == b"@253ACKTORR;FF"
        port.write(b"@253PR1?;FF")
        match = PRESSURE_REPLY.fullmatch(port.read_until(b";FF"))
        assert 600 < float(match[1]) < 900
        port.write(b"@253XYZ?;FF")
        assert port.read_until(b";FF") == b"@253NAK160;FF"
    finally:
        port.close()


def test_a_stopped_server_answers_no_more_bytes(monkeypatch):
    """Once `stop()` returns, a connection still open gets no reply: its socket is cut at
    once, not left to a handler thread's next poll. The handler's poll is made long (5 s)
    so it is surely waiting in recv as the client writes (before the fix it answered)."""
    monkeypatch.setattr(tcp, "POLL_S", 5.0)
    emulator = MKS937BEmulator("gauges", World(time.monotonic, seed=1).sputter)
    srv = serve(emulator)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=2)
    try:
        sock.sendall(b"@253U?;FF")
        assert sock.recv(64) == b"@253ACKTORR;FF"
        srv.stop()
        with contextlib.suppress(OSError):
            sock.sendall(b"@253U?;FF")
        try:
            answer = sock.recv(64)
        except OSError:  # reset by the peer: no answer either
            answer = b""
        assert answer == b""
    finally:
        sock.close()


def test_pyvisa_client(server):
    with visa_socket(server.port) as inst:
        inst.write_raw(b"@253U?;FF")
        assert inst.read_bytes(14) == b"@253ACKTORR;FF"
        inst.write_raw(b"@253PR3?;FF")
        assert inst.read_bytes(18) == b"@253ACK1.000E-1;FF"  # manometer at full scale


def test_driver_over_tcp(server):
    pool = LinkPool()
    try:
        link = pool.open(f"socket://127.0.0.1:{server.port}", MKS937B.SERIAL_DEFAULTS)
        assert 600 < MKS937B("chamber", link).pressure_torr() < 900
    finally:
        pool.close()
