"""MKS 937B gauge controller on the wire, reading its tool's chamber pressure.

What each channel holds and reads, the ion gauge's protection and control, and the set
point relays: mks937b_sensors.py. Frames for other addresses are ignored, as on an RS-485
bus; 254 is the broadcast address, answered from the controller's own.

Command summary (937B operation manual §9 "937B RS232/485 serial communication commands";
the manual was read in excerpts: §9.1 framing and its examples, §6.6.3 `CPn`, §9.6 cold
cathode control commands; the rest follows pymeasure's mks937b.py and its tests,
PyExpLabSys's mks_937b.py, the sister transducers' (902B, 910, 971) command lists and
protocols.md §3.3 — so reply words and NAK codes outside those are
unverified). n is a channel 1–6, r a relay 1–12, i an ion-gauge channel 1, 3 or 5.
  pressure   PRn? (pressure, or LO, ATM, OFF, MISCONN)  PRZ? (all six, space-separated)
             PCn? (combination n = 1, 2; 2 is not configured here and reads OFF)
             PCZ? (both)
  ion gauge  Ti? (the manual's W O G P C R; answered G, P, C or O here; on channel 3,
             which holds no ion gauge: NAK152; on 5, empty: NAK151)
             PROi?/! (protection set point, 1e-5..1e-2 Torr, default 5e-3)
             CSPi?/! (control set point 5e-4..1e-2)  CHPi?/! (control hysteresis
             5.5e-4..1.1e-2)  CSEi?/! (A1 B1 A2 B2 C1 C2 OFF)  CTLi?/! (AUTO SAFE OFF)
             XSPi?/! (ON OFF)  UCi?/! (gas correction 0.1..10, applied to the reading)
             GTi?/! (Nitrogen Argon Helium; kept, changes no reading)
  power      CPn?/! (ON OFF)
  relays     SPr?/! (set point)  SHr?/! (hysteresis)  SDr?/! (ABOVE BELOW)
             ENr?/! (ENABLE SET CLEAR)  SSr? (SET CLEAR)
  system     U?/! (TORR MBAR PASCAL MICRON; set points and readings in that unit)
             SN? (serial)  MD? (937B)  FV? (firmware)  HV? (hardware)  MT? (module types
             of slots A, B, C)  AD?/! (address 1..253; the reply comes from the old one)
             BR?/! (9600 19200 38400 57600 115200; bytes on the emulator's link do not
             depend on it)
Replies: a set answers the value it set; pressures and set points print as `d.dddE±e`
(the manual's `7.602E+2`), set points `d.ddE±e` (pymeasure's `2.00E+0`).
NAK codes (the 946 manual's table 9-15, which the driver lists): 160 an unknown command, a
channel outside 1–6 (for an ion-gauge command, a channel other than 1, 3, 5; for a relay
command, a relay outside 1–12), or a frame that is not a 937B message; 169 an argument that
is not one of the words or not a number; 172 a number outside its range; 151 a channel with
no gauge; 152 an ion-gauge command on channel 1, 3 or 5 holding another gauge; 175 a query
with a value or a set of something read-only. Unknown queries thus always get an answer.

Verified in the excerpts: the framing, `PRn` and `BR` examples, `CPn`, `PROn` (range and
default), `CSPn`, `CHPn`, `CSEn`, `CTLn`, `XSPn`, `UCn` (0.1–10), `GTn`, `Tn` and its
letters, the baud rates. Unverified: the space between `PRZ`/`PCZ` readings, the PC2
answer, the ENABLE/SET/CLEAR words of `EN` (pymeasure's test shows ENABLE), the relay
defaults, the `FV`, `HV` and `MT` answers, which address answers an `AD` set, and the NAK
code of each refusal above 160.

Identity: `serial` (the station's `sim: serial:`), by default ten digits derived from
the controller's name; `address` (`sim: address:`), by default 253, the factory's.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable

from lipon_hw.drivers.mks937b import (
    BROADCAST_ADDRESS,
    TERMINATOR,
    decode_request,
    encode_reply,
    format_pressure,
    parse_number,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.emulator import DISCARD_ALL, Emulator
from lipon_hw.sim.emulators.mks937b_sensors import (
    CHANNELS,
    CONTROL_RANGE_TORR,
    HYSTERESIS_RANGE_TORR,
    ION_GAUGES,
    PROTECTION_RANGE_TORR,
    RELAYS,
    SENSOR_RANGE_TORR,
    SENSORS,
    SOURCES,
    Sensors,
    default_state,
    relay_channel,
)

#: how many of the controller's unit one Torr is
UNITS = {"TORR": 1.0, "MBAR": 1.333224, "PASCAL": 133.3224, "MICRON": 1000.0}
BAUD_RATES = ("9600", "19200", "38400", "57600", "115200")
MAX_FRAME = 64  # no valid message is longer; longer garbage is dropped
FIRMWARE, HARDWARE = "1.10", "A"  # unverified examples
MODULES = "CC CM NC"  # slot A cold cathode (with its Pirani), B manometer, C none


class Refused(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def serial_from_name(name: str) -> str:
    """Ten digits from the controller's name: the same name gives the same serial."""
    return f"11{zlib.crc32(name.encode()) % 10**8:08d}"


#: `decode_request` of a frame, kept per frame (a host sends the same few queries again and
#: again; the Request is frozen); a frame that is no request raises ValueError every time
_request = functools.lru_cache(maxsize=256)(decode_request)


class MKS937BEmulator(Sensors, Emulator):
    model = "MKS 937B"

    def __init__(self, name: str, tool, address: int = 253, serial: str | None = None):
        super().__init__(name)
        if isinstance(address, bool) or not isinstance(address, int) or \
                not 1 <= address < BROADCAST_ADDRESS:
            raise InputError(f"{name}: address {address!r} must be a whole number 1..253")
        if serial is None:
            serial = serial_from_name(name)
        if not isinstance(serial, str) or not (serial.isdigit() and len(serial) <= 20):
            raise InputError(f"{name}: serial {serial!r} must be a quoted string of up to 20 "
                             "digits, e.g. \"1103937001\"")
        self.tool = tool
        self.address = address
        self.serial = serial
        self.calibration = 1 + tool.world.rng.uniform(-0.15, 0.15)
        self.unit = "TORR"
        self.baud = "9600"
        self.power = dict.fromkeys(CHANNELS, True)
        self.state = default_state()

    # --- instrument memory (for checkpoints) ----------------------------------------
    def snapshot(self) -> dict:
        return {"unit": self.unit, "power": {str(ch): on for ch, on in self.power.items()},
                "address": self.address, "baud": self.baud, "state": self.state}

    def restore(self, state: dict) -> None:
        self.unit = state["unit"]
        self.power = {int(ch): on for ch, on in state["power"].items()}
        self.address = state.get("address", self.address)
        self.baud = state.get("baud", self.baud)
        self.state = state.get("state") or default_state()

    # --- wire -------------------------------------------------------------------------
    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        start = buffer.find(b"@")
        if start != 0:
            return (len(buffer) if start < 0 else start), b""
        end = buffer.find(TERMINATOR)
        if end < 0:
            return (DISCARD_ALL if len(buffer) > MAX_FRAME else 0), b""
        size = end + len(TERMINATOR)
        try:
            request = _request(buffer[:size])
        except ValueError:
            return size, self._nak_if_addressed(buffer[:size])
        if request.address not in (self.address, BROADCAST_ADDRESS):
            return size, b""
        address = self.address
        with self.world_lock:
            body, ok = self._answer(request.command, request.value)
        return size, encode_reply(address, body, ack=ok)

    def _nak_if_addressed(self, frame: bytes) -> bytes:
        """A well-addressed frame the controller cannot parse is an unrecognized message."""
        if frame[1:4] in (f"{self.address:03d}".encode(), f"{BROADCAST_ADDRESS}".encode()):
            return encode_reply(self.address, "160", ack=False)
        return b""

    def _answer(self, command: str, value: str | None) -> tuple[str, bool]:
        if self.faults.error_code is not None:  # every message refused with that NAK
            return f"{self.faults.error_code}", False
        try:
            return self._dispatch(command, value), True
        except Refused as refusal:
            return str(refusal.code), False

    def _dispatch(self, command: str, value: str | None) -> str:
        head = command.rstrip("0123456789")
        digits = command[len(head):]
        number = int(digits) if digits else None
        handler = (SYSTEM if number is None else INDEXED).get(head)
        if handler is None:
            raise Refused(160)
        return handler(self, number, value)

    # --- helpers ----------------------------------------------------------------------
    def _in_unit(self, torr: float) -> str:
        return format_pressure(torr * UNITS[self.unit])

    def _setpoint_text(self, torr: float) -> str:
        value = torr * UNITS[self.unit]
        exponent = math.floor(math.log10(value))
        mantissa = round(value / 10**exponent, 2)
        if mantissa >= 10:
            mantissa, exponent = mantissa / 10, exponent + 1
        return f"{mantissa:.2f}E{exponent:+d}"

    def _torr_value(self, value: str, low: float, high: float) -> float:
        """A pressure argument in the controller's unit → Torr, within low..high Torr."""
        number = parse_number(value)
        if number is None:
            raise Refused(169)
        torr = number / UNITS[self.unit]
        if not low * (1 - 1e-9) <= torr <= high * (1 + 1e-9):
            raise Refused(172)
        return torr

    def _reading_text(self, channel: int) -> str:
        reading = self.reading_torr(channel)
        return reading if isinstance(reading, str) else self._in_unit(reading)


# --- commands without a channel or relay number -----------------------------------------
def _query(value: str | None) -> None:
    if value is not None:
        raise Refused(175)


def _unit(emu: MKS937BEmulator, _, value: str | None) -> str:
    if value is not None:
        if value.upper() not in UNITS:
            raise Refused(169)
        emu.unit = value.upper()
    return emu.unit


def _constant(answer) -> Callable:
    def handler(emu: MKS937BEmulator, _, value: str | None) -> str:
        _query(value)
        return answer(emu) if callable(answer) else answer

    return handler


def _address(emu: MKS937BEmulator, _, value: str | None) -> str:
    if value is not None:
        if not (value.isdigit() and 1 <= int(value) < BROADCAST_ADDRESS):
            raise Refused(172 if value.isdigit() else 169)
        emu.address = int(value)
    return f"{emu.address:03d}"


def _baud(emu: MKS937BEmulator, _, value: str | None) -> str:
    if value is not None:
        if value not in BAUD_RATES:
            raise Refused(172 if value.isdigit() else 169)
        emu.baud = value
    return emu.baud


def _all_pressures(emu: MKS937BEmulator, _, value: str | None) -> str:
    _query(value)
    return " ".join(emu._reading_text(ch) for ch in CHANNELS)


def _all_combinations(emu: MKS937BEmulator, _, value: str | None) -> str:
    _query(value)
    return " ".join(_combination(emu, n, None) for n in (1, 2))


SYSTEM = {"U": _unit, "SN": _constant(lambda emu: emu.serial), "MD": _constant("937B"),
          "FV": _constant(FIRMWARE), "HV": _constant(HARDWARE), "MT": _constant(MODULES),
          "AD": _address, "BR": _baud, "PRZ": _all_pressures, "PCZ": _all_combinations}


# --- commands of one channel, ion gauge or relay -----------------------------------------
def _channel(number: int) -> int:
    if number not in CHANNELS:
        raise Refused(160)
    return number


def _ion_gauge(number: int) -> str:
    """The key of the ion gauge on channel `number` (only channel 1 holds one)."""
    if number not in ION_GAUGES:
        raise Refused(160)
    if number not in SENSORS:
        raise Refused(151)
    if SENSORS[number] != "CC":
        raise Refused(152)
    return str(number)


def _pressure(emu: MKS937BEmulator, number: int, value: str | None) -> str:
    _query(value)
    return emu._reading_text(_channel(number))


def _combination(emu: MKS937BEmulator, number: int, value: str | None) -> str:
    """Combination 1 is channel 1 (its cold cathode with its Pirani); 2 is not set up."""
    _query(value)
    if number not in (1, 2):
        raise Refused(160)
    return emu._reading_text(1) if number == 1 else "OFF"


def _power(emu: MKS937BEmulator, number: int, value: str | None) -> str:
    channel = _channel(number)
    if value is not None:
        if value.upper() not in ("ON", "OFF"):
            raise Refused(169)
        emu.power[channel] = value.upper() == "ON"
    return "ON" if emu.power[channel] else "OFF"


def _status(emu: MKS937BEmulator, number: int, value: str | None) -> str:
    _query(value)
    return emu.ion_status(int(_ion_gauge(number)))


def _ion_pressure(key: str, bounds: tuple[float, float], table: str = "control"):
    def handler(emu: MKS937BEmulator, number: int, value: str | None) -> str:
        gauge = _ion_gauge(number)
        slot = emu.state["protection"] if table == "protection" else emu.state["control"][gauge]
        name = gauge if table == "protection" else key
        if value is not None:
            slot[name] = emu._torr_value(value, *bounds)
        return emu._setpoint_text(slot[name])

    return handler


def _ion_word(key: str, options: tuple[str, ...], table: str = "control"):
    def handler(emu: MKS937BEmulator, number: int, value: str | None) -> str:
        gauge = _ion_gauge(number)
        slot = emu.state[table][gauge] if table == "control" else emu.state[table]
        name = key if table == "control" else gauge
        if value is not None:
            match = [o for o in options if o.upper() == value.upper()]
            if not match:
                raise Refused(169)
            slot[name] = match[0]
        return slot[name]

    return handler


def _gas_correction(emu: MKS937BEmulator, number: int, value: str | None) -> str:
    gauge = _ion_gauge(number)
    if value is not None:
        factor = parse_number(value)
        if factor is None:
            raise Refused(169)
        if not 0.1 <= factor <= 10:
            raise Refused(172)
        emu.state["gas_correction"][gauge] = factor
    return f"{emu.state['gas_correction'][gauge]:.1f}"


def _relay(number: int, emu: MKS937BEmulator) -> dict:
    if number not in RELAYS:
        raise Refused(160)
    channel = relay_channel(number)
    if channel not in SENSORS:
        raise Refused(151)
    return emu.state["relays"][str(number)]


def _relay_pressure(key: str):
    def handler(emu: MKS937BEmulator, number: int, value: str | None) -> str:
        relay = _relay(number, emu)
        if value is not None:
            bounds = SENSOR_RANGE_TORR[SENSORS[relay_channel(number)]]
            relay[key] = emu._torr_value(value, *bounds)
            if key == "setpoint":
                _auto_hysteresis(relay)
        return emu._setpoint_text(relay[key])

    return handler


def _auto_hysteresis(relay: dict) -> None:
    relay["hysteresis"] = relay["setpoint"] * (1.1 if relay["direction"] == "BELOW" else 0.9)


def _relay_word(key: str, options: tuple[str, ...]):
    def handler(emu: MKS937BEmulator, number: int, value: str | None) -> str:
        relay = _relay(number, emu)
        if value is not None:
            if value.upper() not in options:
                raise Refused(169)
            relay[key] = value.upper()
            if key == "direction":
                _auto_hysteresis(relay)
        return relay[key]

    return handler


def _relay_status(emu: MKS937BEmulator, number: int, value: str | None) -> str:
    _query(value)
    _relay(number, emu)
    return emu.relay_status(number)


INDEXED = {
    "PR": _pressure, "PC": _combination, "CP": _power, "T": _status,
    "PRO": _ion_pressure("protection", PROTECTION_RANGE_TORR, table="protection"),
    "CSP": _ion_pressure("setpoint", CONTROL_RANGE_TORR),
    "CHP": _ion_pressure("hysteresis", HYSTERESIS_RANGE_TORR),
    "CSE": _ion_word("source", (*SOURCES, "OFF")),
    "CTL": _ion_word("mode", ("AUTO", "SAFE", "OFF")),
    "XSP": _ion_word("extended", ("ON", "OFF")),
    "GT": _ion_word("gas", ("Nitrogen", "Argon", "Helium"), table="gas_type"),
    "UC": _gas_correction,
    "SP": _relay_pressure("setpoint"), "SH": _relay_pressure("hysteresis"),
    "SD": _relay_word("direction", ("ABOVE", "BELOW")),
    "EN": _relay_word("enable", ("ENABLE", "SET", "CLEAR")),
    "SS": _relay_status,
}
