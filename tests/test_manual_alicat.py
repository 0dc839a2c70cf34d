"""The Alicat command summary walked over `sim serve` by a client written from the manual
and the serial-primer facts (not the project's driver): raw CR-terminated ASCII over
pyserial `socket://`, every command a flow-controller client sends, and its error paths."""

from __future__ import annotations

import pytest
import serial
from conftest import HOST


class AlicatClient:
    """Unit A on an RS-232 line: `<unit><command>\\r` → CR-terminated line(s)."""

    def __init__(self, port: int, unit: str = "A"):
        self.ser = serial.serial_for_url(f"socket://{HOST}:{port}", timeout=2)
        self.unit = unit

    def ask(self, command: str, lines: int = 1) -> list[str]:
        self.ser.write(f"{self.unit}{command}\r".encode("ascii"))
        out = [self.ser.read_until(b"\r").decode("ascii") for _ in range(lines)]
        assert all(line.endswith("\r") for line in out), out
        return [line[:-1] for line in out]

    def one(self, command: str) -> str:
        return self.ask(command)[0]

    def frame(self, command: str = "") -> dict:
        tokens = self.one(command).split()
        assert tokens[0] == self.unit and len(tokens) >= 7, tokens
        return {"pressure": float(tokens[1]), "temperature": float(tokens[2]),
                "volumetric": float(tokens[3]), "mass": float(tokens[4]),
                "setpoint": float(tokens[5]), "gas": tokens[6], "status": tokens[7:]}

    def register(self, command: str) -> int:
        """`A 122 = 37` → 37 (numat reads the value after '=' or the fourth token)."""
        line = self.one(command)
        tokens = line.split()
        assert tokens[0] == self.unit and tokens[2] == "=", line
        return int(line.split("=")[-1])


@pytest.fixture(scope="module")
def client(lab):
    client = AlicatClient(lab.ports["mfc"])
    yield client
    client.ser.close()


@pytest.fixture
def mfc(client):
    yield client
    for command in ("C", "$$U", "$$W46=8", "S0"):  # leave the unit as found
        client.one(command)


def tool(lab):
    return lab.lab.world.sputter


def test_poll_and_setpoint_methods(mfc, lab):
    frame = mfc.frame()
    assert (frame["pressure"], frame["temperature"], frame["gas"]) == (14.70, 25.00, "N2")
    assert mfc.frame("S12.50")["setpoint"] == 12.50
    assert tool(lab).n2_flow_sccm() == pytest.approx(12.5)
    assert mfc.frame("32000")["setpoint"] == 25.00  # integer of 64000 full scale
    assert mfc.one("LS") == "A +025.00 +025.00 12 SCCM"
    assert mfc.one("LS 5") == "A +005.00 +005.00 12 SCCM"
    assert tool(lab).n2_flow_sccm() == pytest.approx(5.0)
    assert mfc.one("VE") == "A 10v05.0-R24"


def test_register_reads_and_writes_the_numat_client_sends(mfc):
    assert mfc.register("R122") == 37  # control point: mass flow
    assert mfc.register("$$R46") & 0x1FF == 8  # N2
    assert mfc.register("$$r85") in (1, 2)  # PID loop type
    assert [mfc.register(f"$$r{r}") >= 0 for r in (21, 22, 23)] == [True] * 3
    assert mfc.register("$$w21=150") == 150
    assert mfc.register("$$R21") == 150
    assert mfc.register("W122=36") == 36
    assert mfc.register("W122=37") == 37


def test_gas_select_changes_the_reading_and_the_delivered_flow(mfc, lab):
    assert mfc.register("$$W46=1") & 0x1FF == 1
    frame = mfc.frame("S10")
    assert frame["gas"] == "Ar"
    delivered = tool(lab).n2_flow_sccm()  # N2 through a unit calibrated for argon
    assert delivered > 11.0
    assert frame["mass"] == pytest.approx(10.0, abs=0.5)
    assert mfc.one("GS") == "A 1 Ar Argon"
    assert mfc.one("GS 8") == "A 8 N2 Nitrogen"
    assert tool(lab).n2_flow_sccm() == pytest.approx(10.0)
    assert mfc.frame("G11")["gas"] == "O2"


def test_identity_and_frame_description(mfc):
    info = mfc.ask("??M*", lines=10)
    assert [line[:5] for line in info] == [f"A M{i:02d}" for i in range(10)]
    assert "Alicat" in info[0] and "10v05" in info[9]
    description = mfc.ask("??D*", lines=8)
    assert [line[:5] for line in description] == [f"A D{i:02d}" for i in range(8)]
    assert "Mass Flow" in " ".join(description)


def test_lock_hold_and_tare_act_like_the_unit(mfc, lab):
    assert "LCK" in mfc.frame("$$L")["status"]
    assert mfc.frame("$$U")["status"] == []
    mfc.frame("S20")
    assert "HLD" in mfc.frame("HP")["status"]
    assert mfc.frame("S5")["setpoint"] == 5.0  # taken, but the valve stays held
    assert tool(lab).n2_flow_sccm() == pytest.approx(20.0)
    mfc.frame("HC")
    assert tool(lab).n2_flow_sccm() == 0.0
    assert mfc.frame("C")["status"] == []
    assert tool(lab).n2_flow_sccm() == pytest.approx(5.0)
    mfc.frame("S0")
    mfc.frame("$$V")  # tare with no flow: the zero stays where it is
    assert mfc.frame("S5")["setpoint"] == 5.0
    assert tool(lab).n2_flow_sccm() == pytest.approx(5.0, abs=0.3)
    mfc.frame("$$PC")


def test_ramp_settings(mfc):
    assert mfc.one("LSRC") == "A 0 0 0 0"
    assert mfc.one("LSRC 1 1 0 0") == "A 1 1 0 0"
    assert mfc.one("LSRC") == "A 1 1 0 0"
    assert mfc.one("LSRC 0 0 0 0") == "A 0 0 0 0"
    assert mfc.one("SR") == "A 0.00 4 12 SCCM/s"
    assert mfc.one("SR 0 4") == "A 0.00 4 12 SCCM/s"


@pytest.mark.parametrize("command", ["XYZ", "S51", "S-1", "Sabc", "$$W46=99", "W122=34",
                                     "$$w85=7", "LSRC 2 0 0 0", "SR 5 4", "T", "GS 200",
                                     "R1000", "LS nan"])
def test_error_paths_answer_question_mark(mfc, command):
    assert mfc.one(command) == "?"


def test_other_unit_ids_stay_silent_and_the_line_goes_on(mfc, lab):
    other = AlicatClient(lab.ports["mfc"], unit="B")
    try:
        other.ser.timeout = 0.2
        other.ser.write(b"B\r")
        assert other.ser.read(1) == b""
    finally:
        other.ser.close()
    assert mfc.frame()["gas"] == "N2"
