"""`sim serve` under hostile clients: junk, bytes outside ASCII, half scripts, two hosts.

Every port is asked with bytes from its instrument's manual (as in test_sim_serve.py),
after the protocol's own way back to a frame boundary: a terminator for line protocols,
a silence on the line for Modbus RTU and AE Bus (the client waits and asks again, as a
master does after a timeout), nothing for INFICON (a `!` always starts a packet).
Races are provoked with hooks the test holds, never by sleeping and hoping.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipon_hw.drivers import modbus_rtu
from lipon_hw.drivers.modbus_relay import read_coils_reply
from lipon_hw.drivers.modbus_rtu import crc_ok
from lipon_hw.links import LinkPool
from lipon_hw.sim.emulators import modbus_framing
from lipon_hw.sim.lab import SimLab
from lipon_hw.sim.serve import serve_lab
from lipon_hw.sim.tcp import MAX_CONNECTIONS
from lipon_hw.station import driver_class, load_station

HOST = "127.0.0.1"
JUNK_BYTES = 64 * 1024
IDN = re.compile(rb"KEITHLEY INSTRUMENTS INC\.,MODEL 2450,\d{8},1\.0\.0i\n\Z")
READ_COILS_0_8 = bytes.fromhex("01 01 00 00 00 08 3D CC")  # unit 1, coils 0..7
READ_COILS_0_4 = bytes.fromhex("01 01 00 00 00 04 3D C9")  # unit 1, coils 0..3
READ_INPUT_0 = bytes.fromhex("02 04 00 00 00 01 31 F9")  # unit 2, input register 0
OCP_SCRIPT = (b"e\nvar e\nset_pgstat_chan 0\nset_pgstat_mode 2\ncell_off\n"
              b"meas_loop_ocp e 100m 500m\npck_start\npck_add e\npck_end\nendloop\n\n")


@dataclass(frozen=True)
class Probe:
    """A request from the manual and how to know its answer arrived."""

    resync: bytes  # the protocol's way back to a frame boundary, sent first
    request: bytes
    answered: Callable[[bytes], bool]  # does what came back hold the right answer?
    gap: str | None = None  # in-process stand-in for a silence: "silence" or "reset"


def _modbus_reply(head: bytes, size: int) -> Callable[[bytes], bool]:
    return lambda r: len(r) >= size and r[-size:].startswith(head) and crc_ok(r[-size:])


def _inficon(firmware: bytes) -> Callable[[bytes], bool]:
    return lambda r: re.search(rb"!.A" + re.escape(firmware) + rb"..$", r, re.S) is not None


MKS_PR1 = Probe(b";FF", b"@253PR1?;FF",
                lambda r: re.search(rb"@253ACK[^;@]+;FF$", r) is not None)
RELAY = Probe(b"", READ_COILS_0_8, _modbus_reply(b"\x01\x01\x01", 6), gap="silence")
SQM160 = Probe(b"", b"!#@O7", _inficon(b"MON Ver 4.13"))
MES4 = Probe(b"\n\n", b"t\n", lambda r: re.search(rb"(^|\n)tmes4lr[^\n]*\nR\*\n", r) is not None)
PROBES: dict[str, Probe] = {
    "rf": Probe(b"", bytes([0x08, 0x01, 0x09]),  # RF off: ACK, then unit 1's reply packet
                lambda r: re.search(rb"\x06\x09\x01..$", r, re.S) is not None, gap="reset"),
    "qcm": SQM160,
    "gauges": MKS_PR1,
    "mfc": Probe(b"\r", b"A\r", lambda r: re.search(rb"(^|\r)A [^\r]+ N2\r$", r) is not None),
    "io": RELAY,
    "evap_supply": Probe(b"\rADR 6\r", b"IDN?\r", lambda r: r.endswith(b"LAMBDA,GEN6-200\r")),
    "evap_qcm": SQM160,
    "evap_ctrl": Probe(b"", b"!#@O7", _inficon(b"SQC-310 Ver 6.01")),
    "evap_gauges": MKS_PR1,
    "evap_io": RELAY,
    "evap_tc": Probe(b"", READ_INPUT_0, _modbus_reply(b"\x02\x04\x02", 7), gap="silence"),
    "smu": Probe(b"\n", b"*IDN?\n", lambda r: IDN.search(r) is not None),
    **{f"mes4/{ch}": MES4 for ch in range(1, 17)},
    **{f"probe/{ch}": MES4 for ch in range(1, 33)},
    # GRBL: a line end, then the real-time status query, answered wherever it falls
    "stage": Probe(b"\n", b"?", lambda r: re.search(rb"<\w+(:\d)?\|MPos:[^>]*>\r\n$", r)
                   is not None),
}


def junk(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="module")
def station():
    return load_station()


@pytest.fixture(scope="module")
def served(station):
    lab = serve_lab(station, HOST, speed=100)
    yield lab
    lab.stop()


def connect(served, endpoint: str) -> socket.socket:
    sock = socket.create_connection((HOST, served.ports[endpoint]), timeout=2)
    sock.settimeout(0.05)
    return sock


def ask(sock: socket.socket, probe: Probe, within_s: float = 5.0,
        retry_s: float = 0.25) -> float:
    """Send resync + request (again every `retry_s`, as a master whose request went
    unanswered) until the answer is in; the seconds it took."""
    t0 = time.monotonic()
    received = b""
    while time.monotonic() - t0 < within_s:
        sock.sendall(probe.resync + probe.request)
        retry_at = time.monotonic() + retry_s
        while time.monotonic() < retry_at:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"the server closed the connection; got {received[-200:]!r}")
            received += chunk
            if probe.answered(received):
                return time.monotonic() - t0
    raise AssertionError(f"no answer to {probe.request!r} in {within_s} s; "
                         f"got {received[-200:]!r}")


def send_all_at_once(socks: dict[str, socket.socket], payloads: dict[str, bytes]) -> None:
    """Every payload sent at the same time, one thread per port."""
    def send(endpoint: str) -> None:
        sock = socks[endpoint]
        sock.settimeout(60)
        sock.sendall(payloads[endpoint])
        sock.settimeout(0.05)

    threads = [threading.Thread(target=send, args=(e,)) for e in socks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


# --- over TCP ---------------------------------------------------------------------------
def test_64k_of_junk_on_every_port_then_every_instrument_answers(served, station):
    assert set(PROBES) == set(served.ports)
    socks = {endpoint: connect(served, endpoint) for endpoint in served.ports}
    try:
        send_all_at_once(socks, {e: junk(JUNK_BYTES, seed) for seed, e in enumerate(socks)})
        for endpoint, sock in socks.items():  # on the connection the junk came by
            assert ask(sock, PROBES[endpoint]) < 5.0, endpoint
    finally:
        for sock in socks.values():
            sock.close()
    pool = LinkPool()  # and the project's own drivers, on new connections
    try:
        for name, info in served.instruments().items():
            spec = station.instrument(name)
            links = [pool.open(f"socket://{c['tcp']}") for c in info.get("channels", [info])]
            driver = driver_class(spec.driver)(name, links if len(links) > 1 else links[0],
                                               **spec.settings)
            assert driver.identify(), name
    finally:
        pool.close()


def test_junk_on_the_modbus_ports_leaves_another_port_prompt(served):
    """The gauge is asked while 64 KB of junk goes to each Modbus port (before the fix
    they took the World's lock for minutes); the next test makes the overlap certain."""
    modbus = ["io", "evap_io", "evap_tc"]
    socks = {endpoint: connect(served, endpoint) for endpoint in modbus}
    sender = threading.Thread(target=send_all_at_once, args=(
        socks, {e: junk(JUNK_BYTES, 100 + i) for i, e in enumerate(modbus)}))
    try:
        with connect(served, "gauges") as gauge:
            sender.start()
            latencies = [ask(gauge, PROBES["gauges"], within_s=3.0) for _ in range(5)]
        sender.join(60)
        for endpoint, sock in socks.items():
            assert ask(sock, PROBES[endpoint]) < 5.0
    finally:
        for sock in socks.values():
            sock.close()
    assert max(latencies) < 1.0


def test_a_port_stuck_in_its_framing_holds_no_other_port(served):
    """A hook holds the relay module inside its frame search (as a long parse of junk
    would); meanwhile the gauge controller, on the same World, answers at once."""
    relay = served.lab.emulators["io"]
    entered, release = threading.Event(), threading.Event()
    search = relay._process

    def held(window: bytes):
        entered.set()
        release.wait(10)
        return search(window)

    relay._process = held
    try:
        with connect(served, "io") as io, connect(served, "gauges") as gauge:
            io.sendall(junk(1024, 7))
            assert entered.wait(5)
            latency = ask(gauge, PROBES["gauges"], within_s=2.0)
            release.set()
            assert ask(io, PROBES["io"]) < 5.0
    finally:
        release.set()
        del relay._process
    assert latency < 1.0


def test_bytes_outside_ascii_then_t_is_answered_on_the_same_connection(served):
    with connect(served, "mes4/3") as s:
        s.sendall(b"\x88\xff\xfe\n")
        assert ask(s, Probe(b"", b"", lambda r: r == b"!0003\n"), within_s=2.0) < 2.0
        assert ask(s, Probe(b"", b"t\n", MES4.answered)) < 5.0
        s.sendall(b"e\nvar \xe9\n\n")  # a script line outside ASCII is refused, not fatal
        assert ask(s, Probe(b"", b"", lambda r: re.search(rb"e!4[0-9A-F]{3}: Line", r)
                            is not None), within_s=2.0) < 2.0
        assert ask(s, Probe(b"", b"t\n", MES4.answered)) < 5.0


def read_until(sock: socket.socket, done: Callable[[bytes], bool], within_s: float = 5.0):
    received, deadline = b"", time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        received += chunk
        if done(received):
            return received
    raise AssertionError(f"got {received!r}")


def test_a_client_gone_mid_script_leaves_its_upload_behind_but_not_its_measurement(served):
    """A half-uploaded script is the connection's and goes with it; a script already
    running is the instrument's and goes on, as on the MultiEmStat4."""
    with connect(served, "mes4/5") as first:
        first.sendall(b"e\nvar e\nset_pgstat_chan 0\n")  # half a script, then gone
    with connect(served, "mes4/5") as second:
        second.sendall(OCP_SCRIPT)
        lines = read_until(second, lambda r: r.endswith(b"*\n\n")).decode().split("\n")
    assert lines[:2] == ["e", "M000B"]
    assert len([line for line in lines if line.startswith("P")]) == 5

    long_ocp = OCP_SCRIPT.replace(b"100m 500m", b"1 100000")  # ~17 min at 100x
    with connect(served, "mes4/5") as third:
        third.sendall(long_ocp)
        read_until(third, lambda r: b"M000B\n" in r)
    with connect(served, "mes4/5") as fourth:
        fourth.sendall(b"e\n\n")  # busy: refused, its lines skipped
        read_until(fourth, lambda r: b"e!0006\n" in r)
        fourth.sendall(b"Z\n")  # the measurement the third client left is still there
        # (its samples come to the one host still connected: a line of them may come first)
        said = read_until(fourth, lambda r: b"*\n\n" in r or b"Z!" in r)
    assert re.search(rb"(?:^|\n)Z\n\*\n\n", said) and b"Z!" not in said, said


def test_an_idle_second_client_does_not_take_a_running_scripts_output(served):
    """A host that connects to a channel and only listens (polls) while another's
    script runs gets none of that script's output; its owner gets all of it."""
    script = OCP_SCRIPT.replace(b"100m 500m", b"100m 30")  # 300 samples in 0.3 s at 100x
    with connect(served, "mes4/8") as idle, connect(served, "mes4/8") as owner:
        owner.sendall(script)
        lines = read_until(owner, lambda r: r.endswith(b"*\n\n")).decode().split("\n")
        idle.sendall(b"t\n")  # what the idle host gets is the answer to its own command
        heard = read_until(idle, lambda r: r.endswith(b"R*\n"))
    assert len([line for line in lines if line.startswith("P")]) == 300
    assert re.fullmatch(rb"tmes4lr[^\n]*\nR\*\n", heard)


def test_two_clients_of_one_port_keep_their_own_frames(served):
    """Two hosts send their requests a byte at a time, interleaved; a hook tells when
    the server has taken each byte, so the interleaving is exact. (The gauge
    controller, whose frames end at `;FF`, not at a silence that a slow test could
    make.)"""
    gauges = served.lab.emulators["gauges"]
    took = threading.Semaphore(0)
    handle = gauges.handle

    def counted(*args):
        reply = handle(*args)
        if args[0]:
            took.release()
        return reply

    gauges.handle = counted
    try:
        with connect(served, "gauges") as a, connect(served, "gauges") as b:
            for byte_a, byte_b in zip(b"@253SN?;FF", b"@253MD?;FF", strict=True):
                for sock, byte in ((a, byte_a), (b, byte_b)):
                    sock.sendall(bytes([byte]))
                    assert took.acquire(timeout=5)
            reply_a = read_until(a, lambda r: r.endswith(b";FF"))
            reply_b = read_until(b, lambda r: r.endswith(b";FF"))
    finally:
        del gauges.handle
    assert reply_a == f"@253ACK{gauges.serial};FF".encode()  # its serial number
    assert reply_b == b"@253ACK937B;FF"  # its model


def test_a_connection_whose_handling_fails_is_closed_alone(served, caplog):
    smu = served.lab.emulators["smu"]
    search = smu._process

    def failing(window: bytes):
        if window.startswith(b"BOOM"):
            raise RuntimeError("a fault in the emulator")
        return search(window)

    smu._process = failing
    try:
        with connect(served, "smu") as other, connect(served, "smu") as victim:
            assert ask(other, PROBES["smu"]) < 5.0
            with caplog.at_level(logging.WARNING, logger="lipon_hw.sim.tcp"):
                victim.sendall(b"BOOM\n")
                assert read_until(victim, lambda r: True, within_s=5.0) == b""  # closed
            assert ask(other, PROBES["smu"]) < 5.0
        with connect(served, "smu") as again:
            assert ask(again, PROBES["smu"]) < 5.0
    finally:
        del smu._process
    [record] = [r for r in caplog.records if r.name == "lipon_hw.sim.tcp"]
    assert "smu" in record.getMessage() and "RuntimeError" in record.getMessage()
    assert "\n" not in record.getMessage()


def closed_by_server(sock: socket.socket, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            return sock.recv(1) == b""
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def test_a_connection_flood_costs_a_bounded_number_of_threads(served, caplog):
    with caplog.at_level(logging.WARNING, logger="lipon_hw.sim.tcp"):
        held = [connect(served, "mfc") for _ in range(MAX_CONNECTIONS)]
        try:
            for sock in held:
                assert ask(sock, PROBES["mfc"]) < 5.0
            with connect(served, "mfc") as extra:
                assert closed_by_server(extra)
            assert ask(held[0], PROBES["mfc"]) < 5.0  # the open ones serve on
            held.pop().close()
            deadline = time.monotonic() + 5.0  # the closed one's slot comes back
            while True:
                with connect(served, "mfc") as again:
                    try:
                        assert ask(again, PROBES["mfc"], within_s=1.0) < 1.0
                        break
                    except AssertionError:
                        if time.monotonic() > deadline:
                            raise
        finally:
            for sock in held:
                sock.close()
    assert any("refused a connection" in r.getMessage() for r in caplog.records)


# --- in process: sessions, time and a generated corpus ----------------------------------
def test_an_ae_bus_reply_awaiting_its_hosts_ack_is_that_hosts_alone(lab):
    """The AE Bus host NAKs to have the last reply sent again: another host's NAK must
    not get it, and the first host's NAK still does."""
    rf = lab.emulators["rf"]
    first, second = rf.open_session(), rf.open_session()
    reply = rf.handle(bytes([0x08, 0x01, 0x09]), first)  # RF off
    assert reply[:1] == b"\x06" and len(reply) == 5
    assert rf.handle(b"\x15", second) == b""  # a NAK from nobody's request
    assert rf.handle(b"\x15", first) == reply[1:]  # the first host's: its reply again


@pytest.fixture(scope="module")
def lab(station):
    """The station's lab on a frozen clock: what a script prints stays bounded."""
    return SimLab(station.spec, lambda: 0.0, seed=3)


HOSTILE_PATTERNS = {
    "random": junk(16 * 1024, 16),
    "modbus unit 1, function of no known length": bytes([1, 0x2B]) * 8192,
    "modbus unit 2, function of no known length": bytes([2, 0x2B]) * 8192,
    "modbus broadcasts of zeros": bytes(16 * 1024),
    "modbus write-multiple headers": (bytes([1, 0x10, 0, 0, 0, 0x7B, 0xF6]) + bytes(57)) * 256,
    "lines without end": b"e\n" + b"x" * 16 * 1024,
    "empty lines": b"\n\r" * 8192,
}


@pytest.mark.parametrize("pattern", HOSTILE_PATTERNS)
def test_16k_of_junk_costs_linear_time_on_every_emulator(lab, pattern):
    data = HOSTILE_PATTERNS[pattern]
    for endpoint, emulator in lab.emulators.items():
        emulator.reset_connection()
        t0 = time.perf_counter()
        for i in range(0, len(data), 4096):  # as sim serve takes it from the socket
            emulator.handle(data[i:i + 4096])
        assert time.perf_counter() - t0 < 1.0, endpoint


#: whole frames spliced into the junk, per endpoint: valid, and harmless to the state
FRAMES = {
    "rf": [bytes([0x08, 0x01, 0x09]), b"\x06", b"\x15"],
    "qcm": [b"!#@O7", b"!#J\0\0"],
    "gauges": [b"@253PR1?;FF", b"@253PR3?;FF", b"@"],
    "mfc": [b"A\r", b"B\r"],
    "io": [READ_COILS_0_8, READ_COILS_0_4],
    "evap_supply": [b"ADR 6\r", b"IDN?\r", b"\x08"],
    "evap_qcm": [b"!#@O7"],
    "evap_ctrl": [b"!#@O7", b"!#J\0\0"],
    "evap_gauges": [b"@253PR1?;FF"],
    "evap_io": [READ_COILS_0_8],
    "evap_tc": [READ_INPUT_0],
    "smu": [b"*IDN?\n", b":SYST:ERR?\n", b";", b'"'],
    "mes4/1": [b"t\n", b"e\n", b"\n", b"Z\n", OCP_SCRIPT, b"var e\n"],
}


@pytest.mark.parametrize("endpoint", FRAMES)
def test_generated_junk_never_breaks_an_emulator(lab, endpoint):
    emulator = lab.emulators[endpoint]
    probe = PROBES[endpoint]
    pieces = st.one_of(st.binary(max_size=96), st.sampled_from(FRAMES[endpoint]))

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(pieces, max_size=24), st.lists(st.integers(1, 200), max_size=8))
    def check(parts, cuts):
        emulator.reset_connection()
        data = b"".join(parts)
        out, start = b"", 0
        for cut in [*cuts, len(data)]:  # the junk in chunks, as it may arrive
            out += emulator.handle(data[start:start + cut])
            start += cut
        out += emulator.handle(data[start:])
        assert len(out) <= 8 * len(data) + 1024
        if probe.gap == "silence":
            emulator.line_silent()
        elif probe.gap == "reset":
            emulator.reset_connection()
        reply = emulator.handle(probe.resync + probe.request)
        assert probe.answered(reply), (data, reply)
        if endpoint == "io":
            assert reply[-6:] == read_coils_reply(1, emulator.coils[0:8])

    check()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_the_servers_table_crc_is_the_drivers_crc(data):
    assert modbus_framing.crc16(data) == modbus_rtu.crc16(data)


def test_modbus_resync_finds_a_request_after_junk_in_one_burst():
    found = []
    # junk of 8-byte frames' starts (functions 2-6) for other units, no unit 1 or 0:
    # each false start costs one CRC of 8 bytes and one byte, even those that run into
    # the request
    rng = random.Random(5)
    noise = bytes(rng.choice([*range(2, 7), *range(0x20, 0x100)]) for _ in range(300))
    buffer = noise + READ_COILS_0_8
    start = 0
    while start < len(buffer):
        consumed, frame = modbus_framing.next_request(buffer[start:], unit=1)
        assert consumed > 0
        start += consumed
        if frame is not None:
            found.append(frame)
    assert found == [READ_COILS_0_8]
    # a frame of no known length for this unit with a bad CRC goes whole, as on the wire
    bad = bytes([1, 0x2B]) + bytes(40)
    assert modbus_framing.next_request(bad, unit=1) == (len(bad), None)
    # a write-multiple header announcing more than the largest frame: one byte at a time
    assert modbus_framing.next_request(bytes([1, 0x10, 0, 0, 0, 0x7B, 0xFF]), 1) == (1, None)
