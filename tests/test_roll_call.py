"""`lipon-hw station --check` (issue 11, item 5): every instrument of a station asked who it
is before a run — the simulated lab in process, and the same lab served over TCP as real
instruments would be, with one of them unplugged."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from served import serve_on_consecutive_ports, socket_station

from lipon_hw.cli import main
from lipon_hw.station import default_station_text

#: what each kind of instrument of the default lab says it is (its protocol's identity)
EXPECTED = {"rf": "CESAR", "qcm": "MON Ver", "chamber_gauge": "MKS 937B",
            "n2_mfc": "Alicat", "shutter": "Modbus RTU relay", "evap_supply": "LAMBDA GEN",
            "evap_controller": "SQC-310", "substrate_tc": "M-7018",
            "mes4": "MultiEmStat4", "smu": "Keithley 2450"}


def check(*args: str):
    return CliRunner().invoke(main, ["station", "--check", *args])


def test_every_instrument_of_the_simulated_lab_answers_with_its_identity():
    out = check("--json")
    assert out.exit_code == 0, out.output
    answers = {a["instrument"]: a for a in json.loads(out.stdout)}
    assert set(answers) == set(yaml.safe_load(default_station_text())["instruments"])
    for name, words in EXPECTED.items():
        assert words in answers[name]["identity"], answers[name]
    assert all(a["problem"] is None and a["link_health"] == "ok" for a in answers.values())
    text = check()
    assert text.exit_code == 0 and len(text.stdout.splitlines()) == len(answers)


@pytest.fixture
def served(tmp_path):
    lab, base = serve_on_consecutive_ports(speed=1.0)
    lab.station_path = socket_station(lab, base, tmp_path / "station.yaml")
    yield lab
    lab.stop()


def test_served_instruments_answer_over_tcp_and_an_unplugged_one_is_named(served, tmp_path):
    out = check("--station", str(served.station_path), "--json")
    assert out.exit_code == 0, out.output
    assert all(a["identity"] for a in json.loads(out.stdout))
    # the RF generator unplugged: its port refuses connections
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    spec = yaml.safe_load(Path(served.station_path).read_text(encoding="utf-8"))
    spec["instruments"]["rf"]["address"] = f"socket://127.0.0.1:{dead}"
    spec["instruments"]["rf"]["timeout_s"] = 0.2
    station = tmp_path / "unplugged.yaml"
    station.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    out = check("--station", str(station))
    assert out.exit_code == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith("rf ") and " NO " in lines[0] and "link lost" in lines[0]
    assert all(" ok " in line for line in lines[1:])
    error = out.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(
        f"error: 1 of {len(lines)} instruments of ") and \
        f"did not answer: rf at socket://127.0.0.1:{dead} (" in error[0]
    assert "Traceback" not in out.output
