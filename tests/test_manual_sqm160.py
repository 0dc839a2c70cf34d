"""The SQM-160 command summary (manual ch. 8) walked over `sim serve` by a client written
from the manual, not the project's driver (`inficon_client`: its own framing and 14-bit
CRC over pyserial `socket://`): every reading and setting command, the 'C'/'D' statuses."""

from __future__ import annotations

import re

import pytest
from conftest import HOST
from inficon_client import InficonClient, crc

NUMBER = r"\s*-?\d+\.\d+"


def test_crc_matches_the_manual_examples():
    assert crc(b"#@") == b"O7"
    assert crc(b"$C?") == b"g/"


@pytest.fixture
def qcm(lab):
    client = InficonClient(HOST, lab.ports["qcm"])
    yield client
    client.ser.close()


def test_readings(qcm):
    assert qcm.ok("@").startswith("MON Ver")
    channels = int(qcm.ok("J"))
    assert channels in (2, 6)
    for command in ("L1", "L1?", "M", "N1", "O", "R1"):
        assert re.fullmatch(NUMBER, qcm.ok(command)), command
    assert float(qcm.ok("P1")) > 5e6  # the crystal on sensor 1 oscillates
    assert float(qcm.ok("P2")) == 0.0  # no crystal on sensor 2
    fields = qcm.ok("W").split()
    assert fields[0] == "00.00" and len(fields) == 1 + 3 * channels
    assert qcm.ok("Y") in ("0", "1") and qcm.ok("Y") == "0"  # cleared on read


def test_zeroing_and_settings_round_trip(qcm):
    assert qcm.ok("S") == "" and qcm.ok("T") == ""
    assert float(qcm.ok("N1")) == pytest.approx(0.0, abs=0.002)
    film = qcm.ok("A1?")
    assert qcm.ok(f"A1{film}") == "" and qcm.ok("A1?") == film  # number, then the record
    assert qcm.ok("D1") == ""
    for record in ("B", "C"):
        values = qcm.ok(f"{record}?")
        assert qcm.ok(f"{record} {values}") == "" and qcm.ok(f"{record}?") == values


def test_shutter_relay(qcm):
    assert qcm.ok("U0") == "" and qcm.ok("U?") == "0"
    assert qcm.ok("U1") == "" and qcm.ok("U?") == "1"
    assert qcm.ok("U0") == "" and qcm.ok("U?") == "0"


@pytest.mark.parametrize("command, status", [
    ("X", "C"), ("K1", "C"), ("L9", "D"), ("Lx", "D"), ("U5", "D"), ("D0", "D"),
    ("A1 nonsense", "D"), ("B 1 2", "D")])
def test_error_statuses(qcm, command, status):
    assert qcm.ask(command) == (status, "")


def test_a_corrupt_packet_gets_no_reply_and_the_next_one_is_answered(qcm):
    packet = qcm.packet("@")
    assert qcm.silent_after(packet[:-1] + bytes([packet[-1] ^ 1]))
    assert qcm.ok("@").startswith("MON Ver")


def test_defaults_reset_the_film(qcm):
    original = qcm.ok("A2?")
    edited = "MYFILM  " + original[8:]  # the name is 8 characters
    assert qcm.ok(f"A2{edited}") == "" and qcm.ok("A2?") == edited
    assert qcm.ok("Z") == ""
    assert qcm.ok("A2?") == original
