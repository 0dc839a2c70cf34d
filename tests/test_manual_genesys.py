"""The Genesys GEN command summary (manual §7.7) walked over `sim serve` by a client
written from the manual, not the project's driver: CR-terminated ASCII over pyserial
`socket://`, `ADR` first, optional `$XX` checksum, and the C0x/E0x error replies."""

from __future__ import annotations

import re

import pytest
import serial
from conftest import HOST

READING = re.compile(r"\d+\.\d+")


class GenesysClient:
    def __init__(self, port: int):
        self.ser = serial.serial_for_url(f"socket://{HOST}:{port}", timeout=2)

    def ask(self, command: str, checksum: bool = False) -> str:
        if checksum:  # §7.5.5: `$` and the two hex digits of the byte sum mod 256
            command += f"${sum(command.encode('ascii')) % 256:02X}"
        self.ser.write(command.encode("ascii") + b"\r")
        reply = self.ser.read_until(b"\r")
        assert reply.endswith(b"\r"), (command, reply)
        return reply[:-1].decode("ascii")


@pytest.fixture
def supply(lab):
    client = GenesysClient(lab.ports["evap_supply"])
    assert client.ask("ADR 6") == "OK"
    yield client
    assert client.ask("RST") == "OK"  # output off, settings to factory
    client.ser.close()


def test_identity_and_remote_state(supply):
    assert supply.ask("IDN?") == "LAMBDA,GEN6-200"
    assert supply.ask("REV?").startswith("REV")
    assert supply.ask("SN?") and supply.ask("DATE?")
    assert supply.ask("MDAV?") in ("0", "1")
    assert supply.ask("MS?") == "1"
    assert supply.ask("RMT REM") == "OK"
    assert supply.ask("RMT?") == "REM"
    assert supply.ask("CLS") == "OK"


def test_programming_and_readback(supply, lab):
    assert supply.ask("PV 5.5") == "OK"
    assert supply.ask("PV?") == "5.5"
    assert supply.ask("PC 20") == "OK"
    assert supply.ask("PC?") == "20"
    assert supply.ask("OVP 7") == "OK" and supply.ask("OVP?") == "7"
    assert supply.ask("UVL 0.5") == "OK" and supply.ask("UVL?") == "0.5"
    assert supply.ask("OVM") == "OK" and supply.ask("OVP?") == "7.500"
    assert READING.fullmatch(supply.ask("MV?")) and READING.fullmatch(supply.ask("MC?"))
    assert supply.ask("OUT?") == "OFF" and supply.ask("MODE?") == "OFF"
    assert supply.ask("OUT ON") == "OK"
    assert supply.ask("OUT?") == "ON" and supply.ask("MODE?") in ("CV", "CC")
    assert lab.lab.world.evaporator.supply_readings()["output_on"]
    assert len(supply.ask("DVC?").split(",")) == 6
    assert re.fullmatch(r"MV\(.+\),PV\(.+\),MC\(.+\),PC\(.+\),SR\([0-9A-F]{2}\),FR\(00\)",
                        supply.ask("STT?"))
    assert supply.ask("OUT OFF") == "OK"
    assert supply.ask("\\") == "OK"  # repeats the last command (OUT OFF)


def test_checksummed_commands_get_checksummed_replies(supply):
    reply = supply.ask("IDN?", checksum=True)
    text, _, digits = reply.partition("$")
    assert text == "LAMBDA,GEN6-200" and digits == f"{sum(text.encode()) % 256:02X}"
    assert supply.ask("IDN?$00") == "C04$" + f"{sum(b'C04') % 256:02X}"


def test_protection_and_memory_commands(supply):
    assert supply.ask("FLD?") == "OFF"
    assert supply.ask("FBD 12") == "OK" and supply.ask("FBD?") == "12"
    assert supply.ask("FBDRST") == "OK" and supply.ask("FBD?") == "0"
    assert supply.ask("AST ON") == "OK" and supply.ask("AST?") == "ON"
    assert supply.ask("FILTER 46") == "OK" and supply.ask("FILTER?") == "46"
    assert supply.ask("SENA 0A") == "OK" and supply.ask("SENA?") == "0A"
    assert supply.ask("FENA 08") == "OK" and supply.ask("FENA?") == "08"
    assert supply.ask("PV 4") == "OK" and supply.ask("SAV") == "OK"
    assert supply.ask("PV 3") == "OK" and supply.ask("AST OFF") == "OK"
    assert supply.ask("RCL") == "OK"
    assert float(supply.ask("PV?")) == 4.0 and supply.ask("AST?") == "ON"


def test_foldback_switches_the_output_off_in_cc(supply, lab):
    tool = lab.lab.world.evaporator
    assert supply.ask("PV 6") == "OK" and supply.ask("PC 5") == "OK"
    assert supply.ask("FLD ON") == "OK"
    assert supply.ask("OUT ON") == "OK"
    assert tool.supply_readings()["mode"] == "CC"  # a boat of a few mΩ: current-limited
    assert supply.ask("OUT?") == "OFF"  # folded back
    assert not tool.supply_readings()["output_on"]
    assert supply.ask("STT?").endswith("FR(08)")
    assert supply.ask("FEVE?") == "08" and supply.ask("FEVE?") == "00"
    assert supply.ask("FLD OFF") == "OK"
    assert supply.ask("OUT ON") == "OK" and supply.ask("OUT?") == "ON"
    assert supply.ask("STT?").endswith("FR(00)")


@pytest.mark.parametrize("command, reply", [
    ("FOO", "C01"), ("PV", "C02"), ("PV abc", "C03"), ("IDN? 1", "C03"), ("PV 7", "E01"),
    ("OVP 0.1", "E04"), ("UVL 9", "E06"), ("PC 300", "C05"), ("FBD 300", "C03"),
    ("FILTER 20", "C03"), ("FLD MAYBE", "C03"), ("SENA XYZ", "C03"), ("RMT 7", "C03")])
def test_error_replies(supply, command, reply):
    assert supply.ask(command) == reply


def test_other_addresses_are_silent(lab):
    client = GenesysClient(lab.ports["evap_supply"])
    client.ser.timeout = 0.3
    try:
        client.ser.write(b"IDN?\r")  # nobody addressed yet
        assert client.ser.read(1) == b""
        client.ser.write(b"ADR 7\r")  # another supply on the bus
        assert client.ser.read(1) == b""
    finally:
        client.ser.close()
