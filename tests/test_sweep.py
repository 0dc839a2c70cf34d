"""`lipon-hw sweep`: what a --vary key addresses, variants whose text keeps the file's
lines (so a bad one is the file's own `file:line: field:` sentence, with the variant's
values), every variant checked before any runs, and the runs of a sweep one after the
other (side by side on a cluster: tests/test_cluster_campaign.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lipon_hw.cli import main
from lipon_hw.cluster.sweep import own_lab, parse_vary
from lipon_hw.cluster.vary import apply, locate
from lipon_hw.errors import InputError
from lipon_hw.shipped import find_sequence

from recipes import LNMO

SPUTTER = find_sequence("lipon_rf_sputter")


def _text() -> str:
    with open(SPUTTER, encoding="utf-8") as f:
        return f.read()


def test_a_name_addresses_the_first_place_it_is_set_and_a_path_any():
    text = _text()
    first = locate(text, SPUTTER, "power_W")
    assert first.field == "steps[2].rf.power_W" and first.line == 12  # not the ramp down
    later = locate(text, SPUTTER, "steps[5].rf.power_W")
    assert later.line == 15 and text[later.start:later.end] == "0"
    assert locate(text, SPUTTER, "record_every_s").field == "record_every_s"


def test_a_variant_keeps_every_line_and_changes_only_its_values():
    text = _text()
    edits = [(locate(text, SPUTTER, "power_W"), 75),
             (locate(text, SPUTTER, "pressure_mtorr"), 7.5)]
    out = apply(text, edits)
    before, after = text.splitlines(), out.splitlines()
    assert len(before) == len(after)
    changed = [i + 1 for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [11, 12]
    assert "{power_W: 75, ramp_W_per_s: 1" in after[11] and "pressure_mtorr: 7.5," in after[10]


@pytest.mark.parametrize("key, message", [
    ("pwr_W", "sets no pwr_W"),
    ("steps[9].rf.power_W", "has no steps[9].rf.power_W"),
    ("steps[2]", "steps[2] holds a mapping, not one value"),
    ("steps..rf", "is neither a key's name"),
])
def test_a_key_that_addresses_no_one_value_is_one_sentence(key, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        locate(_text(), SPUTTER, key)


def test_vary_options_are_key_equals_values_each_key_once():
    assert parse_vary(["power_W=25,50", "pressure_mtorr=5"]) == {
        "power_W": [25, 50], "pressure_mtorr": [5]}
    with pytest.raises(InputError, match="given twice"):
        parse_vary(["a=1", "a=2"])
    with pytest.raises(InputError, match="a value is empty"):
        parse_vary(["a=1,,2"])


def test_each_variant_of_a_simulated_station_gets_a_lab_of_its_own():
    station = "a: {address: sim://rf}\nb: {address: \"sim://mes4/{1-16}\"}\n# sim:// is it\n"
    assert own_lab(station, 3) == ("a: {address: sim://v3/rf}\n"
                                   "b: {address: \"sim://v3/mes4/{1-16}\"}\n# sim:// is it\n")


def test_a_bad_variant_is_the_files_sentence_naming_the_variant_and_nothing_runs(tmp_path):
    data = tmp_path / "data"
    out = CliRunner().invoke(main, ["sweep", "lipon_rf_sputter", "--vary", "power_W=50,300",
                                    "--vary", "pressure_mtorr=10,15", "--data", str(data)])
    assert out.exit_code == 2
    assert out.output.strip() == (
        f"error: {SPUTTER}:12: steps[2].rf.power_W: 300 is above the station limit "
        "max_power_W = 100 of rf (variant 3 of 4: power_W=300, pressure_mtorr=10)")
    assert not data.exists()  # nothing made, nothing stored


def test_a_sweep_without_a_cluster_runs_its_variants_one_after_the_other(tmp_path):
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=1), encoding="utf-8")
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("vary:\n  current_A: [3.0e-6]\n", encoding="utf-8")
    out = CliRunner().invoke(main, ["sweep", str(protocol), "--vary", "times=1,2",
                                    "--vary-file", str(sweep_file), "--data",
                                    str(tmp_path / "data"), "--workers", "1", "--json"])
    assert out.exit_code == 0, out.output
    runs = json.loads(out.output.strip().splitlines()[-1])["runs"]
    assert [(r["variant"], r["run_id"], r["status"]) for r in runs] == [
        (1, 1, "completed"), (2, 2, "completed")]
    listed = CliRunner().invoke(main, ["runs", "--data", str(tmp_path / "data"), "--json"])
    names = [r["name"] for r in json.loads(listed.output)]
    assert names == ["LNMO short [times=1, current_A=3e-06]",
                     "LNMO short [times=2, current_A=3e-06]"]
