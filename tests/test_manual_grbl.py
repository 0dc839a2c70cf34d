"""The prober's GRBL 1.1 stage over `sim serve` by a client written from gnea/grbl's
interface.md (not the project's driver): lines ended by LF answered `ok`/`error:N`,
real-time `?` answered by a `<…>` report and no `ok`, ctrl-x answered by the banner,
a soft-limit alarm that waits for the reset. Times are checked from below only (a
move cannot end sooner than its profile), so a loaded machine cannot fail them."""

from __future__ import annotations

import re
import time

import pytest
import serial
from conftest import HOST

REPORT = re.compile(r"<(\w+)(?::\d)?\|MPos:(-?[\d.]+),(-?[\d.]+),(-?[\d.]+)\|.*>")


class GrblClient:
    def __init__(self, port: int):
        self.ser = serial.serial_for_url(f"socket://{HOST}:{port}", timeout=3)

    def line(self) -> str:
        raw = self.ser.read_until(b"\r\n")
        assert raw.endswith(b"\r\n"), raw
        return raw[:-2].decode("ascii")

    def send(self, text: str) -> list[str]:
        """One line; every line up to and including its `ok` or `error:N`."""
        self.ser.write(text.encode("ascii") + b"\n")
        lines = [self.line()]
        while lines[-1] != "ok" and not lines[-1].startswith(("error:", "ALARM:")):
            lines.append(self.line())
        return lines

    def status(self) -> tuple[str, tuple[float, float, float]]:
        self.ser.write(b"?")
        match = REPORT.fullmatch(self.line())
        assert match, "not a status report"
        return match[1], (float(match[2]), float(match[3]), float(match[4]))

    def wait_idle(self, timeout_s: float = 10.0) -> tuple[float, float, float]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state, pos = self.status()
            if state == "Idle":
                return pos
            time.sleep(0.02)
        raise AssertionError("the stage never came to rest")

    def reset(self) -> list[str]:
        self.ser.write(b"\x18")
        lines = [self.line()]
        while not lines[-1].startswith("Grbl "):
            lines.append(self.line())
        return lines


@pytest.fixture(scope="module")
def client(lab):
    client = GrblClient(lab.ports["stage"])
    yield client
    client.ser.close()


def test_banner_help_build_info_and_settings(client):
    assert client.reset()[-1] == "Grbl 1.1h ['$' for help]"
    assert client.send("$")[0].startswith("[HLP:$$ $# $G $I")
    version, options, ok = client.send("$I")
    assert version.startswith("[VER:1.1") and options.startswith("[OPT:") and ok == "ok"
    settings = dict(line[1:].split("=") for line in client.send("$$")[:-1])
    assert float(settings["110"]) > 0 and float(settings["130"]) > 0
    assert client.send("") == ["ok"]  # an empty line is valid


def test_a_move_takes_its_profile_and_ends_at_rest(client):
    client.wait_idle()
    start = client.status()[1]
    x = start[0] - 20.0 if start[0] - 20.0 >= -390 else start[0] + 20.0
    settings = dict(line[1:].split("=") for line in client.send("$$")[:-1])
    rate, accel = float(settings["110"]) / 60, float(settings["120"])  # mm/s, mm/s²
    # a trapezoid (a triangle when it never reaches the rate): ramp up, cruise, ramp down
    ramp = rate / accel
    least_s = 20.0 / rate + ramp if rate * ramp <= 20.0 else 2 * (20.0 / accel) ** 0.5
    sent = time.monotonic()
    assert client.send(f"G90 G53 G0 X{x:.3f}") == ["ok"]  # queued, not done
    pos = client.wait_idle()
    assert time.monotonic() - sent >= least_s * 0.95
    assert pos[0] == pytest.approx(x, abs=1e-3)


def test_a_dwell_answers_when_it_is_over(client):
    client.wait_idle()
    sent = time.monotonic()
    assert client.send("G4 P0.3") == ["ok"]
    assert time.monotonic() - sent >= 0.3 * 0.95


def test_errors_of_the_code_table(client):
    assert client.send("$Q") == ["error:3"]
    assert client.send("G4") == ["error:28"]
    assert client.send("G53 G0 G1 X-2") == ["error:21"]
    assert client.send("$J=G53 X10 F100") == ["error:15"]  # a jog beyond travel


def test_a_soft_limit_alarm_waits_for_reset_and_unlock(client):
    client.wait_idle()
    assert client.send("G53 G0 X10") == ["ALARM:2"]
    assert client.line() == "[MSG:Reset to continue]"
    assert client.reset()[-1].startswith("Grbl ")
    assert client.line() == "[MSG:'$H'|'$X' to unlock]"
    assert client.send("G53 G0 X-2") == ["error:9"]
    assert client.status()[0] == "Alarm"
    assert client.send("$X") == ["[MSG:Caution: Unlocked]", "ok"]
    assert client.status()[0] == "Idle"


def test_z_at_contact_height_touches_the_chuck(lab, client):
    chuck = lab.lab.chuck
    client.wait_idle()
    before = chuck.touchdowns
    assert client.send(f"G53 G1 Z{chuck.contact_z_mm:.3f} F600") == ["ok"]
    client.wait_idle()
    assert chuck.touchdowns == before + 1
    assert client.send("G53 G1 Z-3 F600") == ["ok"]
    client.wait_idle()
    assert not any(c.connected for c in (lab.lab.cell("probe_pstat", ch)
                                         for ch in chuck.card.channels))
