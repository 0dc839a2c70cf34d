"""A host for INFICON's packet protocol (SQM-160 manual §8.2, SQC-310 manual §4.2) written
from the manuals, not the project's driver: `!`, length + 34, the command, a 14-bit CRC in
two offset bytes; the reply's length is offset by 35 and starts with a status letter."""

from __future__ import annotations

import serial


def crc(data: bytes) -> bytes:
    """The CRC over the length byte and the message."""
    value = 0x3FFF
    for byte in data:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ 0x2001 if value & 1 else value >> 1
    return bytes([(value & 0x7F) + 34, ((value >> 7) & 0x7F) + 34])


class InficonClient:
    def __init__(self, host: str, port: int):
        self.ser = serial.serial_for_url(f"socket://{host}:{port}", timeout=2)

    @staticmethod
    def packet(command: str) -> bytes:
        body = bytes([len(command) + 34]) + command.encode("ascii")
        return b"!" + body + crc(body)

    def ask(self, command: str) -> tuple[str, str]:
        """(status, data) of the reply: 'A' ok, 'C' invalid command, 'D' bad data, …"""
        self.ser.write(self.packet(command))
        head = self.ser.read(2)
        assert head[:1] == b"!" and len(head) == 2, head
        rest = self.ser.read(head[1] - 35 + 2)  # status and data, then the CRC
        assert len(rest) == head[1] - 35 + 2, rest
        body = head[1:] + rest[:-2]
        assert rest[-2:] == crc(body), (command, head + rest)
        text = body[1:].decode("ascii")
        return text[0], text[1:]

    def ok(self, command: str) -> str:
        status, data = self.ask(command)
        assert status == "A", (command, status, data)
        return data

    def silent_after(self, raw: bytes) -> bool:
        self.ser.timeout = 0.3
        try:
            self.ser.write(raw)
            return self.ser.read(1) == b""
        finally:
            self.ser.timeout = 2
