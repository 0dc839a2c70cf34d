"""The INFICON packet (SQM-160, SQC-310): its codec, and the one query/response transaction.

Wire format (SQM-160 manual PN 074-511-P1C §5.3, read; the SQC-310 manual PN 074-550-P1B §5,
P1C §4.2 documents it identically): ``'!' LEN BODY CRC1 CRC2``, no terminator. A host
packet's LEN is len(BODY) + 34; a reply's BODY is a status byte and data, and its LEN is
len(BODY) + 35. The 14-bit CRC covers LEN and BODY; the offsets keep '!' (which resets a
packet) out of everything but the sync byte. Checked byte for byte against the manuals'
CRC examples and example frames (protocols.md §1.1 and §1.2).

Reply status: 'A' OK, 'C' an invalid command, 'D' a problem with the data in the command
(SQM-160, as pymeasure's driver reads its manual; the SQC-310 status list, known from a public
SQC-310C driver and not from its manual, starts with the same three). An instrument with more
statuses declares them on its driver class (`InficonInstrument.REFUSALS`, `.DAMAGED`).
`InficonInstrument.query` is the one transaction both drivers use: one command packet out,
one reply packet in, and the status turned into the reply's data, an InstrumentError (a
refusal) or a FrameError (a damaged packet, which the link retries). A command that acts
again when repeated goes through `command_once` (a read-back before any resend).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import ClassVar, TypeVar

from lipon_hw.errors import FrameError, InputError, InstrumentError
from lipon_hw.links import Link

SYNC = 0x21  # '!'
COMMAND_OFFSET = 34
REPLY_OFFSET = 35
MAX_LEN_BYTE = 0xFF
#: the last digit both instruments display of a thickness (0.001 kÅ, or µm in nm mode)
ZERO_RESOLUTION = 0.001
STATUS_OK = b"A"
STATUS_INVALID_COMMAND = b"C"
STATUS_BAD_DATA = b"D"
#: the statuses both manuals define, and what they say about the command
REFUSALS = {STATUS_INVALID_COMMAND: "refused as an invalid command",
            STATUS_BAD_DATA: "refused because of a problem with the data in the command"}

T = TypeVar("T")


def _crc_of_byte(value: int) -> int:
    """Eight steps of the manual's bitwise CRC (shift right, XOR 0x2001 on a carry)."""
    for _ in range(8):
        carry = value & 1
        value >>= 1
        if carry:
            value ^= 0x2001
    return value


#: the bitwise CRC's eight steps for each low byte of the register: one lookup per byte
#: (the register never exceeds 14 bits, so the manual's `& 0x3FFF` changes nothing)
_CRC_TABLE = tuple(_crc_of_byte(value) for value in range(256))


def inficon_crc(data: bytes) -> bytes:
    """The two CRC characters over `data` (LEN byte + body): 14-bit CRC, 7 bits + 34 each.
    Those of short data (a command, a short reply) are kept: the same bytes, the same CRC;
    those of the last few longer ones too (an in-process instrument's reply is checked by the
    host right after the instrument computed its CRC: the same bytes again)."""
    if type(data) is not bytes:
        return _crc(data)
    kept = _crc_kept if len(data) <= _CRC_KEPT_UP_TO else _crc_recent
    crc = kept.get(data)
    if crc is None:
        if len(kept) >= (_CRC_KEPT_MAX if kept is _crc_kept else _CRC_RECENT_MAX):
            kept.clear()
        crc = kept[data] = _crc(data)
    return crc


_CRC_KEPT_UP_TO = 12  # bytes: every command this project sends, and short replies
_CRC_KEPT_MAX = 4096
_crc_kept: dict[bytes, bytes] = {}
_CRC_RECENT_MAX = 16  # longer data: only the last few
_crc_recent: dict[bytes, bytes] = {}


def _crc(data: bytes) -> bytes:
    crc = 0x3FFF
    table = _CRC_TABLE
    if len(data) >= _PAIRS_FROM and sys.byteorder == "little":
        # two bytes a step: the register never exceeds 14 bits, so after XOR with the next
        # two bytes (little-endian) it indexes the table of sixteen bitwise steps
        pairs = _pair_table()
        even = len(data) & ~1
        for word in memoryview(data[:even]).cast("H"):
            crc = pairs[crc ^ word]
        data = data[even:]
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return bytes(((crc & 0x7F) + 34, ((crc >> 7) & 0x7F) + 34))


_PAIRS_FROM = 16  # bytes: below this the byte table is as quick
_pairs: list[int] = []


def _pair_table() -> list[int]:
    """The register after two byte steps, for every 16-bit register ^ word (built at first
    use, from the byte table: 64 k entries)."""
    if not _pairs:
        table = _CRC_TABLE
        one = [(x >> 8) ^ table[x & 0xFF] for x in range(0x10000)]  # after the low byte
        _pairs[:] = [(r >> 8) ^ table[r & 0xFF] for r in one]
    return _pairs


def encode_packet(body: bytes, offset: int) -> bytes:
    """A packet around `body`: offset 34 for host commands, 35 for instrument replies."""
    length = len(body) + offset
    if length > MAX_LEN_BYTE:
        raise InputError(f"an INFICON packet holds at most {MAX_LEN_BYTE - offset} bytes, "
                         f"not {len(body)} ({body[:20]!r}...)")
    head = bytes((length,)) + body
    return bytes((SYNC,)) + head + inficon_crc(head)


def packet_size(header: bytes, offset: int) -> int:
    """Total packet size announced by its first two bytes (sync and LEN)."""
    return header[1] - offset + 4


def decode_packet(frame: bytes, offset: int, source: str = "the instrument",
                  accept_null_crc: bool = False) -> bytes:
    """The body of a complete packet, or FrameError naming `source` and the bytes.

    The manual lets a host send two NUL bytes instead of a CRC; `accept_null_crc` is for
    the instrument side, which then skips the check.
    """
    if len(frame) < 4 or frame[0] != SYNC or frame[1] < offset:
        raise FrameError(f"{source} sent {frame!r}, which is not an INFICON packet")
    if len(frame) != packet_size(frame, offset):
        raise FrameError(f"{source} sent {frame!r}, whose length byte announces "
                         f"{packet_size(frame, offset)} bytes, not {len(frame)}")
    head, crc = frame[1:-2], frame[-2:]
    if crc != inficon_crc(head) and not (accept_null_crc and crc == b"\0\0"):
        raise FrameError(f"{source} sent {frame!r}, whose CRC {crc!r} should be "
                         f"{inficon_crc(head)!r}")
    return head[1:]


@functools.lru_cache(maxsize=256)
def encode_command(command: str) -> bytes:
    """A host packet; '!' would reset the packet at the instrument, so it cannot be sent.
    (Kept per command: a monitor is asked the same few commands at every sample.)"""
    if not command.isascii() or "!" in command:
        raise InputError(f"command {command!r} must be ASCII without '!'")
    return encode_packet(command.encode("ascii"), COMMAND_OFFSET)


def encode_reply(status: bytes, data: str = "") -> bytes:
    return encode_packet(status + data.encode("ascii"), REPLY_OFFSET)


def read_reply(link: Link, source: str) -> tuple[bytes, str]:
    """Read one reply packet from `link`: (status byte, data text)."""
    header = link.read_exact(2)
    if header[0] != SYNC or header[1] <= REPLY_OFFSET:
        raise FrameError(f"{source} began its reply with {header!r}, not '!' and a length byte")
    frame = header + link.read_exact(packet_size(header, REPLY_OFFSET) - 2)
    body = decode_packet(frame, REPLY_OFFSET, source)
    try:
        return body[:1], body[1:].decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(f"{source} sent {frame!r}, whose data is not ASCII") from None


class InficonInstrument:
    """One INFICON instrument on a link: the transaction and the parsing of its replies.

    A driver subclasses it and declares what differs: the statuses its manual adds to
    `REFUSALS` (InstrumentError) and `DAMAGED` (the instrument says the command packet
    arrived damaged: FrameError, so the link sends it again).
    """

    SERIAL_DEFAULTS = {"baudrate": 19200, "bytesize": 8, "parity": "N", "stopbits": 1}
    REFUSALS: ClassVar[Mapping[bytes, str]] = REFUSALS
    DAMAGED: ClassVar[Mapping[bytes, str]] = {}

    def __init__(self, name: str, link: Link):
        self.name = name
        self.link = link

    def query(self, command: str) -> str:
        """Send one command, return the reply data; a refusal is InstrumentError."""
        packet = encode_command(command)
        return self.link.exchange(lambda link: self._transact(link, packet))

    def _transact(self, link: Link, packet: bytes) -> str:
        link.write(packet)
        status, data = read_reply(link, self.name)
        if status == STATUS_OK:
            return data
        if status in self.DAMAGED:
            raise FrameError(f"{self.name} {self.DAMAGED[status]}: it was sent {packet!r}")
        reason = self.REFUSALS.get(status, f"answered with unknown status {status!r}")
        refusal = InstrumentError(f"{self.name} {reason}: it was sent {packet!r}")
        refusal.status = status  # which refusal: a driver may fall back on another command
        raise refusal

    def command_once(self, command: str, took: Callable[[Link], bool]) -> None:
        """A command that acts again if sent again (a zero, a layer start): after a failed
        attempt the link runs `took(link)`, a read-back made with `ask`, and resends the
        command only if it says the command did not take (`Link.exchange`'s rule)."""
        packet = encode_command(command)
        self.link.exchange(lambda link: self._transact(link, packet), verify=took)

    def ask(self, link: Link, command: str, count: int) -> list[float]:
        """Inside an exchange (a read-back): the numbers of the reply to `command`."""
        data = self._transact(link, encode_command(command))
        try:
            return _numbers(data, count)
        except ValueError:
            raise InstrumentError(f"{self.name} answered {command!r} with {data!r}, which is "
                                  f"not {count} number(s)") from None

    def zero_once(self, command: str, thickness_command: str) -> None:
        """Zero thickness with `command`, read back with `thickness_command` before any
        resend: a zero sent twice is not harmless, since a late second one loses what was
        deposited in between. The zero took if the thickness now reads at most half of what
        it read before (or at most the last displayed digit): a thickness that was not
        zeroed can only have grown."""
        before = self.query_number(thickness_command)

        def zeroed(link: Link) -> bool:
            now = self.ask(link, thickness_command, 1)[0]
            return now <= max(ZERO_RESOLUTION, before / 2)

        self.command_once(command, zeroed)

    def query_as(self, command: str, parse: Callable[[str], T], what: str) -> T:
        """The reply to `command` read by `parse`; its ValueError is InstrumentError."""
        data = self.query(command)
        try:
            return parse(data)
        except ValueError:
            raise InstrumentError(f"{self.name} answered {command!r} with {data!r}, which is "
                                  f"not {what}") from None

    def query_numbers(self, command: str, count: int) -> list[float]:
        """The numbers of the reply; it must hold at least `count` (later firmware may add)."""
        return self.query_as(command, lambda data: _numbers(data, count),
                             f"{count} number(s)")

    def query_number(self, command: str) -> float:
        return self.query_numbers(command, 1)[0]

    def identify(self) -> str:
        """`@`: model and firmware version (both manuals)."""
        return self.query("@")


def _numbers(data: str, count: int) -> list[float]:
    numbers = [float(field) for field in data.split()]
    if len(numbers) < count:
        raise ValueError(f"{data!r} holds fewer than {count} numbers")
    return numbers
