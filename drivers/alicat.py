"""Alicat MC-series mass-flow controller, ASCII serial protocol.

Every command is `<unit id><command>\\r` (unit id A–Z, not case sensitive) and
every answer one CR-terminated line. Polling with the bare unit id returns the
data frame, for a mass-flow controller (MC-series manual, "MC-Series Mass Flow
Controller Data Format"):

    A +014.70 +025.00 +02.004 +02.004 2.004 Air
    unit, pressure (psia), temperature (°C), volumetric flow, mass flow, setpoint, gas

optionally followed by a totalizer column and status codes (`LCK`, `MOV`, …).
`AS4.54\\r` sets the setpoint and is answered with the data frame. A command the
device does not accept is answered with `?` (as numat/alicat expects; the
primer's wording was not available, so a line ending in `?` counts).

Link recovery (`Link.exchange`'s retry rule). Idempotent: the setpoint `S` (an absolute
value; its answer, the data frame, reads it back), the poll and `VE`. Not used, and not
idempotent if ever added: the totalizer reset and the tare commands, which would need a
read-back (the totalizer column) before any resend.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from lipon_hw.errors import FrameError, InputError, InstrumentError
from lipon_hw.links import Link

TERMINATOR = b"\r"
REFUSAL = "?"
SETPOINT_TOLERANCE_SCCM = 0.01  # the frame shows two decimals

_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?")
_FIRMWARE = re.compile(r"\d+v\d+\S*")
T = TypeVar("T")


@dataclass(frozen=True)
class DataFrame:
    unit: str
    pressure_psia: float
    temperature_C: float
    volumetric_flow: float
    mass_flow: float
    setpoint: float
    gas: str
    status: tuple[str, ...] = ()


# --- codec (shared with the emulator) -------------------------------------------------
@functools.lru_cache(maxsize=256)  # the same poll (or command) again and again
def encode_command(unit: str, command: str = "") -> bytes:
    return f"{unit}{command}\r".encode("ascii")


def format_data_frame(frame: DataFrame) -> bytes:
    """The frame as an MC-series controller with a two-decimal range prints it."""
    fields = [frame.unit, f"{frame.pressure_psia:+07.2f}", f"{frame.temperature_C:+07.2f}",
              f"{frame.volumetric_flow:+07.2f}", f"{frame.mass_flow:+07.2f}",
              f"{frame.setpoint:06.2f}", frame.gas, *frame.status]
    return (" ".join(fields) + "\r").encode("ascii")


def parse_data_frame(line: str) -> DataFrame:
    """One data-frame line (no CR) → DataFrame; ValueError when it is not one."""
    tokens = line.split()
    if len(tokens) < 7:
        raise ValueError(f"a data frame has at least 7 fields, this one has {len(tokens)}")
    numbers = tokens[1:6]
    if not all(_NUMBER.fullmatch(t) for t in numbers):
        raise ValueError("pressure, temperature, flows and setpoint must be numbers")
    status = tuple(tokens[7:])
    if not all(t.isalpha() and t.isupper() for t in status):
        raise ValueError("status codes are capital letters")
    p, t, vol, mass, setpoint = (float(x) for x in numbers)
    return DataFrame(tokens[0], p, t, vol, mass, setpoint, tokens[6], status)


def parse_firmware(line: str) -> str:
    """`A 10v05.0-R24` → `10v05.0-R24`: versions read `<major>v<minor>` (e.g. 5v07, 10v05)."""
    match = _FIRMWARE.search(line)
    if not match:
        raise ValueError("no <major>v<minor> firmware version in it")
    return match[0]


def is_refusal(line: str) -> bool:
    tokens = line.split()
    return bool(tokens) and tokens[-1] == REFUSAL


#: `parse_data_frame` kept per line: a controller's frames repeat (two decimals of a flow
#: that holds its setpoint); a line that is no frame raises ValueError every time
_frame_of = functools.lru_cache(maxsize=1024)(parse_data_frame)


# --- driver ---------------------------------------------------------------------------
class AlicatMFC:
    """An Alicat mass-flow controller whose device unit is sccm."""

    SERIAL_DEFAULTS = {"baudrate": 19200, "bytesize": 8, "parity": "N", "stopbits": 1}
    #: the MC series spans 0.5 sccm to 20 slpm full scale; 0.01 sccm is its resolution
    LIMITS = {"max_flow_sccm": (0.01, 20_000.0)}
    #: units A-Z share one RS-232/RS-485 line (multidrop by unit id)
    BUS = "alicat"

    def bus_claims(self) -> list[str]:
        return [f"unit {self.unit}"]

    def __init__(self, name: str, link: Link, unit: str = "A", max_flow_sccm: float = 50.0):
        unit = str(unit).upper()
        if len(unit) != 1 or not "A" <= unit <= "Z":
            raise InputError(f"{name}: unit id {unit!r} must be one letter A-Z")
        self.name = name
        self.link = link
        self.unit = unit
        self.max_flow_sccm = float(max_flow_sccm)

    # --- capability ---------------------------------------------------------------
    def set_flow_sccm(self, flow_sccm: float) -> None:
        if not 0.0 <= flow_sccm <= self.max_flow_sccm:
            raise InstrumentError(f"{self.name} will not take a setpoint of {flow_sccm} sccm: "
                                  f"the limit is 0 to {self.max_flow_sccm} sccm")
        frame = self.poll(f"S{flow_sccm:.2f}")
        if abs(frame.setpoint - flow_sccm) > SETPOINT_TOLERANCE_SCCM:
            raise InstrumentError(f"{self.name} kept setpoint {frame.setpoint} after "
                                  f"S{flow_sccm:.2f} (is its setpoint source analog?)")

    def flow_sccm(self) -> float:
        return self.poll().mass_flow

    def flow_setpoint_sccm(self) -> float:
        return self.poll().setpoint

    def identify(self) -> str:
        firmware = self._transact("VE", parse_firmware)
        return f"Alicat unit {self.unit}, firmware {firmware}"

    def make_safe(self) -> None:
        """Flow off: no gas into the chamber."""
        self.set_flow_sccm(0.0)

    # --- protocol -----------------------------------------------------------------
    def poll(self, command: str = "") -> DataFrame:
        """Send a command answered by the data frame (the bare poll by default)."""
        return self._transact(command, self._data_frame)

    def _data_frame(self, line: str) -> DataFrame:
        frame = _frame_of(line)
        if frame.unit != self.unit:
            raise ValueError(f"it comes from unit {frame.unit!r}, not {self.unit!r}")
        return frame

    def _transact(self, command: str, parse: Callable[[str], T]) -> T:
        """One command; `parse` runs inside the exchange so that a garbled line is retried."""
        request = encode_command(self.unit, command)
        line, value = self.link.exchange(lambda link: self._exchange(link, request, parse))
        if value is None:
            raise InstrumentError(f"{self.name} refused {request!r} (it answered {line!r})")
        return value

    def _exchange(self, link: Link, request: bytes,
                  parse: Callable[[str], T]) -> tuple[str, T | None]:
        link.write(request)
        raw = link.read_until(TERMINATOR)
        line = raw.decode("ascii", errors="replace").strip()
        if is_refusal(line):
            return line, None
        try:
            return line, parse(line)
        except ValueError as exc:
            raise FrameError(f"{self.name} answered {request!r} with {raw!r}, which is not "
                             f"a valid reply ({exc})") from None
