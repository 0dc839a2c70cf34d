"""Hostile values in recipes and protocols are refused at validate, before a run row exists:
one sentence `FILE:LINE: field: …`, exit code 2, in milliseconds (issue 8).

Named cases first (each was accepted by the code before the ranges), then a generated
corpus: every numeric field of every shipped sequence set, one at a time, to a hostile
value."""

from __future__ import annotations

import math
import re
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipon_hw import kinds
from lipon_hw.celltest.plan import load as load_protocol
from lipon_hw.celltest.session import start_cycling
from lipon_hw.cli import main
from lipon_hw.deposition.recipe import load_recipe
from lipon_hw.engine.conditions import parse_condition
from lipon_hw.errors import InputError
from lipon_hw.station import load_station
from lipon_hw.store import Store
from lipon_hw.yamlfile import field_name, loads

SEQUENCES = Path(__file__).resolve().parent.parent / "sequences"
STATION = load_station(None)
SCREENING = kinds.all_kinds()["screening"]


def _validate(path: Path, store: Store | None = None):
    text = path.read_text(encoding="utf-8")
    if "kind: cycling" in text:
        return load_protocol(str(path), STATION, store)
    if "kind: screening" in text:
        return SCREENING.load(str(path), STATION, store)
    return load_recipe(str(path), STATION)


def _refusal(path: Path, store: Store | None = None) -> str:
    """The one sentence validation refuses `path` with (it must refuse, fast)."""
    t0 = time.perf_counter()
    with pytest.raises(InputError) as info:
        _validate(path, store)
    assert time.perf_counter() - t0 < 5.0, "refusing took too long"
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:"), message
    return message


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _variant(tmp_path: Path, name: str, old: str, new: str) -> tuple[Path, str]:
    text = (SEQUENCES / name).read_text(encoding="utf-8")
    assert old in text, old
    text = text.replace(old, new, 1)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path, text


# --- named cases: protocols -------------------------------------------------------------
LNMO = "lnmo_cycling.yaml"
EIS = "  - eis: {from_Hz: 3.0e6"
CHARGE = "  - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_h: 2}}"
LAST_LOOP = "  - loop: {to: cycle, times: 598}"
PROTOCOL_CASES = [
    # (old, new, needle on the refused line, field, words)
    (EIS, "  - cv: {voltage_V: 1.0e6}\n" + EIS, "voltage_V: 1.0e6", "steps[0].cv.voltage_V",
     "outside -10–10 V"),
    (EIS, "  - cv: {voltage_V: 5.3, until: {time_h: 1}}\n" + EIS, "voltage_V: 5.3",
     "steps[0].cv.voltage_V", "not inside the safety window 2.5…5.2 V: max_V at line 12"),
    (CHARGE, CHARGE.replace("3.0e-6", "0"), "current_A: 0,", "steps[6].cc.current_A",
     "0 is not allowed"),
    (EIS, "  - rest: {until: {time_s: 0.5}}\n" + EIS, "time_s: 0.5",
     "steps[0].rest.until.time_s", "less than one measurement interval (1 s"),
    (CHARGE, CHARGE.replace("3.0e-6", "0.5"), "current_A: 0.5,", "steps[6].cc.current_A",
     "above mes4's largest current range, 0.1 A"),
    (CHARGE, CHARGE.replace("3.0e-6", "1.0e-3"), "current_A: 1.0e-3,", "steps[6].cc.current_A",
     "680 C for the 1.47 µAh cell of channel 1, faster than 100 C"),
    ("safety: {min_V: 2.5, max_V: 5.2}", "safety: {min_V: 5.2, max_V: 2.5}", "safety:",
     "safety.max_V", "max_V must be above min_V"),
    ("safety: {min_V: 2.5, max_V: 5.2}", "safety: {min_V: .nan, max_V: 5.2}", "safety:",
     "safety.min_V", "finite number"),
    ("cell: {kind: lnmo,", "cell: {params: {initial_soc: .nan}, kind: lnmo,", "cell:",
     "cell.params.initial_soc", "finite number"),
    ("cell: {kind: lnmo,", "cell: {params: {initial_soc: 7}, kind: lnmo,", "cell:",
     "cell.params.initial_soc", "a state of charge"),
    ("cell: {kind: lnmo,", "cell: {params: {initial_sox: 0.5}, kind: lnmo,", "cell:",
     "cell.params", "unknown cell parameters ['initial_sox']"),
    ("cell: {kind: lnmo,", "cell: {params: {diffusion_cm2_s: -1.0e-10}, kind: lnmo,", "cell:",
     "cell.params.diffusion_cm2_s", "not within 6 decades of the model's 1e-10, with its sign"),
    ("cell: {kind: lnmo,", "cell: {params: {ce_final: 1.5}, kind: lnmo,", "cell:",
     "cell.params.ce_final", "outside 0–1"),
    ("record: {every_s: 30,", "record: {every_s: 1.0e-300,", "record:", "record.every_s",
     "outside 0.001–86400 s"),
    ("record: {every_s: 30,", "record: {every_s: .inf,", "record:", "record.every_s",
     "finite number"),
    ("record: {every_s: 30,", "poll_every_s: 1.0e-300\nrecord: {every_s: 30,",
     "poll_every_s", "poll_every_s", "outside"),
    ("record: {every_s: 30,", "checkpoint_every_s: .inf\nrecord: {every_s: 30,",
     "checkpoint_every_s", "checkpoint_every_s", "finite number"),
    (EIS, "  - sweep: {from_V: 3, to_V: 4, rate_mV_s: 1, step_mV: 1.0e-9}\n" + EIS,
     "sweep:", "steps[0].sweep.step_mV", "DAC"),
    (EIS, "  - cyclic_sweep: {from_V: 3, vertex1_V: 5, vertex2_V: 3, rate_mV_s: 1000, "
          "step_mV: 0.1, scans: 1000}\n" + EIS, "cyclic_sweep:",
     "steps[0].cyclic_sweep.step_mV", "points, more than 1e+06"),
    (EIS, "  - eis: {from_Hz: 1.0e12, to_Hz: 1, per_decade: 10}\n" + EIS, "1.0e12",
     "steps[0].eis.from_Hz", "outside"),
    (LAST_LOOP, "  - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5}, "
                "goto: {voltage_V: cycle}}", "goto: {voltage_V: cycle}",
     "steps[8].cc.goto.voltage_V", "could run forever"),
    (LAST_LOOP, "  - loop: {to: cycle, times: 1000000000000000}", "times: 1000",
     "steps[8].loop.times", "outside 1–100000"),
    ("channels: 1-16", "channels: 1-999999999999", "channels:", "channels",
     "mes4 has channels 1–16, not 999999999999"),
    ("channels: 1-16", "channels: {\"1-4\": {sample: \"../../etc\"}}", "channels:",
     "channels.1-4.sample", "not a sample id"),
]


@pytest.mark.parametrize("old, new, needle, field, words", PROTOCOL_CASES,
                         ids=[c[3] + ":" + c[4][:20] for c in PROTOCOL_CASES])
def test_hostile_protocol_values_are_refused_at_their_line(tmp_path, old, new, needle, field,
                                                           words):
    path, text = _variant(tmp_path, LNMO, old, new)
    message = _refusal(path)
    assert message.startswith(f"{path}:{_line_of(text, needle)}: {field}: "), message
    assert words in message, message


def test_a_c_rate_past_the_potentiostats_range_is_refused(tmp_path):
    """0.5 C of a 10 Ah cell is 5 A; mes4's largest range is 0.1 A."""
    path, text = _variant(tmp_path, "lco_anodeless.yaml", "capacity_uAh: 690}",
                          "capacity_uAh: 1.0e7}")
    message = _refusal(path)
    line = _line_of(text, "  - cc: {rate_C: 0.1")
    assert message.startswith(f"{path}:{line}: steps[1].cc.rate_C: 0.1 C of the 1e+07 µAh "
                              "cell of channel 1 is 1 A, above mes4's largest current range, "
                              "0.1 A"), message


def test_a_goto_loop_counted_by_a_loop_and_a_cycle_termination_is_accepted(tmp_path):
    """The same way back is bounded once it passes a `loop` and the protocol ends after N
    cycles; without the termination it is refused."""
    new = LAST_LOOP + "\n  - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5}, " \
                      "goto: {voltage_V: cycle}}"
    path, text = _variant(tmp_path, LNMO, LAST_LOOP, new)
    assert _validate(path).channels
    path.write_text(text.replace("termination: {cycles: 600, ", "termination: {"), "utf-8")
    assert "could run forever" in _refusal(path)


def test_nested_loops_past_the_step_horizon_are_refused(tmp_path):
    path, text = _variant(tmp_path, LNMO, LAST_LOOP,
                          LAST_LOOP.replace("598", "100000") + "\n  - tag: outer\n"
                          "  - tag: inner\n  - rest: {until: {time_s: 1}}\n"
                          "  - loop: {to: inner, times: 100000}\n"
                          "  - loop: {to: outer, times: 100000}")
    path.write_text(text.replace("termination: {cycles: 600, ", "termination: {"), "utf-8")
    message = _refusal(path)
    assert "steps: the program could run" in message and "more than 1e+07" in message


def test_a_channel_sample_missing_from_the_store_is_refused_before_a_run_row(tmp_path):
    path, text = _variant(tmp_path, LNMO, "channels: 1-16", "channels: {\"1-2\": {sample: NOPE}}")
    data = tmp_path / "data"
    store = Store(data)
    try:
        message = _refusal(path, store)
    finally:
        store.close()
    assert f"{path}:{_line_of(text, 'channels:')}: channels.1-2.sample: sample 'NOPE' is " \
           "not in the store" in message
    with pytest.raises(InputError):
        start_cycling(str(path), data, workers=1)
    assert _run_rows(data) == 0
    assert _validate(path).channels, "without a store, validation says nothing of samples"
    result = CliRunner().invoke(main, ["validate", str(path), "--data", str(data)])
    assert result.exit_code == 2 and "sample 'NOPE' is not in the store" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_channel_ranges_are_refused_before_they_are_expanded(tmp_path):
    path, _ = _variant(tmp_path, LNMO, "channels: 1-16", "channels: 1-999999999999")
    t0 = time.perf_counter()
    _refusal(path)
    assert time.perf_counter() - t0 < 1.0


# --- named cases: recipes ---------------------------------------------------------------
SPUTTER = "lipon_rf_sputter.yaml"
PRESPUTTER = "  - presputter: {for_min: 15}"
RECIPE_CASES = [
    (SPUTTER, PRESPUTTER, PRESPUTTER + "\n  - wait: {for_min: 1.0e15}", "wait:",
     "steps[4].wait.for_min", "30-day campaign"),
    (SPUTTER, PRESPUTTER, PRESPUTTER + "\n  - wait: {for_min: .inf}", "wait:",
     "steps[4].wait.for_min", "finite number"),
    (SPUTTER, "ramp_W_per_s: 1,", "ramp_W_per_s: 1.0e-12,", "ramp_W_per_s",
     "steps[2].rf.ramp_W_per_s", "must end within hours"),
    (SPUTTER, "power_W: 0, ramp_W_per_s: 5", "power_W: 0, ramp_W_per_s: 0.002",
     "ramp_W_per_s: 0.002", "steps[5].rf.ramp_W_per_s", "outside 0.01–1000 W/s"),
    (SPUTTER, "record_every_s: 5", "record_every_s: 1.0e-300", "record_every_s",
     "record_every_s", "outside"),
    (SPUTTER, "checkpoint_every_s: 60", "checkpoint_every_s: .nan", "checkpoint_every_s",
     "checkpoint_every_s", "finite number"),
    (SPUTTER, "timeout_min: 180", "timeout_min: yes", "pump_down:",
     "steps[0].pump_down.timeout_min", "yes/no value"),
    (SPUTTER, "sample: {id: FS-001,", "sample: {id: \"FS 001; rm -rf\",", "sample:",
     "sample.id", "not a sample id"),
    ("cu_collector.yaml", "source: {boat: 1,", "source: {boat: 4,", "source:",
     "steps[1].source.boat", "boat 4 does not exist: evap_boats selects boats 1–3"),
    (SPUTTER, "pressure_torr > 0.03\"", "pressure_torr > 'high'\"", "pressure_torr > 'high'",
     "interlocks[1].when", "'high' is not a finite number"),
    (SPUTTER, "pressure_torr > 0.03\"", "pressure_torr > 1e999\"", "pressure_torr > 1e999",
     "interlocks[1].when", "is not a finite number"),
]


@pytest.mark.parametrize("name, old, new, needle, field, words", RECIPE_CASES,
                         ids=[c[4] + ":" + c[5][:20] for c in RECIPE_CASES])
def test_hostile_recipe_values_are_refused_at_their_line(tmp_path, name, old, new, needle,
                                                         field, words):
    path, text = _variant(tmp_path, name, old, new)
    message = _refusal(path)
    assert message.startswith(f"{path}:{_line_of(text, needle)}: {field}: "), message
    assert words in message, message


def test_an_rf_ramp_longer_than_four_hours_is_refused(tmp_path):
    """In range on its own (0.02 W/s), but 500 W at that rate takes 6.9 h."""
    station_text = (Path(__file__).resolve().parent.parent / "lipon_hw" / "data"
                    / "sim_lab.yaml").read_text(encoding="utf-8")
    assert "limits: {max_power_W: 100}" in station_text
    station_path = tmp_path / "station.yaml"
    station_path.write_text(station_text.replace("limits: {max_power_W: 100}",
                                                 "limits: {max_power_W: 600}"), "utf-8")
    path, text = _variant(tmp_path, SPUTTER, "power_W: 50, ramp_W_per_s: 1,",
                          "power_W: 500, ramp_W_per_s: 0.02,")
    with pytest.raises(InputError) as info:
        load_recipe(str(path), load_station(str(station_path)))
    line = _line_of(text, "power_W: 500")
    assert str(info.value).startswith(f"{path}:{line}: steps[2].rf.ramp_W_per_s: 0.02 W/s "
                                      "takes 6.94 h to ramp 500 W, longer than 4 h")


def test_a_20000_term_interlock_is_refused_fast(tmp_path):
    when = " + ".join(["process_gauge.pressure_torr"] * 20_000) + " > 1"
    known = {"process_gauge.pressure_torr": "process_gauge"}
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="at most 500 characters"):
        parse_condition(when, known)
    assert time.perf_counter() - t0 < 0.05, "refused before any parsing cost"
    path, text = _variant(tmp_path, SPUTTER, "process_gauge.pressure_torr > 0.03", when)
    message = _refusal(path)  # the file itself is 560 kB: reading the YAML is most of it
    assert "interlocks[1].when: a condition is at most 500 characters" in message
    # under the character bound, the node bound: 100 terms of a short name
    known = {"g.p": "process_gauge"}
    with pytest.raises(ValueError, match="at most 200 terms"):
        parse_condition(" + ".join(["p"] * 120) + " > 1", known)


def test_cli_refuses_with_one_line_exit_2_and_run_stores_nothing(tmp_path):
    cases = [(LNMO, "safety: {min_V: 2.5, max_V: 5.2}", "safety: {min_V: .nan, max_V: 5.2}"),
             (LNMO, CHARGE, CHARGE.replace("3.0e-6", "0")),
             (SPUTTER, "ramp_W_per_s: 1,", "ramp_W_per_s: 1.0e-12,")]
    for name, old, new in cases:
        path, _ = _variant(tmp_path, name, old, new)
        for args in (["validate", str(path)],
                     ["run", str(path), "--data", str(tmp_path / "data")]):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 2, result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {path}:"), result.output
    assert _run_rows(tmp_path / "data") == 0


def _run_rows(data: Path) -> int:
    db = data / "lipon.db"
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    finally:
        con.close()


# --- the generated corpus ---------------------------------------------------------------
SHIPPED = sorted(p for p in SEQUENCES.glob("*.yaml"))
#: values no range may accept
NEVER = [math.nan, math.inf, -math.inf, 1e300, -1e300, 10**30, "a string", True]
#: values that may be physically sensible for some fields (0 V, 0 sccm, a tiny ≈ 0 setting)
MAYBE = [0, -1, 1e-300, -1e-300]


def _numeric_fields(data, loc=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _numeric_fields(value, loc + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _numeric_fields(value, loc + (i,))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        yield loc


def _load_yaml(path: Path):
    # YAML 1.1 reads 3.0e6 as a string; the loader's schema takes numeric strings
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return _numbers(data)


def _numbers(data):
    if isinstance(data, dict):
        return {k: _numbers(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_numbers(v) for v in data]
    if isinstance(data, str) and re.fullmatch(r"[-+]?\d+\.?\d*e[-+]?\d+", data):
        return float(data)
    return data


CORPUS = [(path, _load_yaml(path)) for path in SHIPPED]
FIELDS = [(i, loc) for i, (_, data) in enumerate(CORPUS) for loc in _numeric_fields(data)]


def _set(data, loc, value):
    if not loc:
        return value
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[loc[0]] = _set(data[loc[0]], loc[1:], value)
    return copy


def test_every_shipped_sequence_validates_and_the_corpus_has_fields():
    for path in SHIPPED:
        _validate(path)
    assert len(SHIPPED) >= 9 and len(FIELDS) > 100


def _mutated(tmp_path, field, value) -> tuple[Path, str, tuple]:
    """A shipped sequence with one field set to `value`, written to tmp_path: its path, its
    text and the field's location."""
    index, loc = field
    source, data = CORPUS[index]
    text = yaml.safe_dump(_set(data, loc, value), sort_keys=False, allow_unicode=True,
                          width=10_000)
    path = tmp_path / source.name
    path.write_text(text, encoding="utf-8")
    return path, text, loc


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=st.sampled_from(NEVER + MAYBE))
def test_generated_hostile_values_are_refused_at_the_mutated_field(tmp_path, field, value):
    path, text, loc = _mutated(tmp_path, field, value)
    t0 = time.perf_counter()
    try:
        _validate(path)
    except InputError as exc:
        message = str(exc)
        line = loads(text, str(path)).line(loc)
        # the mutated field, or a field it makes impossible (a setpoint outside a safety
        # window, a window emptied): then the sentence names the mutated key and its line
        assert message.startswith(f"{path}:{line}: {field_name(loc)}") \
            or f"{loc[-1]} at line {line}" in message, (value, message)
        assert "\n" not in message
    else:
        assert value in MAYBE and not any(value is v for v in NEVER), \
            f"{field_name(loc)} = {value!r} in {path.name} was accepted"
    assert time.perf_counter() - t0 < 2.0


@settings(max_examples=20, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=st.sampled_from(NEVER))
def test_generated_refusals_through_the_cli_store_nothing(tmp_path, field, value):
    """`lipon-hw run` of a refused file: exit 2, one line naming file, line and field, and
    no run row in the store."""
    path, text, loc = _mutated(tmp_path, field, value)
    data_dir = tmp_path / "data"
    line = loads(text, str(path)).line(loc)
    # validate first: a value the code accepted would otherwise start a whole campaign
    for args in (["validate", str(path)], ["run", str(path), "--data", str(data_dir)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}:{line}: "), \
            result.output
    assert _run_rows(data_dir) == 0
