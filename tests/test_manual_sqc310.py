"""The SQC-310 command summary (manual PN 074-550-P1C §4.3) walked over `sim serve` by a
client written from the manual (`inficon_client`), not the project's driver: readings,
parameters, relays, status flags, run state, and the 'C'/'D'/'E'/'F' statuses."""

from __future__ import annotations

import re

import pytest
from conftest import HOST
from inficon_client import InficonClient

NUMBER = r"\s*-?\d+\.\d+"


def test_the_manuals_num_channels_example():
    assert InficonClient.packet("J") == b"!#J" + bytes([79, 56])


@pytest.fixture
def ctrl(lab):
    client = InficonClient(HOST, lab.ports["evap_ctrl"])
    yield client
    client.ok("U1")  # stop: no layer left running
    client.ser.close()


def test_readings(ctrl):
    assert ctrl.ok("@") == "SQC-310 Ver 6.01"
    assert ctrl.ok("J") == "4"
    assert len(ctrl.ok("K1").split()) == 1 + 4 * 4  # time, then rate dev thk power per output
    assert len(ctrl.ok("K2").split()) == 1 + 3 * 4  # time, then rate thk freq per sensor
    for command in ("L1", "M1", "N1", "O1", "Q1"):
        assert re.fullmatch(NUMBER + r" ?", ctrl.ok(command)), command
    active, frequency, life = ctrl.ok("PA1").split()
    assert active in ("0", "1") and float(frequency) > 5e6 and 0 <= float(life) <= 100
    assert float(ctrl.ok("P2")) == 0.0  # no crystal on sensor 2


def test_parameters_read_back(ctrl):
    assert re.fullmatch(r"1,\d+ 2,\d+ ?", ctrl.ok("B? 1 2"))
    tooling = ctrl.ok("HA1? 1")
    assert ctrl.ok(f"HA1 {tooling.strip()}") == "" and ctrl.ok("HA1? 1") == tooling
    assert ctrl.ok("HB1? 3").startswith("3,")
    assert ctrl.ok("A2 1? 1 2 3").count(",") == 3


def test_status_flags_and_relays_follow_the_run_state(ctrl, lab):
    tool = lab.lab.world.evaporator
    assert ctrl.ok("HC1? 5 6") == "5,0 6,0 "
    assert ctrl.ok("HD1? 1") == "1,0 "
    assert ctrl.ok("GD1 1") == ""  # override relay 1 (the source shutter) while stopped
    assert ctrl.ok("GC1? 1") == "1,1 " and tool.s.shutter_open
    assert ctrl.ok("GD1 2") == "" and not tool.s.shutter_open
    assert ctrl.ask("GE1 1") == ("D", "")  # a source controls relay 1
    assert ctrl.ok("GE5 1") == "" and ctrl.ok("GC5? 1") == "1,1 "
    assert ctrl.ok("GE5 3") == "" and ctrl.ok("GC5? 1") == "1,0 "
    assert ctrl.ask("U0") == ("E", "")  # layer 1 has no rate setpoint yet
    assert ctrl.ask("D1 1,0") == ("D", "")  # nor can it have a zero one
    assert ctrl.ok("D1 1,100") == "" and ctrl.ok("D1? 1") == "1,100 "  # 1.00 Å/s
    assert ctrl.ok("U0") == ""  # start the layer
    assert ctrl.ok("HC1? 6") == "6,1 " and ctrl.ok("HD1? 1") == "1,1 "
    assert ctrl.ok("HC2? 6") == "6,0 "
    assert ctrl.ask("GD1 2") == ("E", "")  # overriding is for a stopped controller
    assert ctrl.ok("V").split()[0] != "0"
    assert ctrl.ok("U1") == ""
    assert ctrl.ok("HD1? 1") == "1,0 "


@pytest.mark.parametrize("command, status", [
    ("X", "C"), ("K3 1", "D"), ("GA1? 1", "C"), ("HE1? 1", "C"), ("L9", "D"), ("K7", "D"),
    ("HC1? 12", "D"), ("HC9? 1", "D"), ("HD1? 2", "D"), ("GD1 7", "D"), ("GD99 1", "D"),
    ("U99", "D")])
def test_error_statuses(ctrl, command, status):
    assert ctrl.ask(command) == (status, "")


def test_a_corrupt_packet_is_answered_with_status_f(ctrl):
    packet = ctrl.packet("@")
    ctrl.ser.write(packet[:-1] + bytes([packet[-1] ^ 1]))
    head = ctrl.ser.read(3)
    assert head[:1] == b"!" and head[2:3] == b"F"
    ctrl.ser.read(2)
    assert ctrl.ok("@") == "SQC-310 Ver 6.01"
