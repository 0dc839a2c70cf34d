"""The Python API (`lipon_hw.api`) and its executable example in docs/.

Instruments are reached through the real framing: `open_instrument` over TCP to the
simulated lab served as `lipon-hw sim serve` serves it; runs go through the same session
functions as `lipon-hw run`, and their tables are checked against `lipon-hw export`.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import lipon_hw
from lipon_hw.cli import main
from lipon_hw.errors import InputError
from lipon_hw.sim.serve import serve_lab
from lipon_hw.station import load_station

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "python_api.py"


@pytest.fixture(scope="module")
def served():
    """The simulated lab behind loopback TCP ports, in real time."""
    with serve_lab(load_station(), port_base=0) as lab:
        yield lab.instruments()


def test_open_instrument_by_address_reads_the_served_qcm(served):
    qcm = lipon_hw.open_instrument("sqm160", "socket://" + served["qcm"]["tcp"], sensor=1)
    try:
        assert qcm.identify().startswith("MON")
        assert 5.0e6 < qcm.frequency_Hz() < 6.1e6  # a fresh 6 MHz crystal
        assert qcm.crystal_life_pct() == pytest.approx(100, abs=1)
        assert math.isfinite(qcm.thickness_nm())
    finally:
        lipon_hw.close_instrument(qcm)
    assert not qcm.link._open


def _bench_station(tmp_path: Path, served: dict) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(
        "name: bench behind a terminal server\n"
        "instruments:\n"
        f"  chamber_gauge: {{driver: mks937b, address: 'socket://{served['chamber_gauge']['tcp']}',"
        " settings: {channel: 1}}\n"
        f"  qcm: {{driver: sqm160, address: 'socket://{served['qcm']['tcp']}'}}\n",
        encoding="utf-8")
    return path


def test_open_instrument_from_a_station_entry(tmp_path, served):
    gauge = lipon_hw.open_instrument("chamber_gauge", station=_bench_station(tmp_path, served))
    try:
        assert 1e-11 < gauge.pressure_torr() <= 800  # the served chamber, vented or pumping
    finally:
        lipon_hw.close_instrument(gauge)


def test_open_instrument_refuses_what_it_cannot_open(tmp_path, served):
    with pytest.raises(InputError, match="simulated lab"):
        lipon_hw.open_instrument("sqm160", "sim://qcm")
    with pytest.raises(InputError, match="did you mean sqm160"):
        lipon_hw.open_instrument("sqm16", "socket://127.0.0.1:1")
    with pytest.raises(InputError, match="has no instrument 'rf'"):
        lipon_hw.open_instrument("rf", station=_bench_station(tmp_path, served))
    with pytest.raises(InputError, match="needs an address"):
        lipon_hw.open_instrument("sqm160")


def test_connect_and_advance_the_simulated_clock():
    with lipon_hw.connect() as lab:
        gauge = lab.for_role("sputter", "base_gauge")
        vented = gauge.pressure_torr()
        lab.for_role("sputter", "valves").pump()
        assert lab.advance(1800) == lab.now == 1800
        pumped = gauge.pressure_torr()
        assert vented > 100 and pumped < 1e-3  # half an hour of pumping happened
        assert lab["qcm"] is lab.instruments["qcm"]
        for bad in (-1, math.nan, math.inf):
            with pytest.raises(InputError):
                lab.advance(bad)
        with pytest.raises(KeyError, match="no instrument 'nope'"):
            lab["nope"]


def test_a_real_station_cannot_advance(tmp_path, served):
    with lipon_hw.connect(_bench_station(tmp_path, served)) as lab:
        assert not lab.simulated
        assert lab["qcm"].frequency_Hz() > 5e6
        with pytest.raises(InputError, match="wall clock"):
            lab.advance(1)


def test_the_example_runs_and_its_tables_match_the_export(tmp_path):
    data = tmp_path / "data"
    done = subprocess.run([sys.executable, str(EXAMPLE), str(data)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    assert "run 1 completed: 3.00 nm of Au" in done.stdout
    assert "run 2 completed" in done.stdout and "S/cm" in done.stdout

    deposition = lipon_hw.open_run(1, data)
    table = deposition.readings()
    out = tmp_path / "run1.csv"
    assert CliRunner().invoke(main, ["export", "1", "--data", str(data), "--format", "csv",
                                     "--out", str(out)]).exit_code == 0
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert table.column_names == rows[0]
    as_csv = [["" if v is None else repr(v) if isinstance(v, float) else str(v) for v in row]
              for row in zip(*(table[c].to_pylist() for c in table.column_names), strict=True)]
    assert as_csv == rows[1:]  # every value, as the export writes it

    cell = lipon_hw.open_run(2, data)
    assert cell.kind == "cycling" and cell.status == "completed"
    samples = cell.readings()
    assert samples.column_names[:4] == ["channel", "t_s", "voltage_V", "current_A"]
    assert set(samples["step_type"].to_pylist()) >= {"REST", "CV"}
    assert cell.spectra().num_rows > 50


def test_run_refuses_a_sample_for_a_protocol(tmp_path):
    with pytest.raises(InputError, match=r"\(--sample\) is for recipes"):
        lipon_hw.run("lipon_conductivity", tmp_path, sample="FS-001")


def test_open_run_of_an_empty_directory(tmp_path):
    with pytest.raises(InputError, match="no lipon-hw data"):
        lipon_hw.open_run(1, tmp_path)


def test_pandas_when_installed(tmp_path):
    pytest.importorskip("pandas")
    run = lipon_hw.run("lipon_conductivity", tmp_path, workers=1)
    frame = run.readings().to_pandas()
    assert len(frame) == run.readings().num_rows


def test_closing_a_station_makes_every_instrument_safe_even_past_a_dead_link():
    from lipon_hw.errors import InstrumentError

    lab = lipon_hw.connect()
    lab["shutter"].open()
    relay = lab.lab.sim.emulators["io"]
    assert relay.coils[0]  # the shutter's coil: open
    lab.lab.sim.emulators["rf"].faults.link_down = True  # the RF supply stops answering
    with pytest.raises(InstrumentError, match="rf could not be made safe"):
        lab.close()
    assert not relay.coils[0]  # the shutter behind it was still closed
    assert lab.lab.closed
