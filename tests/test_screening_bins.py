"""Screening bins (semiconductor convention) and the prober's touchdown layout."""

from __future__ import annotations

import pytest

from lipon_hw.screening.bins import compile_rules
from lipon_hw.screening.layout import CardSpec, SheetSpec, touchdowns

METRICS = ["ocv_V", "z_1000Hz_ohm", "r_dc_ohm"]
FAIL = [{"name": "hard_short", "soft_bin": 10, "hard_bin": 5, "when": "ocv_V < 1"},
        {"name": "soft_short", "soft_bin": 11, "hard_bin": 5, "when": "ocv_V < 3.8"},
        {"name": "high_z", "soft_bin": 20, "hard_bin": 6, "when": "z_1000Hz_ohm > 900"}]
GRADES = [{"name": "A", "soft_bin": 1, "hard_bin": 1},
          {"name": "B", "soft_bin": 2, "hard_bin": 2, "when": "z_1000Hz_ohm > 600"},
          {"name": "C", "soft_bin": 3, "hard_bin": 3, "when": "r_dc_ohm > 2000"}]
FAULT = {"name": "no_contact", "soft_bin": 98, "hard_bin": 8}


@pytest.fixture
def rules():
    return compile_rules(FAIL, GRADES, FAULT, METRICS)


def test_first_failing_rule_wins(rules):
    # a hard short also reads below the soft-short limit and a high |Z|: the first rule wins
    b = rules.classify({"ocv_V": 0.01, "z_1000Hz_ohm": 5000, "r_dc_ohm": 10})
    assert (b.bin.name, b.bin.soft_bin, b.bin.hard_bin, b.bin.passed) == \
        ("hard_short", 10, 5, False)
    b = rules.classify({"ocv_V": 3.5, "z_1000Hz_ohm": 5000, "r_dc_ohm": 10})
    assert (b.bin.name, b.rule) == ("soft_short", "soft_short")


def test_grades_are_only_ever_downgraded(rules):
    good = {"ocv_V": 4.0, "z_1000Hz_ohm": 400, "r_dc_ohm": 100}
    assert rules.classify(good).bin.name == "A"
    assert rules.classify({**good, "z_1000Hz_ohm": 700}).bin.name == "B"
    # C's condition holds and B's too: the worst grade holds; B's alone never lifts a C
    both = {**good, "z_1000Hz_ohm": 700, "r_dc_ohm": 5000}
    assert rules.classify(both).bin.name == "C"
    assert rules.classify({**good, "r_dc_ohm": 5000}).bin.name == "C"


def test_tester_fault_is_not_a_bad_cell(rules):
    b = rules.classify({}, measured=False)
    assert (b.bin.hard_bin, b.bin.tester_fault, b.bin.passed) == (8, True, False)
    # a metric a rule needs that was not measured (or is NaN) is the tester's fault too
    b = rules.classify({"ocv_V": 4.0, "z_1000Hz_ohm": float("nan"), "r_dc_ohm": 1})
    assert b.bin.tester_fault and "z_1000Hz_ohm" in b.rule


@pytest.mark.parametrize("fail, grades, where, match", [
    ([{**FAIL[0], "when": "ocv_mV < 1"}], GRADES, ("fail", 0, "when"), "not a metric"),
    ([{**FAIL[0], "when": "__import__('os')"}], GRADES, ("fail", 0, "when"), "not allowed"),
    ([{**FAIL[0], "soft_bin": 1}], GRADES, ("fail", 0, "soft_bin"), "already 'A'"),
    ([{**FAIL[0], "hard_bin": 1}], GRADES, ("fail", 0, "hard_bin"), "already a pass bin"),
    (FAIL, [{**GRADES[0], "when": "ocv_V > 3"}], ("grades", 0, "when"), "no condition"),
    (FAIL, [GRADES[0], {**GRADES[1], "when": None}], ("grades", 1, "when"), "needs a"),
    ([{**FAIL[0], "when": "ocv_V < 1 for 5 s"}], GRADES, ("fail", 0, "when"), "no 'for'"),
])
def test_bad_rules_are_refused_with_their_place(fail, grades, where, match):
    with pytest.raises(ValueError, match=match) as err:
        compile_rules(fail, grades, FAULT, METRICS)
    assert err.value.args[1] == where


def test_touchdowns_cover_every_cell_once_serpentine():
    sheet = SheetSpec("S", None, 20, 30, 5.0, 5.0)
    for rows, cols in [(1, 1), (1, 8), (4, 8), (8, 16)]:
        tds = touchdowns(sheet, CardSpec(rows, cols, 16))
        cells = [(t.row, t.col) for td in tds for t in td.touches]
        assert len(cells) == len(set(cells)) == 600
        assert len(tds) == -(-20 // rows) * -(-30 // cols)
        # each touch's site sits at its offset from the block's first cell, on its channel
        for td in tds:
            for t in td.touches:
                i, j = t.row - td.row, t.col - td.col
                assert t.channel == i * 16 + j + 1 and t.site == i * cols + j + 1
        # serpentine: the second row of blocks starts where the first ended
        if len(tds) > -(-30 // cols):
            assert tds[-(-30 // cols)].col == tds[-(-30 // cols) - 1].col
    td = touchdowns(sheet, CardSpec(4, 8, 16))[0]
    assert (td.x_mm, td.y_mm) == (0.0, 0.0)
    assert touchdowns(sheet, CardSpec(4, 8, 16))[1].x_mm == 40.0


def test_a_recipe_must_check_contact_with_impedance_or_a_pulse(tmp_path):
    """A floating probe reads some volts: OCV alone would bin a missed pad as a cell."""
    from pathlib import Path

    from lipon_hw.errors import InputError
    from lipon_hw.screening.recipe import load_screening
    from lipon_hw.station import load_station

    text = (Path(__file__).parents[1] / "sequences" / "sheet_screening.yaml").read_text()
    start, end = text.index("  eis:"), text.index("bins:")
    ocv_only = text[:start] + text[end:]
    ocv_only = ocv_only.replace('"z_10000Hz_ohm < 50"', '"ocv_V < 1"').replace(
        '"z_10Hz_ohm > 3000"', '"ocv_V > 5"').replace('"z_10000Hz_ohm < 210"', '"ocv_V > 6"')
    ocv_only = ocv_only.replace('"z_10Hz_ohm > 2200 or r_dc_ohm > 2450"', '"ocv_V < 4.197"')
    path = tmp_path / "ocv_only.yaml"
    path.write_text(ocv_only)
    with pytest.raises(InputError, match=r"ocv_only.yaml:\d+: tests: needs eis or pulse"):
        load_screening(str(path), load_station(None))
