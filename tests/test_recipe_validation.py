"""Broken recipes are refused before anything moves: exit 2, one located sentence."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from lipon_hw.cli import main

from recipes import SHORT

REPO = Path(__file__).resolve().parent.parent


def _validate(tmp_path, text):
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(path)])
    return path, result


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("needle, replacement, field, words", [
    ("  - rf: {power_W: 50, ramp_W_per_s: 5, regulation: load}",
     "  - rf: {power_W: 150, ramp_W_per_s: 5, regulation: load}",
     "steps[2].rf.power_W", "above the station limit max_power_W = 100 of rf"),
    ("  - presputter: {for_min: 1}", "  - presputer: {for_min: 1}",
     "steps[3].presputer", "unknown step 'presputer'"),
    ("  - pump_down: {below_torr: 2.0e-5, timeout_min: 60}", "  - pump_down: {timeout_min: 60}",
     "steps[0].pump_down.below_torr", "required but missing"),
    ("tool: sputter", "tool: sputter\ninstruments: {rf_supply: rf9}",
     "instruments.rf_supply", "instrument 'rf9' is not in station"),
    ("  - deposit: {film: LiPON,", "  - deposit: {film: LiPONX,",
     "steps[4].deposit.film", "film 'LiPONX' is not defined for qcm"),
    ("  - {when: \"process_gauge.pressure_torr > 0.03\"",
     "  - {when: \"gauge9.pressure_torr > 0.03\"",
     "interlocks[1].when", "names instrument 'gauge9'"),
    ("  - gas: {n2_sccm: 20,", "  - gas: {n2_sccm: 80,",
     "steps[1].gas.n2_sccm", "above the station limit max_flow_sccm = 50 of n2_mfc"),
])
def test_broken_recipe_names_file_line_and_field(tmp_path, needle, replacement, field, words):
    base = SHORT.replace("THICKNESS", "30")
    assert needle in base
    text = base.replace(needle, replacement)
    path, result = _validate(tmp_path, text)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    line = _line_of(text, replacement.splitlines()[-1].strip()[:20])
    assert lines[0].startswith(f"error: {path}:{line}: {field}: "), lines[0]
    assert words in lines[0]
    assert "Traceback" not in result.output


def test_bad_yaml_names_the_line(tmp_path):
    text = "name: x\nsteps:\n  - rf: {power_W: 50\n  - vent: {}\n"
    path, result = _validate(tmp_path, text)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {path}:")
    assert "not valid YAML" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_file(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_deposit_needs_exactly_one_end(tmp_path):
    text = SHORT.replace("THICKNESS", "30").replace("max_h: 8}", "max_h: 8, for_min: 3}")
    _, result = _validate(tmp_path, text)
    assert result.exit_code == 2
    assert "steps[4].deposit" in result.output
    assert "exactly one of until_thickness_nm or for_min" in result.output


def test_ambiguous_quantity_is_refused(tmp_path):
    text = SHORT.replace("THICKNESS", "30").replace(
        "process_gauge.pressure_torr > 0.03", "pressure_torr > 0.03")
    _, result = _validate(tmp_path, text)
    assert result.exit_code == 2
    assert "ambiguous" in result.output and "chamber_gauge.pressure_torr" in result.output


def test_shipped_recipe_is_valid():
    result = CliRunner().invoke(main, ["validate", str(REPO / "sequences/lipon_rf_sputter.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid (8 steps" in result.output


def test_broken_station_file(tmp_path):
    station = tmp_path / "station.yaml"
    station.write_text("name: s\ninstruments:\n  rf: {driver: nosuch, address: sim://rf}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SHORT.replace("THICKNESS", "30"))
    result = CliRunner().invoke(main, ["validate", str(recipe), "--station", str(station)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {station}:3: instruments.rf.driver: ")
    assert "driver 'nosuch' is unknown" in result.output


def test_source_current_above_station_limit(tmp_path):
    text = (REPO / "sequences/cu_collector.yaml").read_text().replace(
        "ramp_to_A: 40", "ramp_to_A: 150")
    path, result = _validate(tmp_path, text)
    assert result.exit_code == 2
    line = _line_of(text, "ramp_to_A: 150")
    assert result.output.startswith(f"error: {path}:{line}: steps[2].precondition.ramp_to_A: ")
    assert "above the station limit max_current_A = 120 of evap_supply" in result.output


@pytest.mark.parametrize("recipe", ["cu_collector", "au_seed", "li_anode", "fs_lipon_cell"])
def test_shipped_evaporation_recipes_are_valid(recipe):
    result = CliRunner().invoke(main, ["validate", str(REPO / f"sequences/{recipe}.yaml")])
    assert result.exit_code == 0, result.output
