"""The relay module's Modbus RTU functions walked over `sim serve` by a client written from
the MODBUS specifications (Application Protocol v1.1b3, Serial Line v1.02), not the
project's driver: raw frames with their own CRC-16 over pyserial `socket://`, the coils
acting on the sputter tool, and every exception path."""

from __future__ import annotations

import pytest
import serial
from conftest import HOST

UNIT = 1


def crc16(data: bytes) -> bytes:
    """Serial Line v1.02 §6.2.2: CRC-16, polynomial 0xA001 reflected, low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def frame(*fields: int, words: tuple[int, ...] = (), tail: bytes = b"") -> bytes:
    body = bytes(fields) + b"".join(w.to_bytes(2, "big") for w in words) + tail
    return body + crc16(body)


class RelayClient:
    def __init__(self, port: int):
        self.ser = serial.serial_for_url(f"socket://{HOST}:{port}", timeout=2)

    def send(self, request: bytes, reply_size: int) -> bytes:
        self.ser.write(request)
        reply = self.ser.read(reply_size)
        assert len(reply) == reply_size and reply[-2:] == crc16(reply[:-2]), reply
        return reply

    def silent(self, request: bytes) -> bool:
        self.ser.timeout = 0.3
        try:
            self.ser.write(request)
            return self.ser.read(1) == b""
        finally:
            self.ser.timeout = 2

    def read_coils(self, first: int, count: int) -> list[bool]:
        reply = self.send(frame(UNIT, 0x01, words=(first, count)), 5 + (count + 7) // 8)
        assert reply[:3] == bytes([UNIT, 0x01, (count + 7) // 8])
        return [bool(reply[3 + i // 8] >> (i % 8) & 1) for i in range(count)]

    def exception(self, request: bytes) -> tuple[int, int]:
        reply = self.send(request, 5)
        return reply[1], reply[2]


@pytest.fixture
def relay(lab):
    client = RelayClient(lab.ports["io"])
    yield client
    client.send(frame(UNIT, 0x0F, words=(0, 8), tail=b"\x01\x00"), 8)  # all off
    client.ser.close()


def test_read_and_write_single_coils_act_on_the_tool(relay, lab):
    tool = lab.lab.world.sputter
    assert relay.read_coils(0, 8) == [False] * 8
    request = frame(UNIT, 0x05, words=(0, 0xFF00))
    assert relay.send(request, 8) == request  # the reply echoes the request
    assert tool.shutter_open()
    assert relay.read_coils(0, 3) == [True, False, False]
    relay.send(frame(UNIT, 0x05, words=(0, 0x0000)), 8)
    assert not tool.shutter_open()


def test_write_multiple_coils(relay, lab):
    tool = lab.lab.world.sputter
    reply = relay.send(frame(UNIT, 0x0F, words=(0, 8), tail=b"\x01\x03"), 8)
    assert reply[:6] == bytes([UNIT, 0x0F, 0, 0, 0, 8])
    assert relay.read_coils(0, 8) == [True, True, False, False, False, False, False, False]
    assert tool.shutter_open() and tool.s.rough_on
    relay.send(frame(UNIT, 0x0F, words=(1, 2), tail=b"\x01\x02"), 8)  # coil 1 off, 2 on
    assert relay.read_coils(0, 3) == [True, False, True]
    assert not tool.s.rough_on and tool.s.vent_open


@pytest.mark.parametrize("request_, expected", [
    (frame(UNIT, 0x03, words=(0, 1)), (0x83, 0x01)),  # no registers: illegal function
    (frame(UNIT, 0x2B, 0x0E, 0x01, 0x00), (0xAB, 0x01)),  # device identification
    (frame(UNIT, 0x01, words=(0, 0)), (0x81, 0x03)),  # count 0
    (frame(UNIT, 0x01, words=(6, 3)), (0x81, 0x02)),  # beyond coil 7
    (frame(UNIT, 0x05, words=(8, 0xFF00)), (0x85, 0x02)),
    (frame(UNIT, 0x05, words=(0, 0x1234)), (0x85, 0x03)),  # neither FF00 nor 0000
    (frame(UNIT, 0x0F, words=(0, 8), tail=b"\x02\x00\x00"), (0x8F, 0x03)),  # byte count
    (frame(UNIT, 0x0F, words=(0, 0), tail=b"\x00"), (0x8F, 0x03)),
    (frame(UNIT, 0x0F, words=(6, 4), tail=b"\x01\x00"), (0x8F, 0x02)),
])
def test_exceptions(relay, request_, expected):
    assert relay.exception(request_) == expected


def test_silences(relay, lab):
    good = frame(UNIT, 0x05, words=(0, 0xFF00))
    assert relay.silent(good[:-1] + bytes([good[-1] ^ 1]))  # bad CRC
    assert relay.silent(frame(7, 0x01, words=(0, 8)))  # another unit
    assert relay.silent(frame(0, 0x05, words=(2, 0xFF00)))  # broadcast: acts, no reply
    assert lab.lab.world.sputter.s.vent_open
    assert relay.read_coils(2, 1) == [True]
