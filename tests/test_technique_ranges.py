"""Every number a technique holds has a range (`techniques._RANGES`, from lipon_hw.ranges in
SI units), checked by `check_technique` before any driver sends it: a value past it, NaN,
±inf, a bool or text gets one sentence naming the technique, the field and the range.
"Greater than zero" is not a range: a 1e-300 s interval passed it."""

from __future__ import annotations

import math

import pytest

from lipon_hw.errors import InputError
from lipon_hw.techniques import (
    CCCV,
    EIS,
    OCV,
    ConstantCurrent,
    ConstantVoltage,
    CyclicSweep,
    DCPolarization,
    LinearSweep,
    Recording,
    Sequence,
    Window,
    check_technique,
)

GOOD = [
    OCV(60, interval_s=1, record=Recording(dt_s=10, dV=0.005)),
    ConstantCurrent(3e-6, 3600, v_max_V=5.1, v_min_V=3.5, interval_s=1,
                    record=Recording(dt_s=30, dV=0.005),
                    window=Window(min_V=3.0, max_V=5.2, max_current_A=1e-4)),
    ConstantCurrent(-1.0, 1e-3, interval_s=1e-3),  # the largest current, a 1 ms pulse
    ConstantCurrent(1e-12, 1e7, interval_s=3600),  # the smallest, the instrument's cap
    ConstantVoltage(4.2, 600, i_min_A=1e-7, record=Recording(dI=1e-9)),
    DCPolarization(-10.0, 600),
    CCCV(1e-6, 4.2, 1e-8, 3600),
    CCCV(1e-6, 4.2, 0.0, 3600),  # no current cutoff: the hold runs its time
    EIS(1e7, 1e-5, 1000, amplitude_V=0.5, dc_V=3.7),
    EIS(1e3, 1e3, 1, amplitude_V=1e-4),
    LinearSweep(-10.0, 10.0, 1e-4, 10.0),
    CyclicSweep(0.0, 1.0, -1.0, 0.1, 1e-6, scans=1000),
    Sequence((ConstantCurrent(3e-6, 3600, v_max_V=5.1), ConstantCurrent(-3e-6, 3600,
                                                                        v_min_V=3.5))),
]


@pytest.mark.parametrize("technique", GOOD, ids=lambda tq: type(tq).__name__)
def test_values_at_the_ends_of_their_ranges_pass(technique):
    check_technique(technique)


BAD = [
    (ConstantCurrent(2.0, 60), "ConstantCurrent: current_A 2.0 is outside ±1e-12–1 A"),
    (ConstantCurrent(0.0, 60), "current_A 0.0 is outside ±1e-12–1 A"),
    (ConstantCurrent(1e-6, 60, interval_s=1e-300), "interval_s 1e-300 is outside 0.001–3600 s"),
    (OCV(1e8), "OCV: duration_s 100000000.0 is outside 0.001–1e+07 s"),
    (OCV(math.nan), "OCV: duration_s nan is outside"),
    (OCV(60, interval_s=math.inf), "OCV: interval_s inf is outside"),
    (OCV(60, interval_s=120), "OCV: interval_s 120 must be at most duration_s 60"),
    (OCV("60"), "OCV: duration_s '60' is not a number"),
    (OCV(True), "OCV: duration_s True is not a number"),
    (ConstantCurrent(1e-6, 60, v_max_V=12.0), "v_max_V 12.0 is outside -10–10 V"),
    (ConstantVoltage(4.2, 60, i_min_A=0.0), "i_min_A 0.0 is outside 1e-12–1 A"),
    (ConstantVoltage(-11, 60), "voltage_V -11 is outside -10–10 V"),
    (CCCV(1e-6, 4.2, 5.0, 60), "CCCV: i_min_A 5.0 is outside"),
    (EIS(2e7, 1, 10), "EIS: f_start_Hz 20000000.0 is outside 1e-05–1e+07 Hz"),
    (EIS(1e3, 0.0, 10), "EIS: f_end_Hz 0.0 is outside"),
    (EIS(1e3, 1, 0), "EIS: points 0 is outside 1–1000"),
    (EIS(1e3, 1, 10.5), "EIS: points 10.5 is not a whole number"),
    (EIS(1e3, 1, 10, amplitude_V=0), "EIS: amplitude_V 0 is outside 0.0001–0.5 V"),
    (EIS(1e3, 1, 10, dc_V=math.inf), "EIS: dc_V inf is outside"),
    (LinearSweep(0, 1, 1e-300, 0.1), "LinearSweep: step_V 1e-300 is outside 0.0001–0.1 V"),
    (LinearSweep(0, 1, 1e-3, 100.0), "LinearSweep: rate_V_s 100.0 is outside 1e-06–10 V/s"),
    (CyclicSweep(0, 1, -1, 1e-3, 0.1, scans=0), "CyclicSweep: scans 0 is outside 1–1000"),
    (ConstantCurrent(1e-6, 60, record=Recording(dt_s=1e-6)),
     "ConstantCurrent record: dt_s 1e-06 is outside 0.001–86400 s"),
    (ConstantCurrent(1e-6, 60, record=Recording(dV=2.0)),
     "ConstantCurrent record: dV 2.0 is outside 1e-05–1 V"),
    (ConstantVoltage(4.0, 60, record=Recording(dI=5.0)),
     "ConstantVoltage record: dI 5.0 is outside 1e-12–1 A"),
    (ConstantCurrent(1e-6, 60, window=Window(max_current_A=5.0)),
     "ConstantCurrent window: max_current_A 5.0 is outside 1e-12–1 A"),
    (ConstantCurrent(1e-6, 60, window=Window(min_V=math.nan)),
     "ConstantCurrent window: min_V nan is outside -10–10 V"),
    (ConstantCurrent(1e-6, 60, window=Window(min_V=4.0, max_V=3.0)),
     "window min_V 4.0 must be below max_V 3.0"),
    (Sequence((ConstantCurrent(1e-6, 60), ConstantCurrent(-2.0, 60))),
     "Sequence: phase 2: ConstantCurrent: current_A -2.0 is outside"),
]


@pytest.mark.parametrize(("technique", "said"), BAD, ids=[s for _, s in BAD])
def test_a_value_past_its_range_is_one_sentence_naming_it(technique, said):
    with pytest.raises(InputError) as info:
        check_technique(technique)
    text = str(info.value)
    assert said in text and "\n" not in text


def test_the_shipped_protocols_make_only_techniques_within_range(tmp_path):
    """Every technique the shipped protocols make passes: the techniques' ranges are the
    files' own (a protocol valid on load never makes a technique a driver refuses)."""
    from pathlib import Path

    from lipon_hw.celltest.protocol import load_protocol, technique
    from lipon_hw.station import load_station

    root = Path(__file__).resolve().parents[1]
    station = load_station()
    checked = 0
    for path in sorted((root / "sequences").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if "steps:" not in text or "channels:" not in text:
            continue  # a deposition recipe or a sheet screening
        protocol = load_protocol(path, station)
        for plan in protocol.channels:
            for step in plan.program.steps:
                if step.params is not None:
                    check_technique(technique(step, plan))
                    checked += 1
    assert checked > 10


def test_a_cccv_step_without_a_current_end_makes_a_technique_the_drivers_take(tmp_path):
    """`cccv` ended by time alone: its hold has no cutoff, which a CCCV says as i_min_A 0
    (the MethodSCRIPT script's |I| < 0 never fires) — within range, not refused as 0 A."""
    from lipon_hw.celltest.protocol import load_protocol, technique
    from lipon_hw.station import load_station

    path = tmp_path / "cccv.yaml"
    path.write_text(
        "name: cccv ends\nkind: cycling\npotentiostat: mes4\nchannels: 1\n"
        "cell: {kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}\n"
        "record: {every_s: 30}\nsafety: {min_V: 2.5, max_V: 5.2}\n"
        "steps:\n"
        "  - cccv: {current_A: 1.5e-6, voltage_V: 5.0, until: {time_h: 2}}\n"
        "  - cccv: {current_A: 1.5e-6, voltage_V: 5.0, until: {current_A: 1.0e-7, time_h: 2}}\n",
        encoding="utf-8")
    protocol = load_protocol(path, load_station())
    plan = protocol.channels[0]
    made = [technique(step, plan) for step in plan.program.steps if step.params is not None]
    assert [tq.i_min_A for tq in made] == [0.0, 1.0e-7]
    for tq in made:
        check_technique(tq)
