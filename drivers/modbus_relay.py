"""A Modbus RTU digital-output (relay) module: coils switch the shutter and the valves.

Framing follows "MODBUS over Serial Line" v1.02 and the application protocol
v1.1b3: `unit, function, data…, CRC-16` with the CRC low byte first
(polynomial 0xA001 reflected, initial value 0xFFFF). There is no terminator: the
reply length follows from the function (05 echoes 8 bytes; 01 answers
`unit 01 count data… CRC`; an exception is `unit function|0x80 code CRC`). A
request with a bad CRC gets no reply at all, so the driver times out and retries.

The module is on RS-485 at 9600 baud, 8 data bits, even parity, 1 stop bit:
even parity is the default the serial-line spec requires every device to have
(modules shipped as 8N1 are set with `?parity=N` on the address).
"""

from __future__ import annotations

from lipon_hw.errors import FrameError, InputError, InstrumentError
from lipon_hw.links import Link

READ_COILS = 0x01
WRITE_SINGLE_COIL = 0x05
WRITE_MULTIPLE_COILS = 0x0F
WRITE_MULTIPLE_REGISTERS = 0x10
EXCEPTION_FLAG = 0x80
COIL_ON = 0xFF00
COIL_OFF = 0x0000
BROADCAST_UNIT = 0

EXCEPTIONS = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


# --- codec (shared with the emulator) -------------------------------------------------
def crc16(data: bytes) -> int:
    """CRC-16/MODBUS; crc16(b"123456789") == 0x4B37."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def write_coil_request(unit: int, coil: int, on: bool) -> bytes:
    value = COIL_ON if on else COIL_OFF
    return with_crc(bytes([unit, WRITE_SINGLE_COIL]) + coil.to_bytes(2, "big")
                    + value.to_bytes(2, "big"))


def read_coils_request(unit: int, first: int, count: int) -> bytes:
    return with_crc(bytes([unit, READ_COILS]) + first.to_bytes(2, "big")
                    + count.to_bytes(2, "big"))


def read_coils_reply(unit: int, states: list[bool]) -> bytes:
    data = bytearray((len(states) + 7) // 8)
    for i, on in enumerate(states):
        if on:
            data[i // 8] |= 1 << (i % 8)
    return with_crc(bytes([unit, READ_COILS, len(data)]) + data)


def exception_reply(unit: int, function: int, code: int) -> bytes:
    return with_crc(bytes([unit, function | EXCEPTION_FLAG, code]))


def request_size(buffer: bytes) -> int | None:
    """Length of the request starting `buffer`, None until enough bytes say it.

    Functions 01–06 have 8-byte requests; 0F and 10 carry a byte count at offset 6.
    For any other function the frame ends where the line falls silent, which on a
    byte stream is the end of what has arrived.
    """
    if len(buffer) < 2:
        return None
    function = buffer[1]
    if 0x01 <= function <= 0x06:
        return 8
    if function in (WRITE_MULTIPLE_COILS, WRITE_MULTIPLE_REGISTERS):
        return 9 + buffer[6] if len(buffer) >= 7 else None
    return len(buffer)


def coil_state(reply: bytes, index: int = 0) -> bool:
    """Bit `index` of a read-coils reply (LSB of the first data byte is the first coil)."""
    return bool(reply[3 + index // 8] >> (index % 8) & 1)


# --- drivers --------------------------------------------------------------------------
class _CoilModule:
    """Coil access for one unit on a Modbus RTU line; drivers on one line share its Link."""

    SERIAL_DEFAULTS = {"baudrate": 9600, "bytesize": 8, "parity": "E", "stopbits": 1}

    def __init__(self, name: str, link: Link, unit: int):
        if not 1 <= int(unit) <= 247:
            raise InputError(f"{name}: Modbus unit {unit} is outside 1..247")
        self.name = name
        self.link = link
        self.unit = int(unit)

    def _write_coil(self, coil: int, on: bool) -> None:
        self._transact(write_coil_request(self.unit, coil, on))

    def _read_coil(self, coil: int) -> bool:
        return coil_state(self._transact(read_coils_request(self.unit, coil, 1)))

    def _transact(self, request: bytes) -> bytes:
        reply = self.link.exchange(lambda link: self._exchange(link, request))
        if reply[1] & EXCEPTION_FLAG:
            code = reply[2]
            raise InstrumentError(f"{self.name} refused {request.hex(' ')} with Modbus exception "
                                  f"{code:02X} ({EXCEPTIONS.get(code, 'unlisted code')})")
        return reply

    def _exchange(self, link: Link, request: bytes) -> bytes:
        link.write(request)
        head = link.read_exact(2)
        if head[1] & EXCEPTION_FLAG:
            reply = head + link.read_exact(3)
        elif head[1] == READ_COILS:
            count = link.read_exact(1)
            reply = head + count + link.read_exact(count[0] + 2)
        else:
            reply = head + link.read_exact(6)
        if not crc_ok(reply):
            raise FrameError(f"{self.name} answered {request.hex(' ')} with {reply.hex(' ')}, "
                             "whose CRC is wrong")
        if reply[0] != self.unit or reply[1] & 0x7F != request[1]:
            raise FrameError(f"{self.name} answered {request.hex(' ')} with {reply.hex(' ')}, "
                             "from another unit or function")
        if request[1] == WRITE_SINGLE_COIL and not reply[1] & EXCEPTION_FLAG and reply != request:
            raise FrameError(f"{self.name} answered {request.hex(' ')} with {reply.hex(' ')} "
                             "instead of echoing it")
        return reply

    def _describe(self, wiring: str) -> str:
        """Plain coil modules have no identity query; reading a coil proves the unit answers."""
        self._read_coil(0)
        return f"Modbus RTU relay module, unit {self.unit} ({wiring})"


class ModbusRelayShutter(_CoilModule):
    """A substrate shutter driven by one coil: on = open."""

    def __init__(self, name: str, link: Link, unit: int = 1, coil: int = 0):
        super().__init__(name, link, unit)
        self.coil = int(coil)

    def open(self) -> None:
        self._write_coil(self.coil, True)

    def close(self) -> None:
        self._write_coil(self.coil, False)

    def is_open(self) -> bool:
        return self._read_coil(self.coil)

    def identify(self) -> str:
        return self._describe(f"coil {self.coil} = shutter")

    def make_safe(self) -> None:
        """Shutter closed: nothing reaches the substrate."""
        self.close()


class ModbusRelayValves(_CoilModule):
    """Pumping and vent valves on two coils; never both open (break before make)."""

    def __init__(self, name: str, link: Link, unit: int = 1, pump_coil: int = 1,
                 vent_coil: int = 2):
        super().__init__(name, link, unit)
        self.pump_coil = int(pump_coil)
        self.vent_coil = int(vent_coil)

    def pump(self) -> None:
        self._write_coil(self.vent_coil, False)
        self._write_coil(self.pump_coil, True)

    def vent(self) -> None:
        self._write_coil(self.pump_coil, False)
        self._write_coil(self.vent_coil, True)

    def isolate(self) -> None:
        self._write_coil(self.pump_coil, False)
        self._write_coil(self.vent_coil, False)

    def identify(self) -> str:
        return self._describe(f"coil {self.pump_coil} = pumping, coil {self.vent_coil} = vent")

    def make_safe(self) -> None:
        """Leave the valves as they are.

        Under vacuum the safe state is to keep pumping: isolating would let leaks
        and outgassing (mostly water) build up over a fresh, moisture-sensitive
        LiPON film, and venting would expose a hot target and the film to air.
        RF off and flow off already end the process. A chamber that is venting or
        isolated got there by an operator's decision, which a fault must not reverse.
        """
