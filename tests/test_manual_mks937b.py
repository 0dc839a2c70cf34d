"""The MKS 937B's serial command summary walked over `sim serve` by a client written from
the manual (937B operation manual §9: `@<aaa><cmd>?;FF` and `@<aaa><cmd>!<value>;FF`,
answered `@<aaa>ACK<value>;FF` or `@<aaa>NAK<code>;FF`) through pyserial's `socket://`,
not by the project's driver: pressures, combination readings, ion-gauge status and
protection, channel power, units, relays, identity, address and baud rate, and the NAK
answers to bad commands and values. Then the station's identity: the default station's
two controllers report different serial numbers, and a station file sets one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import serial
import yaml
from conftest import HOST

from lipon_hw.errors import InputError
from lipon_hw.sim.emulators.mks937b_sensors import default_state
from lipon_hw.station import default_station_text, load_station

REPLY = re.compile(rb"@(\d{3})(ACK|NAK)([ -~]*?);FF")
PRESSURE = re.compile(r"\d\.\d{3}E[+-]\d+")


class Controller:
    """A client of one 937B on an RS-485 line reached through a TCP bridge."""

    def __init__(self, port: int, address: int = 253):
        self.port = serial.serial_for_url(f"socket://{HOST}:{port}", timeout=3)
        self.address = address

    def close(self) -> None:
        self.port.close()

    def send(self, command: str, value: str | None = None) -> tuple[bool, str]:
        """(acknowledged, body) of one query (value None) or set."""
        suffix = "?" if value is None else f"!{value}"
        self.port.write(f"@{self.address:03d}{command}{suffix};FF".encode("ascii"))
        match = REPLY.fullmatch(self.port.read_until(b";FF"))
        assert match, "no reply in the 937B's format"
        assert int(match[1]) == self.address
        return match[2] == b"ACK", match[3].decode("ascii")

    def ask(self, command: str, value: str | None = None) -> str:
        ok, body = self.send(command, value)
        assert ok, f"{command} refused with NAK{body}"
        return body

    def nak(self, command: str, value: str | None = None) -> int:
        ok, body = self.send(command, value)
        assert not ok, f"{command} answered {body}"
        return int(body)


@pytest.fixture
def gauges(lab):
    """The sputter tool's controller, its settings back to the factory's afterwards."""
    client = Controller(lab.ports["gauges"])
    emulator = lab.lab.emulators["gauges"]
    calibration = emulator.calibration
    yield client
    client.port.write(b"@253U!TORR;FF@253CP1!ON;FF@253CP3!ON;FF")
    client.close()
    emulator.unit, emulator.address, emulator.calibration = "TORR", 253, calibration
    emulator.power = dict.fromkeys(emulator.power, True)
    emulator.state = default_state()


def test_identity_and_system_settings(gauges):
    assert gauges.ask("MD") == "937B"
    assert gauges.ask("SN").isdigit()
    assert re.fullmatch(r"\d+\.\d+", gauges.ask("FV"))
    assert gauges.ask("HV")
    assert gauges.ask("MT").split() == ["CC", "CM", "NC"]
    assert gauges.ask("AD") == "253"
    assert gauges.ask("BR") == "9600"
    assert gauges.ask("BR", "19200") == "19200"  # manual: @001BR!19200;FF → @001ACK19200;FF
    assert gauges.nak("BR", "1200") == 172
    assert gauges.ask("BR", "9600") == "9600"
    assert gauges.nak("SN", "123") == 175  # read-only
    assert gauges.nak("MD", "937A") == 175


def test_a_new_address_answers_from_then_on(gauges):
    assert gauges.nak("AD", "254") == 172  # the broadcast address
    assert gauges.ask("AD", "5") == "005"  # the reply still comes from 253
    gauges.address = 5
    assert gauges.ask("MD") == "937B"
    gauges.port.write(b"@253MD?;FF")  # nobody at 253 any more: silence
    gauges.port.timeout = 0.2
    assert gauges.port.read(1) == b""
    gauges.port.timeout = 3
    assert gauges.ask("AD", "253") == "253"


def test_pressures_units_and_combinations(gauges):
    chamber = gauges.ask("PR1")
    assert PRESSURE.fullmatch(chamber) and 600 < float(chamber) < 900  # vented chamber, Torr
    assert gauges.ask("PR3") == "1.000E-1"  # manometer at its 0.1 Torr full scale
    assert PRESSURE.fullmatch(gauges.ask("PR2"))  # the cold cathode's Pirani
    readings = gauges.ask("PRZ").split(" ")
    assert len(readings) == 6 and readings[2] == "1.000E-1"
    assert readings[3:] == ["MISCONN"] * 3
    assert PRESSURE.fullmatch(gauges.ask("PC1"))
    assert gauges.ask("PC2") == "OFF"  # the second combination is not set up
    assert len(gauges.ask("PCZ").split(" ")) == 2
    assert gauges.ask("U") == "TORR"
    assert gauges.ask("U", "PASCAL") == "PASCAL"
    assert gauges.ask("PR3") == "1.333E+1"  # 0.1 Torr in Pa
    assert gauges.ask("U", "mbar") == "MBAR"
    assert gauges.ask("PR3") == "1.333E-1"
    assert gauges.nak("U", "FURLONG") == 169
    assert gauges.ask("U", "TORR") == "TORR"


def test_channel_power_and_ion_gauge_status(gauges):
    assert gauges.ask("T1") == "P"  # at atmosphere the cold cathode is protected off
    assert gauges.ask("PRO1") == "5.00E-3"  # manual: default 5x10^-3 Torr
    assert gauges.ask("PRO1", "1.00E-3") == "1.00E-3"
    assert gauges.nak("PRO1", "1.00E-1") == 172  # valid 1e-5..1e-2 Torr
    assert gauges.nak("PRO1", "lots") == 169
    assert gauges.nak("T3") == 152  # a manometer is no ion gauge
    assert gauges.nak("T5") == 151  # nothing on channel 5
    assert gauges.nak("T2") == 160  # ion gauges sit on 1, 3, 5
    assert gauges.ask("CP1", "OFF") == "OFF"
    assert gauges.ask("CP1") == "OFF"
    assert gauges.ask("PR1") == "OFF"
    assert gauges.ask("T1") == "O"
    assert gauges.ask("CP1", "ON") == "ON"
    assert gauges.nak("CP1", "MAYBE") == 169
    assert gauges.ask("CSP1", "5.00E-3") == "5.00E-3"
    assert gauges.nak("CSP1", "1.00E+0") == 172
    assert gauges.ask("CHP1", "7.50E-3") == "7.50E-3"
    assert gauges.ask("CSE1") == "A2" and gauges.ask("CSE1", "B1") == "B1"
    assert gauges.nak("CSE1", "D1") == 169
    assert gauges.ask("CTL1", "safe") == "SAFE"
    assert gauges.ask("XSP1", "ON") == "ON"
    assert gauges.ask("GT1", "Argon") == "Argon"
    assert gauges.nak("GT1", "Xenon") == 169


def test_gas_correction_scales_the_cold_cathode(lab, gauges):
    emulator = lab.lab.emulators["gauges"]
    emulator.calibration = 0.5  # far off, so that doubling stays within the range
    assert gauges.ask("UC1") == "1.0"
    before = float(gauges.ask("PR1"))
    assert gauges.ask("UC1", "2.0") == "2.0"
    assert float(gauges.ask("PR1")) == pytest.approx(2 * before, rel=0.1)  # 1 % noise each
    assert gauges.nak("UC1", "20") == 172
    assert gauges.nak("UC3") == 152


def test_relays_follow_their_channel(lab, gauges):
    lab.lab.emulators["gauges"].calibration = 1.0  # channel 1 reads 760 Torr ± 1 %
    assert gauges.ask("SS1") == "CLEAR"  # factory: disabled
    assert gauges.ask("SD1") == "BELOW"
    assert gauges.ask("SP1", "1.00E+3") == "1.00E+3"  # above the vented chamber's pressure
    assert gauges.ask("SH1") == "1.10E+3"  # auto hysteresis: 10 % beyond the set point
    assert gauges.ask("EN1", "ENABLE") == "ENABLE"
    assert gauges.ask("SS1") == "SET"  # below 1000 Torr: energised
    assert gauges.ask("SD1", "ABOVE") == "ABOVE"
    assert gauges.ask("SH1") == "9.00E+2"
    assert gauges.ask("SS1") == "CLEAR"  # below the 900 Torr reset value
    assert gauges.ask("SP1", "7.00E+2") == "7.00E+2"
    assert gauges.ask("SS1") == "SET"  # above 700 Torr
    assert gauges.ask("SP1", "8.00E+2") == "8.00E+2"  # reset value 720 Torr
    assert gauges.ask("SS1") == "SET"  # between reset value and set point: it holds
    assert gauges.ask("SP1", "9.00E+2") == "9.00E+2"
    assert gauges.ask("SS1") == "CLEAR"  # below the 810 Torr reset value
    assert gauges.ask("SH1", "7.00E+2") == "7.00E+2"
    assert gauges.ask("EN1", "CLEAR") == "CLEAR"
    assert gauges.ask("SS1") == "CLEAR"
    assert gauges.ask("EN2", "SET") == "SET" and gauges.ask("SS2") == "SET"
    assert gauges.nak("SP7") == 151  # relays 7 and 8 follow channel 4: no gauge
    assert gauges.nak("SP13") == 160
    assert gauges.nak("SP5", "2.00E-1") == 172  # beyond the manometer's 0.1 Torr
    assert gauges.nak("SD1", "SIDEWAYS") == 169
    assert gauges.nak("EN1", "MAYBE") == 169


def test_unknown_and_malformed_messages_get_nak(gauges):
    assert gauges.nak("XYZ") == 160
    assert gauges.nak("PR7") == 160
    assert gauges.nak("PRZ", "1") == 175
    gauges.port.write(b"@253pr1?;FF")  # lower case is no 937B message
    assert gauges.port.read_until(b";FF") == b"@253NAK160;FF"
    gauges.port.write(b"@254MD?;FF")  # broadcast: answered from the controller's address
    assert gauges.port.read_until(b";FF") == b"@253ACK937B;FF"
    gauges.port.write(b"@017MD?;FF@253MD?;FF")  # another controller on the line: silent
    assert gauges.port.read_until(b";FF") == b"@253ACK937B;FF"


# --- identity from the station --------------------------------------------------------------


def test_the_default_stations_controllers_differ(lab):
    serials = []
    for endpoint in ("gauges", "evap_gauges"):
        client = Controller(lab.ports[endpoint])
        try:
            serials.append(client.ask("SN"))
        finally:
            client.close()
    assert serials[0] != serials[1]
    assert serials == [lab.lab.emulators[e].serial for e in ("gauges", "evap_gauges")]


def station_with(tmp_path: Path, instrument: str, **sim) -> Path:
    spec = yaml.safe_load(default_station_text())
    spec["instruments"][instrument].setdefault("sim", {}).update(sim)
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_a_station_sets_serial_and_address(tmp_path):
    path = station_with(tmp_path, "process_gauge", serial="1100000042", address=7)
    lab = load_station(path).connect(lambda: 0.0).sim
    assert lab.emulators["gauges"].handle(b"@007SN?;FF") == b"@007ACK1100000042;FF"
    smu = station_with(tmp_path, "smu", serial="04412345")
    assert load_station(smu).connect(lambda: 0.0).sim.potentiostats["smu"].identity == (
        "KEITHLEY INSTRUMENTS INC.,MODEL 2450,04412345,1.0.0i"
    )


@pytest.mark.parametrize(
    "instrument, sim, message",
    [
        (
            "process_gauge",
            {"serial": 1103937001},
            r"instruments\.process_gauge\.sim\.serial: serial 1103937001 must be a quoted string",
        ),
        (
            "chamber_gauge",
            {"serial": "11-0"},
            r"instruments\.chamber_gauge\.sim\.serial: serial '11-0'",
        ),
        (
            "evap_gauge",
            {"address": 254},
            r"instruments\.evap_gauge\.sim\.address: address 254 must be a whole number 1\.\.253",
        ),
        ("smu", {"serial": "a b"}, r"instruments\.smu\.sim\.serial: serial 'a b' must be"),
    ],
)
def test_a_bad_identity_is_one_sentence_naming_the_field(tmp_path, instrument, sim, message):
    path = station_with(tmp_path, instrument, **sim)
    with pytest.raises(InputError, match=rf"station\.yaml:\d+: {message}"):
        load_station(path)
