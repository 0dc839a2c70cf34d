"""Links: shared ports, health states, bounded re-open, and every kind of address."""

from __future__ import annotations

import time

import pytest
from conftest import CannedReplies

from lipon_hw.drivers.mks937b import MKS937B
from lipon_hw.errors import InputError, LinkLost
from lipon_hw.links import Health, Link, LinkPool
from lipon_hw.ports import SimPort
from lipon_hw.sim.emulators.mks937b import MKS937BEmulator
from lipon_hw.sim.tcp import serve
from lipon_hw.sim.world import World


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_instruments_on_one_address_share_one_link_and_lock(world):
    emulator = MKS937BEmulator("gauges", world.sputter)
    pool = LinkPool({"gauges": emulator})
    a, b = pool.open("sim://gauges"), pool.open("sim://gauges")
    assert a is b
    ch1, ch3 = MKS937B("g1", a, channel=1), MKS937B("g3", b, channel=3)
    assert ch1.pressure_torr() > 100 and ch3.pressure_torr() > 0.05  # vented chamber


def test_health_goes_retrying_then_lost_then_recovers_after_backoff(world):
    emulator = MKS937BEmulator("gauges", world.sputter)
    clock = Clock()
    link = Link("sim://gauges", SimPort(emulator), retries=2, backoff_s=1.0, clock=clock)
    gauge = MKS937B("g1", link, channel=1)
    gauge.pressure_torr()
    assert link.health is Health.OK

    emulator.faults.drop_replies = 1  # one lost reply: retried, healthy again
    gauge.pressure_torr()
    assert link.health is Health.OK

    emulator.faults.link_down = True
    with pytest.raises(LinkLost, match="sim://gauges is lost after 3 attempts"):
        gauge.pressure_torr()
    assert link.health is Health.LOST
    emulator.faults.link_down = False
    with pytest.raises(LinkLost, match="next re-open in 1.0 s"):
        gauge.pressure_torr()  # no hammering a dead port: wait out the back-off
    clock.t = 1.5
    assert gauge.pressure_torr() > 100
    assert link.health is Health.OK


def test_backoff_doubles_and_is_bounded(world):
    emulator = MKS937BEmulator("gauges", world.sputter)
    emulator.faults.link_down = True
    clock = Clock()
    link = Link("sim://gauges", SimPort(emulator), retries=0, backoff_s=1.0,
                max_backoff_s=4.0, clock=clock)
    waits = []
    for _ in range(5):
        with pytest.raises(LinkLost):
            link.exchange(lambda lk: (lk.write(b"@253PR1?;FF"), lk.read_until(b";FF")))
        waits.append(link._reopen_at - clock.t)
        clock.t = link._reopen_at
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_timeout_message_names_the_address_and_what_came(world):
    link = Link("sim://x", SimPort(MKS937BEmulator("x", world.sputter)))
    with pytest.raises(LinkLost, match=r"sim://x did not finish its reply with b';FF' "
                                       r"\(no reply\)"):
        link.exchange(lambda lk: lk.read_until(b";FF"))


@pytest.mark.parametrize("address, words", [
    ("sim://nope", "names no simulated instrument"),
    ("COM3", "neither sim://, a pyserial URL nor a VISA resource"),
    ("serial:///dev/ttyS9?speed=9600", "serial option 'speed' is unknown"),
])
def test_bad_addresses_are_input_errors(address, words):
    with pytest.raises(InputError, match=words):
        LinkPool({}).open(address)


@pytest.mark.parametrize("scheme", ["socket", "visa"])
def test_driver_over_real_network_stacks(scheme):
    world = World(time.monotonic, seed=1)
    server = serve(MKS937BEmulator("gauges", world.sputter))
    try:
        address = (f"socket://127.0.0.1:{server.port}" if scheme == "socket"
                   else f"TCPIP::127.0.0.1::{server.port}::SOCKET")
        link = LinkPool().open(address, timeout_s=2.0)
        gauge = MKS937B("g1", link, channel=1)
        assert gauge.pressure_torr() > 100
        assert "937B" in gauge.identify()
        link.close()
    finally:
        server.stop()


def test_a_visa_socket_takes_a_long_reply_in_bulk_not_byte_by_byte(monkeypatch):
    """GRBL's `$$` (some 500 bytes, one write of the served emulator) over pyvisa's TCPIP
    SOCKET: its first VisaPort.BYTEWISE bytes are read one by one (a short reply is
    quicker so), the rest in a few reads, not once a byte (it was: 350 VISA reads, each a
    select and a recv of one byte)."""
    from lipon_hw.drivers.grbl import GrblStage
    from lipon_hw.ports import VisaPort
    from lipon_hw.sim.emulators.grbl import GrblEmulator

    reads = []
    read = VisaPort.read

    def counted(port, n, timeout_s):
        got = read(port, n, timeout_s)
        reads.append(len(got))
        return got

    monkeypatch.setattr(VisaPort, "read", counted)
    server = serve(GrblEmulator("stage", World(time.monotonic, seed=1).sputter))
    try:
        link = LinkPool().open(f"TCPIP::127.0.0.1::{server.port}::SOCKET", timeout_s=2.0)
        settings = GrblStage("stage", link).controller_settings()
        assert settings["x_rate_mm_min"] == 6000.0 and len(settings) >= 9
        link.close()
    finally:
        server.stop()
    assert 0 < len(reads) <= VisaPort.BYTEWISE + 10, len(reads)  # 350 before


def test_unreachable_port_is_lost_not_a_traceback():
    link = LinkPool().open("socket://127.0.0.1:9", timeout_s=0.2)  # discard port: closed
    with pytest.raises(LinkLost, match="could not be opened"):
        link.exchange(lambda lk: lk.write(b"x"))


class _BytewisePort:
    """The same in-process port without `read_available`: read byte by byte."""

    def __init__(self, endpoint):
        self._inner = SimPort(endpoint)

    def open(self):
        self._inner.open()

    def close(self):
        self._inner.close()

    def write(self, data):
        self._inner.write(data)

    def read(self, n, timeout_s):
        return self._inner.read(n, timeout_s)

    def reset_input(self):
        self._inner.reset_input()


class _WaitingPort(_BytewisePort):
    """The same in-process port read as pyserial's is: all that came, in one read."""

    def read_waiting(self, timeout_s):
        return self._inner.read_available()


def _outcomes(port_type):
    replies = [b"ab\ncd;FF\n", b"x" * 40 + b"\nrest\n", b"y" * 50, b"12345\r\nz\r\n", b"par"]
    link = Link("sim://canned", port_type(CannedReplies(replies)))
    reads = [
        lambda lk: lk.read_until(b"\n"), lambda lk: lk.read_until(b";FF"),
        lambda lk: lk.read_exact(1), lambda lk: lk.read_exact(2),
        lambda lk: lk.write(b"?"), lambda lk: lk.read_until(b"\n", max_bytes=16),
        lambda lk: lk.read_until(b"\n"), lambda lk: lk.read_until(b"\n"),
        lambda lk: lk.read_until(b"\n", max_bytes=30),
        lambda lk: lk.write(b"?"), lambda lk: lk.read_until(b"\n", max_bytes=30),
        lambda lk: lk.write(b"?"), lambda lk: lk.read_exact(3),
        lambda lk: lk.read_until(b"\r\n"), lambda lk: lk.read_exact(9),
        lambda lk: lk.write(b"?"), lambda lk: lk.read_until(b"\n"), lambda lk: lk.read_exact(1),
    ]
    link.write(b"?")
    out = []
    for read in reads:
        try:
            out.append(read(link))
        except Exception as exc:  # the exception type and message are what is compared
            out.append((type(exc).__name__, str(exc)))
    return out


def test_bulk_reads_of_an_in_process_port_match_byte_by_byte_reads():
    """A Link takes an in-process port's bytes in bulk, and a pyserial port's as they
    come: lines, exact counts, frame errors (max_bytes + 1 consumed), timeouts (what came
    is consumed) stay as byte reads give."""
    bulk, bytewise = _outcomes(SimPort), _outcomes(_BytewisePort)
    assert bulk == bytewise == _outcomes(_WaitingPort)
    assert bulk[:2] == [b"ab\n", b"cd;FF"] and bulk[5][0] == "FrameError"
    assert bulk[-2] == ("LinkTimeout", "sim://canned did not finish its reply with b'\\n' "
                                       "(got b'par')")


def _frames_up_to_end(port_type):
    """Frames read with read_lines up to an END frame, the rest given back with unread
    and read on with read_until / read_exact."""
    link = Link("sim://canned", port_type(CannedReplies([b"a\nbb\nEND\nc\n" + b"x" * 20 + b"\nd"])))
    link.write(b"?")
    frames: list = []
    while not frames or frames[-1] != b"END\n":
        lines = link.read_lines(b"\n", max_bytes=8)
        for n, line in enumerate(lines):
            frames.append(line)
            if line == b"END\n":
                link.unread(b"".join(lines[n + 1:]))
                break
    for read in (lambda lk: lk.read_until(b"\n", max_bytes=8), lambda lk: lk.read_exact(2),
                 lambda lk: lk.read_until(b"\n", max_bytes=8), lambda lk: lk.read_exact(3),
                 lambda lk: lk.read_until(b"\n"), lambda lk: lk.read_until(b"\n")):
        try:
            frames.append(read(link))
        except Exception as exc:  # the exception type and message are what is compared
            frames.append((type(exc).__name__, str(exc)))
    return frames


def test_read_lines_and_unread_read_as_read_until_does():
    bulk = _frames_up_to_end(SimPort)
    assert bulk == _frames_up_to_end(_BytewisePort) == _frames_up_to_end(_WaitingPort)
    assert bulk[:5] == [b"a\n", b"bb\n", b"END\n", b"c\n", b"xx"]
    assert bulk[5][0] == "FrameError" and bulk[-1][0] == "LinkTimeout"


def _blocks(read, stream: bytes, max_bytes: int) -> list:
    """What `read` (read_lines joined, or read_block) gives poll after poll, then the
    error that ends the stream."""
    link = Link("sim://canned", SimPort(CannedReplies([stream])), timeout_s=0.01)
    link.write(b"?")
    got: list = []
    while True:
        try:
            got.append(read(link, max_bytes))
        except Exception as exc:  # the exception type and message are what is compared
            return [*got, (type(exc).__name__, str(exc))]


def test_read_block_gives_the_frames_read_lines_gives_in_one_piece():
    """Random streams of frames, some longer than max_bytes and some cut at the end: a
    block is read_lines' frames joined, poll after poll, errors included; a block reaches
    past one window of max_bytes."""
    import random

    rng = random.Random(2)
    long_blocks = 0
    for _ in range(300):
        max_bytes = rng.randrange(4, 40)
        frames = [b"x" * rng.randrange(0, max_bytes if rng.random() < 0.95 else 2 * max_bytes)
                  + b"\n" for _ in range(rng.randrange(1, 60))]
        stream = b"".join(frames) + b"y" * rng.randrange(0, 3)
        blocks = _blocks(lambda lk, m: lk.read_block(b"\n", m), stream, max_bytes)
        assert blocks == _blocks(lambda lk, m: b"".join(lk.read_lines(b"\n", m)), stream,
                                 max_bytes)
        long_blocks += any(isinstance(b, bytes) and len(b) > 2 * max_bytes for b in blocks)
    assert long_blocks > 100


def test_read_arrived_takes_what_came_and_keeps_a_line_still_on_its_way():
    """An instrument sending on its own over TCP (pyserial's socket://): a read takes the
    complete lines that came, keeps a cut one for the next read, and with nothing coming
    ends after `first_s`, not after the link's timeout (a poll must not hold its link for
    a timeout each time); a frame longer than max_bytes is a FrameError."""
    import socket
    import threading

    from lipon_hw.errors import FrameError

    server = socket.create_server(("127.0.0.1", 0))
    sends = [b"a\nbb\nc", b"cc\n", None, b"z" * 20]  # None: nothing this time
    turn = threading.Semaphore(0)

    def instrument():
        conn, _ = server.accept()
        with conn:
            for data in sends:
                turn.acquire()
                if data:
                    conn.sendall(data)
            turn.acquire()

    thread = threading.Thread(target=instrument, daemon=True)
    thread.start()
    link = LinkPool().open(f"socket://127.0.0.1:{server.getsockname()[1]}", timeout_s=30.0)
    def read(lk, first_s, max_bytes):
        try:
            return lk.read_arrived(b"\n", first_s=first_s, gap_s=0.05, max_bytes=max_bytes)
        except FrameError as exc:  # in the exchange: a link error there is retried
            return str(exc)

    got, waited = [], []
    try:
        link.exchange(lambda lk: None)  # connected (an open flushes what came before it)
        for first_s, max_bytes in ((10.0, 4096), (10.0, 4096), (0.2, 4096), (10.0, 8)):
            turn.release()
            t0 = time.monotonic()
            got.append(link.exchange(lambda lk, f=first_s, m=max_bytes: read(lk, f, m)))
            waited.append(time.monotonic() - t0)
    finally:
        turn.release()
        link.close()
        server.close()
        thread.join(5)
    assert got[:3] == [b"a\nbb\n", b"ccc\n", b""]
    assert got[3].endswith("sent more than 8 bytes without b'\\n'"), got[3]
    assert waited[2] < 10.0, waited  # first_s 0.2 s, the link's timeout 30 s


def test_read_arrived_of_an_in_process_port_takes_every_complete_line_at_once():
    link = Link("sim://canned", SimPort(CannedReplies([b"a\nbb\nc", b"cc\n"])))
    link.write(b"\n")
    assert link.read_arrived(b"\n", 1.0, 0.1) == b"a\nbb\n"
    assert link.read_arrived(b"\n", 1.0, 0.1) == b""  # 'c' waits for the rest of its line
    link.write(b"\n")
    assert link.read_arrived(b"\n", 1.0, 0.1) == b"ccc\n"
