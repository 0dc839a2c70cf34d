"""`lipon-hw schema`: the JSON Schema an editor checks a file with agrees with the engine.

Every shipped sequence and the default station pass the printed schema (checked with the
`jsonschema` library, as an editor's language server would); broken copies of them fail
it, and `lipon-hw validate` refuses the same copies, so the schema is neither looser nor
stricter than the models on what it claims to check.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from lipon_hw import ranges
from lipon_hw.cli import main
from lipon_hw.json_schema import load_yaml12
from lipon_hw.station import default_station_text

SEQUENCES = sorted((Path(__file__).parent.parent / "sequences").glob("*.yaml"))


def printed_schema(kind: str | None = None) -> dict:
    result = CliRunner().invoke(main, ["schema"] + ([kind] if kind else []))
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="module")
def sequence_validator():
    return jsonschema.Draft202012Validator(printed_schema())


def errors(validator, doc) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_every_shipped_sequence_passes_its_schema(sequence_validator):
    assert len(SEQUENCES) >= 9
    for path in SEQUENCES:
        doc = load_yaml12(path.read_text("utf-8"))
        assert errors(sequence_validator, doc) == [], path.name
        kind = {"cycling": "protocol", "screening": "screening"}.get(doc.get("kind"),
                                                                      "recipe")
        own = jsonschema.Draft202012Validator(printed_schema(kind))
        assert errors(own, doc) == [], (path.name, kind)


def test_the_default_station_passes_the_station_schema():
    validator = jsonschema.Draft202012Validator(printed_schema("station"))
    assert errors(validator, load_yaml12(default_station_text())) == []


def _shipped(name: str) -> dict:
    return load_yaml12((Path(__file__).parent.parent / "sequences" / name).read_text("utf-8"))


def _set(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


BROKEN = {
    "RF power above the largest generator": (
        "lipon_rf_sputter.yaml", ("steps", 2, "rf", "power_W"), 20_000),
    "an unknown field of a step": (
        "lipon_rf_sputter.yaml", ("steps", 0, "pump_down", "below_tor"), 3e-6),
    "two step names in one step": (
        "lipon_rf_sputter.yaml", ("steps", 7), {"vent": {}, "rf": {"power_W": 0}}),
    "an unknown step": ("cu_collector.yaml", ("steps", 0), {"sputter": {}}),
    "a deposit without its film": ("lipon_rf_sputter.yaml", ("steps", 4), {"deposit": {}}),
    "a zero cell current": (
        "lnmo_cycling.yaml", ("steps", 2, "cc", "current_A"), 0),
    "a cell current past 1 A": (
        "lnmo_cycling.yaml", ("steps", 6, "cc", "current_A"), -2.0),
    "EIS above 10 MHz": ("lnmo_cycling.yaml", ("steps", 0, "eis", "from_Hz"), 3e7),
    "a goto on no end condition": (
        "lnmo_cycling.yaml", ("steps", 2, "cc", "goto"), {"voltag_V": "cycle"}),
    "a loop of 0 times": ("lnmo_cycling.yaml", ("steps", 4, "loop", "times"), 0),
    "a yes/no where a number is due": (
        "lnmo_cycling.yaml", ("record", "every_s"), True),
    "a protocol step in a recipe": (
        "au_seed.yaml", ("steps", 0), {"cc": {"current_A": 1e-6}}),
}


@pytest.mark.parametrize("what", list(BROKEN))
def test_a_broken_copy_fails_the_schema_and_validation(what, sequence_validator, tmp_path):
    name, path, value = BROKEN[what]
    doc = _set(_shipped(name), path, value)
    assert errors(sequence_validator, doc), what
    broken = tmp_path / name
    broken.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(broken)])
    assert result.exit_code == 2, (what, result.output)


def test_ranges_and_units_reach_the_schema():
    recipe = printed_schema("recipe")["$defs"]
    power = recipe["RF"]["properties"]["power_W"]
    assert (power["minimum"], power["maximum"], power["x-unit"]) == (0, 10_000, "W")
    ramp = recipe["RF"]["properties"]["ramp_W_per_s"]
    assert ramp["default"] == 1.0 and "W/s" in ramp["description"]
    protocol = printed_schema("protocol")["$defs"]
    current = protocol["CC"]["properties"]["current_A"]["anyOf"][0]
    assert current["anyOf"] == [{"minimum": -1, "maximum": -1e-12},
                                {"minimum": 1e-12, "maximum": 1}]
    loop = protocol["Loop"]["properties"]["times"]
    assert (loop["minimum"], loop["maximum"]) == (1, 100_000)
    # the one table they come from
    assert ranges.Span in {type(m) for m in ranges.POWER_W.__metadata__}


def test_station_schema_knows_each_drivers_limits():
    validator = jsonschema.Draft202012Validator(printed_schema("station"))
    station = load_yaml12(default_station_text())
    rf = next(n for n, i in station["instruments"].items() if i["driver"] == "ae_bus")
    assert errors(validator, _set(station, ("instruments", rf, "limits", "max_power_W"), 1e6))
    assert errors(validator, _set(station, ("instruments", rf, "limits", "max_flow_sccm"), 1))
    assert errors(validator, _set(station, ("tools", "sputter", "rf_suply"), rf))
    assert errors(validator, _set(station, ("instruments", "qcm", "settings", "sensr"), 1))
    assert not errors(validator, _set(station, ("instruments", "qcm", "settings", "film"), 2))


def test_a_station_the_schema_refuses_is_refused_by_the_loader(tmp_path):
    validator = jsonschema.Draft202012Validator(printed_schema("station"))
    station = load_yaml12(default_station_text())
    for path, value in ((("instruments", "rf", "limits", "max_power_W"), 1e6),
                        (("instruments", "qcm", "settings", "sensr"), 1),
                        (("tools", "sputter", "rf_suply"), "rf")):
        broken = _set(station, path, value)
        assert errors(validator, broken), path
        file = tmp_path / "station.yaml"
        file.write_text(yaml.safe_dump(broken, sort_keys=False), encoding="utf-8")
        result = CliRunner().invoke(main, ["station", "--station", str(file)])
        assert result.exit_code == 2, (path, result.output)


def test_yaml12_numbers_are_numbers():
    assert load_yaml12("a: 3.0e6\nb: 20\nc: 1.5e-7\nd: 1-16\n") == {
        "a": 3.0e6, "b": 20, "c": 1.5e-7, "d": "1-16"}
