"""The MethodSCRIPT online commands walked over `sim serve` by a client written from the
protocol (LF-terminated ASCII lines, the command's letter echoed, `!XXXX` errors), not
the project's driver: pyserial `socket://` on MultiEmStat4 channel ports."""

from __future__ import annotations

import re

import pytest
import serial
from conftest import HOST

OCP = ["var p", "set_pgstat_mode 2", "meas_loop_ocp p 100m {run}", "pck_start", "pck_add p",
       "pck_end", "endloop", "on_finished:", "cell_off"]
PACKAGE = re.compile(r"Pab[0-9A-F]{7}[a-zA-Z ]")


class Channel:
    def __init__(self, port: int):
        self.ser = serial.serial_for_url(f"socket://{HOST}:{port}", timeout=2)

    def send(self, *lines: str) -> None:
        self.ser.write("".join(f"{line}\n" for line in lines).encode("ascii"))

    def line(self) -> str:
        raw = self.ser.readline()
        assert raw.endswith(b"\n"), raw
        return raw[:-1].decode("ascii")

    def ask(self, command: str, lines: int = 1) -> list[str]:
        self.send(command)
        return [self.line() for _ in range(lines)]

    def until(self, wanted: str) -> list[str]:
        """Lines up to and including `wanted` (a streaming script may come first)."""
        seen = [self.line()]
        while seen[-1] != wanted:
            seen.append(self.line())
        return seen

    def script(self, command: str, lines: list[str]) -> str:
        self.send(command, *lines, "")
        return self.line()


@pytest.fixture
def channel(lab):
    ch = Channel(lab.ports["mes4/1"])
    yield ch
    ch.ser.timeout = 2
    ch.send("Z")  # leave the channel idle
    line = ch.line()
    while line not in ("Z", "Z!0006"):
        line = ch.line()
    if line == "Z":
        ch.until("")
    ch.ser.close()


def ocp(run: str) -> list[str]:
    return [line.format(run=run) for line in OCP]


def test_identity_commands(lab):
    first, second = Channel(lab.ports["mes4/1"]), Channel(lab.ports["mes4/2"])
    try:
        firmware = first.ask("t", lines=2)
        assert firmware[0].startswith("tmes4lr") and firmware[1].endswith("*")
        assert first.ask("v")[0].startswith("v") and len(first.ask("v")[0]) > 1
        serials = [first.ask("i")[0], second.ask("i")[0]]
        assert all(s.startswith("i") and len(s) > 1 for s in serials)
        assert serials[0] != serials[1]  # each channel is an EmStat4 module of its own
    finally:
        first.ser.close()
        second.ser.close()


def test_refusals_on_an_idle_channel(lab):
    fresh = Channel(lab.ports["mes4/16"])  # nothing loaded on it by any other test
    try:
        assert fresh.ask("Z") == ["Z!0006"]
        assert fresh.ask("h") == ["h!0006"]
        assert fresh.ask("H") == ["H!0006"]
        assert fresh.ask("r") == ["r!0006"]  # no script in RAM
        assert fresh.ask("Fmscr") == ["F!0006"]
        assert fresh.ask("Lmscr") == ["L!0006"]  # flash empty
        assert fresh.ask("x") == ["x!0003"]
        assert fresh.ask("G08") == ["G!0007"]  # registers are not modelled
        assert fresh.ask("S08 1") == ["S!0007"]
        assert fresh.script("l", ["var p", "no_such_command"]) == "l!4001: Line 2, Col 1"
        assert fresh.script("e", ["var p", "no_such_command"]) == "e!4001: Line 2, Col 1"
        assert fresh.ask("t", lines=2)[1].endswith("*")  # the line goes on
    finally:
        fresh.ser.close()


def test_load_store_and_run_from_flash(channel):
    assert channel.script("l", ocp("300m")) == "l"  # loaded, not run
    assert channel.ask("Fmscr") == ["F"]
    assert channel.script("l", ["var x"]) == "l"  # RAM now holds another script
    assert channel.ask("Lmscr") == ["L"]  # the stored one back
    assert channel.ask("r") == ["r"]
    out = channel.until("")
    assert out[0] == "M000B" and out[-2:] == ["*", ""]
    assert len([line for line in out if PACKAGE.fullmatch(line)]) == 3
    assert channel.ask("r") == ["r"]  # the script stays in RAM: it runs again
    assert channel.until("")[-2:] == ["*", ""]


def test_halt_resume_and_abort(channel):
    assert channel.script("e", ocp("20")) == "e"
    assert channel.line() == "M000B"
    assert PACKAGE.fullmatch(channel.line())
    channel.send("h")
    assert all(PACKAGE.fullmatch(line) for line in channel.until("h")[:-1])
    channel.ser.timeout = 0.4
    assert channel.ser.readline() == b""  # halted: nothing is measured
    channel.ser.timeout = 2
    assert channel.ask("h") == ["h!0006"]
    assert channel.script("e", ["var p"]) == "e!0006"  # the script is skipped
    assert channel.script("l", ["var p"]) == "l!0006"
    assert channel.ask("H") == ["H"]
    assert PACKAGE.fullmatch(channel.line())  # measuring again
    channel.send("Z")
    out = channel.until("")
    assert "Z" in out and "*" in out


def test_abort_of_a_halted_script(channel):
    assert channel.script("e", ocp("20")) == "e"
    assert channel.line() == "M000B"
    channel.send("h")
    channel.until("h")
    channel.send("Z")
    out = channel.until("")
    assert out[0] == "Z" and "*" in out
    assert channel.ask("H") == ["H!0006"]
    assert channel.ask("Z") == ["Z!0006"]
