"""Hostile files and stations: refused at once, in one located sentence, nothing stored.

Files that would never end or never fit (an alias bomb, /dev/zero, a FIFO, 50 MB,
5,000-deep nesting, recursive aliases), duplicate keys, and station files whose limits,
addresses, settings, drivers, ports or roles are wrong: each is refused by `validate`
and by `run` with exit 2 and `error: FILE:LINE: field: what` on one line, before a run
exists. The ones that could hang or exhaust memory run in a subprocess with a timeout
and an address-space limit; the others through the CLI in-process.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lipon_hw.cli import main
from lipon_hw.errors import InputError
from lipon_hw.links import LinkPool
from lipon_hw.station import default_station_text, load_station
from lipon_hw.yamlfile import MAX_NODES, load, loads

from recipes import short_recipe

ROOT = Path(__file__).resolve().parents[1]
SEQUENCE = ROOT / "sequences" / "lipon_rf_sputter.yaml"
STATION = default_station_text()
LOCATED = re.compile(r"^error: (?P<file>[^\n:]+):(?P<line>\d+): (?P<rest>[^\n]+)\n\Z")
GENERATED = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- helpers -------------------------------------------------------------------------------
def stored_runs(data: Path) -> int:
    db = data / "lipon.db"
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def assert_refused(result_code: int, stderr: str, path: Path, field: str | None,
                   data: Path | None = None) -> re.Match:
    """Exit 2, one line `error: FILE:LINE: field: …`, no traceback, no run stored."""
    assert result_code == 2, stderr
    assert "Traceback" not in stderr
    match = LOCATED.match(stderr)
    assert match, f"not one located sentence: {stderr!r}"
    assert match["file"] == str(path)
    if field is not None:
        assert match["rest"].startswith(f"{field}: "), match["rest"]
    if data is not None:
        assert stored_runs(data) == 0
    return match


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stderr


def refused_by_validate_and_run(tmp_path: Path, sequence: Path, station: Path | None,
                                bad: Path, field: str | None) -> re.Match:
    extra = ["--station", station] if station else []
    code, err = cli("validate", sequence, *extra)
    match = assert_refused(code, err, bad, field)
    data = tmp_path / "data"
    code, err = cli("run", sequence, *extra, "--data", data)
    assert_refused(code, err, bad, field, data)
    return match


_BOUNDED = textwrap.dedent("""\
    import os, resource, sys
    cap = 2 << 30  # 2 GiB of address space: an expansion fails instead of taking the host
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from lipon_hw.cli import main
    try:
        main(sys.argv[1:], prog_name="lipon-hw")
    finally:
        # this process's own peak (VmHWM, kB): ru_maxrss would keep the peak of the
        # process that started it (Linux carries it across exec), a whole test worker's
        with open("/proc/self/status") as status, open(os.environ["PEAK_FILE"], "w") as f:
            f.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
""")


def bounded_cli(tmp_path: Path, *args, timeout: float = 20) -> tuple[int, str, float]:
    """The CLI in a fresh interpreter with 2 GiB of address space and a timeout: exit
    code, stderr and peak resident memory in MiB."""
    peak = tmp_path / "peak"
    env = {**os.environ, "PEAK_FILE": str(peak), "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _BOUNDED, *map(str, args)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stderr, int(peak.read_text()) / 1024


def station_with(tmp_path: Path, old: str, new: str) -> Path:
    assert old in STATION, old
    path = tmp_path / "station.yaml"
    path.write_text(STATION.replace(old, new, 1), encoding="utf-8")
    return path


def billion_laughs() -> str:
    """The classic: ten levels of ten aliases, 10⁹ strings once expanded."""
    lines = ['lol0: &lol0 "lol"']
    for level in range(1, 10):
        refs = ", ".join([f"*lol{level - 1}"] * 10)
        lines.append(f"lol{level}: &lol{level} [{refs}]")
    return "\n".join(lines) + "\n"


# --- resources ---------------------------------------------------------------------------
def test_an_alias_bomb_is_refused_at_once_in_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    assert len(bomb.read_bytes()) < 1024
    code, err, peak_mib = bounded_cli(tmp_path, "validate", bomb)
    match = assert_refused(code, err, bomb, None)
    assert f"more than {MAX_NODES:,} values" in match["rest"]
    assert peak_mib < 400, f"{peak_mib:.0f} MiB to refuse an alias bomb"
    code, err, _ = bounded_cli(tmp_path, "validate", SEQUENCE, "--station", bomb)
    assert_refused(code, err, bomb, None)


def test_dev_zero_is_refused_without_reading_it(tmp_path):
    code, err, peak_mib = bounded_cli(tmp_path, "validate", "/dev/zero", timeout=10)
    match = assert_refused(code, err, Path("/dev/zero"), None)
    assert "not a regular file" in match["rest"] and peak_mib < 400
    code, err, _ = bounded_cli(tmp_path, "validate", SEQUENCE, "--station", "/dev/zero")
    assert "not a regular file" in assert_refused(code, err, Path("/dev/zero"), None)["rest"]


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)  # nobody writes to it: a blocking read would wait forever
    for args in (("validate", fifo), ("run", fifo, "--data", tmp_path / "data"),
                 ("validate", SEQUENCE, "--station", fifo)):
        code, err, _ = bounded_cli(tmp_path, *args, timeout=10)
        match = assert_refused(code, err, fifo, None)
        assert "the file is a FIFO, not a regular file" in match["rest"]
    assert stored_runs(tmp_path / "data") == 0


def test_a_50_MB_file_is_refused_by_its_size(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        f.write(SEQUENCE.read_text())
        padding = "# " + "x" * 1021 + "\n"
        f.writelines(padding for _ in range(50 * 1024))
    assert big.stat().st_size > 50e6
    code, err, _ = bounded_cli(tmp_path, "run", big, "--data", tmp_path / "data", timeout=10)
    assert "larger than the 1024 KiB" in assert_refused(code, err, big, None,
                                                         tmp_path / "data")["rest"]


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match=r":1: the file is a directory, not a regular file$"):
        load(tmp_path)


def test_recursive_aliases_are_refused(tmp_path):
    bad = tmp_path / "loop.yaml"
    bad.write_text(SEQUENCE.read_text() + "extra: &me\n  again: [1, *me]\n")
    match = refused_by_validate_and_run(tmp_path, bad, None, bad, "extra.again[1]")
    assert "refers to the list or mapping it is part of" in match["rest"]


def test_5000_deep_nesting_is_refused(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: deep\nsteps: " + "[" * 5000 + "]" * 5000 + "\n")
    match = refused_by_validate_and_run(tmp_path, deep, None, deep, None)
    assert match["line"] == "2" and "nest" in match["rest"]
    block = tmp_path / "block.yaml"  # block style, which the parser does not cap itself
    block.write_text("".join(" " * i + f"k{i}:\n" for i in range(100)))
    match = refused_by_validate_and_run(tmp_path, block, None, block, None)
    assert "nesting is deeper than 64 levels" in match["rest"] and match["line"] == "65"


# --- duplicate keys ----------------------------------------------------------------------
def test_a_duplicate_top_level_key_is_refused(tmp_path):
    recipe = short_recipe(tmp_path)
    text = recipe.read_text().replace("tool: sputter\n", "tool: sputter\ntool: evaporator\n")
    recipe.write_text(text)
    match = refused_by_validate_and_run(tmp_path, recipe, None, recipe, "tool")
    assert match["line"] == "3" and "'tool' appears twice (first at line 2)" in match["rest"]


def test_a_duplicate_step_parameter_is_refused(tmp_path):
    recipe = short_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("rf: {power_W: 50,",
                                                  "rf: {power_W: 50, power_W: 500,"))
    match = refused_by_validate_and_run(tmp_path, recipe, None, recipe, "steps[2].rf.power_W")
    assert match["line"] == "9" and "appears twice (first at line 9)" in match["rest"]


def test_a_duplicate_instrument_is_refused(tmp_path):
    station = station_with(tmp_path, "  qcm:\n", "  rf:\n    driver: ae_bus\n"
                                                 "    address: sim://rf2\n  qcm:\n")
    match = refused_by_validate_and_run(tmp_path, short_recipe(tmp_path), station, station,
                                        "instruments.rf")
    assert match["line"] == "17" and "'rf' appears twice (first at line 9)" in match["rest"]


@st.composite
def documents_with_a_duplicate(draw):
    """A random nested mapping written in block style, one of whose mappings repeats a
    key; returns the text, the path of the repeated key and both lines."""
    names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)
    scalars = st.one_of(st.integers(-1000, 1000), names, st.booleans())
    tree = draw(st.recursive(st.dictionaries(names, scalars, min_size=1, max_size=4),
                             lambda inner: st.dictionaries(names, inner | scalars,
                                                           min_size=1, max_size=4),
                             max_leaves=12))
    mappings = []

    def walk(node, path):
        mappings.append(path)
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, path + (key,))

    walk(tree, ())
    target = draw(st.sampled_from(mappings))
    lines: list[str] = []
    found = {}

    def emit(node, path, indent):
        keys = list(node)
        if path == target:
            repeat = draw(st.sampled_from(keys))
            keys.insert(draw(st.integers(keys.index(repeat) + 1, len(keys))), repeat)
        for key in keys:
            if path == target and key == found.get("key"):
                found["second"] = len(lines) + 1
            elif path == target and key == repeat:
                found.update(key=key, first=len(lines) + 1)
            value = node[key]
            if isinstance(value, dict):
                lines.append(" " * indent + f"{key}:")
                emit(value, path + (key,), indent + 2)
            else:
                lines.append(" " * indent + f"{key}: {str(value).lower()}")
    emit(tree, (), 0)
    return "\n".join(lines) + "\n", target + (found["key"],), found["first"], found["second"]


@GENERATED
@given(documents_with_a_duplicate())
def test_generated_duplicate_keys_are_refused_at_the_second(case):
    text, path, first, second = case
    with pytest.raises(InputError) as err:
        loads(text, "gen.yaml")
    field = ".".join(path)
    assert str(err.value) == (f"gen.yaml:{second}: {field}: the key {path[-1]!r} appears "
                              f"twice (first at line {first})")


@GENERATED
@given(width=st.integers(2, 12), depth=st.integers(1, 5))
def test_generated_alias_expansions_are_bounded(width, depth):
    lines = ["l0: &l0 x"]
    for level in range(1, depth + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    text = "\n".join(lines) + "\n"
    expanded = sum(sum(width ** k for k in range(level + 1)) for level in range(depth + 1)) \
        + depth + 2  # every level's nodes, its key, the document mapping
    if expanded <= MAX_NODES:
        doc = loads(text, "laughs.yaml")
        assert len(doc.data) == depth + 1
    else:
        with pytest.raises(InputError, match=rf"^laughs.yaml:\d+: l\d+(\[\d+\])?: the document "
                                             rf"holds more than {MAX_NODES:,} values"):
            loads(text, "laughs.yaml")


# --- station limits ----------------------------------------------------------------------
RF_LIMITS = "limits: {max_power_W: 100}"


@pytest.mark.parametrize("limits, field, message", [
    ("{max_powr_W: 100}", "max_powr_W", "did you mean max_power_W?"),
    ("{max_power_W: .nan}", "max_power_W", "must be a finite number, not nan"),
    ("{max_power_W: .inf}", "max_power_W", "must be a finite number, not inf"),
    ("{max_power_W: -5}", "max_power_W", "-5 is outside 1…10000"),
    ("{max_power_W: 601}", "max_power_W", "above the instrument's rating sim.rated_power_W"),
    ("{max_flow_sccm: 20}", "max_flow_sccm", "is not a limit driver ae_bus knows"),
    ("{max_power_W: yes}", "max_power_W", "must be a number, not True"),
    ("{max_power_W: '100'}", "max_power_W", "must be a number, not '100'"),
])
def test_rf_limits_that_would_vanish_are_refused(tmp_path, limits, field, message):
    station = station_with(tmp_path, RF_LIMITS, f"limits: {limits}")
    match = refused_by_validate_and_run(tmp_path, short_recipe(tmp_path), station, station,
                                        f"instruments.rf.limits.{field}")
    assert match["line"] == "13" and message in match["rest"]


def test_a_nan_flow_limit_is_refused(tmp_path):
    station = station_with(tmp_path, "limits: {max_flow_sccm: 50}", "limits: {max_flow_sccm: .nan}")
    refused_by_validate_and_run(tmp_path, short_recipe(tmp_path), station, station,
                                "instruments.n2_mfc.limits.max_flow_sccm")


KNOWN_RF = {"max_power_W": (1.0, 600.0)}  # the range, capped by the simulated rating


@GENERATED
@given(key=st.sampled_from(["max_power_W", "max_powr_W", "max_power_w", "power_W",
                            "max_current_A", "maxpower"]),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.floats(-10, 2000)))
def test_generated_rf_limits_are_kept_only_when_known_finite_and_in_range(tmp_path, key,
                                                                           value):
    path = station_with(tmp_path, RF_LIMITS, f"limits: {{{key}: {value!r}}}".replace(
        "nan", ".nan").replace("inf", ".inf"))
    low, high = KNOWN_RF.get(key, (None, None))
    if low is not None and low <= value <= high:
        assert load_station(path).limit("rf", key) == value
        return
    with pytest.raises(InputError) as err:
        load_station(path)
    assert str(err.value).startswith(f"{path}:13: instruments.rf.limits.{key}: ")


# --- station addresses, settings, drivers, ports, roles ----------------------------------
@pytest.mark.parametrize("old, new, field, message", [
    ("address: sim://rf", 'address: ""', "instruments.rf.address", "is empty"),
    ("address: sim://rf", "address: rf", "instruments.rf.address", "has no scheme"),
    ("address: sim://rf", 'address: "serial:///dev/ttyUSB0?baud=12345"',
     "instruments.rf.address", "baud 12345 is not a standard rate"),
    ("address: sim://rf", 'address: "serial:///dev/ttyUSB0?parity=X"',
     "instruments.rf.address", "parity 'X' is not N, E, O, M or S"),
    ("address: sim://rf", 'address: "socket://localhost:70000"',
     "instruments.rf.address", "TCP port '70000' is not a number from 1 to 65535"),
    ("address: sim://rf", 'address: "GPIB::"', "instruments.rf.address",
     "is not a VISA resource string"),
    ("address: sim://qcm", "address: sim://rf", "instruments.qcm.address",
     "is the port of rf as well"),
    ("settings: {unit: 1, pump_coil: 1, vent_coil: 2}\n  # ---",
     "settings: {unit: 1, pump_coil: 0, vent_coil: 2}\n  # ---",
     "instruments.valves.settings", "coil 0 of unit 1 on its bus is driven by shutter"),
    ("address: sim://evap_tc", "address: sim://evap_io", "instruments.substrate_tc.address",
     "whose emulator cannot also serve modbus_thermometer"),
    ("tool: evaporator, model: GEN6-200", "tool: evaporater, model: GEN6-200",
     "instruments.evap_supply.sim.tool", "'evaporater' is not a tool of the simulated lab"),
    ("sim: {rated_power_W: 600}", "sim: {rated_power: 600}", "instruments.rf.sim.rated_power",
     "has a setting the ae_bus emulator does not take"),
    ("settings: {unit: 1}\n    limits", "settings: {unit: 1, colour: red}\n    limits",
     "instruments.rf.settings.colour", "is not a setting of driver ae_bus"),
    ("settings: {unit: 1}\n    limits", "settings: {unit: 99}\n    limits",
     "instruments.rf.settings", "AE Bus unit address 99 is outside 1–31"),
    ("settings: {channel: 3, lower_limit_torr: 1.0e-5}",
     "settings: {channel: 3, lower_limit_torr: .nan}",
     "instruments.process_gauge.settings.lower_limit_torr", "must be finite"),
    ("settings: {address: 6}", "settings: {address: 6, checksum: maybe}",
     "instruments.evap_supply.settings.checksum", "must be true or false, not 'maybe'"),
    ("settings: {address: 6}", "settings: {address: 6.5}",
     "instruments.evap_supply.settings.address", "must be a whole number, not 6.5"),
    ("settings: {address: 6}", "settings: {address: true}",
     "instruments.evap_supply.settings.address", "must be a whole number, not True"),
    ("feed_mm_min: 600 ", "feed_mm_min: fast ", "instruments.stage.settings.feed_mm_min",
     "must be a number, not 'fast'"),
    ("sim: {rated_power_W: 600}", "sim: {rated_power_W: '600'}",
     "instruments.rf.sim.rated_power_W", "must be a number, not '600'"),
    ("driver: ae_bus ", 'driver: "this:s"', "instruments.rf.driver", "is unknown"),
    ("driver: ae_bus ", 'driver: "os:system"', "instruments.rf.driver", "is unknown"),
    ("potentiostat: smu", "potentiostat: rf", "tools.smu_bench.potentiostat",
     "cannot act as potentiostat: it lacks TECHNIQUES"),
    ("density_g_cm3: 2.5", "density_g_cm3: .nan", "instruments.qcm.films.LiPON.density_g_cm3",
     "finite"),
    ("z_ratio: 1.0, tooling_pct: 125}\n  ", "z_ratio: 1.0, tooling_pct: 1.0e9}\n  ",
     "instruments.qcm.films.LiPON.tooling_pct", "less than or equal to 399"),
    ("address: sim://rf", "address: sim://rf\n    timeout_s: .inf", "instruments.rf.timeout_s",
     "finite"),
    ("seed: 1", "seed: -1", "sim.seed", "greater than or equal to 0"),
    ('cells: {"1-16": {kind: lnmo}}', 'cells: {"1-16": {kind: nmc}}', "instruments.mes4.sim",
     "the cell of channel 1 cannot be built (cell kind 'nmc'"),
    ("model: GEN6-200", "model: GEN6-9999x", "instruments.evap_supply.sim.model",
     "model 'GEN6-9999x' is not a Genesys"),
    ("address: sim://smu ", "address: sim://smu\n    limits: {min_V: 5, max_V: 2}\n   ",
     "instruments.smu.limits.min_V", "5 V is not below max_V = 2 V"),
])
def test_station_mistakes_are_refused_before_a_run_exists(tmp_path, old, new, field, message):
    station = station_with(tmp_path, old, new)
    match = refused_by_validate_and_run(tmp_path, short_recipe(tmp_path), station, station,
                                        field)
    assert message in match["rest"]


ADDRESS_PARTS = st.tuples(
    st.sampled_from(["serial://", "socket://", "rfc2217://", "tcp://", "", "serial:",
                     "TCPIP::", "ASRL", "GPIB0::"]),
    st.sampled_from(["/dev/ttyUSB0", "COM3", "10.0.0.5", "host-a", "", "::1", "a b"]),
    st.sampled_from(["", ":5025", ":0", ":70000", ":x", "::INSTR", "::5025::SOCKET"]),
    st.sampled_from(["", "?baud=9600", "?baud=12345", "?parity=E", "?parity=Q&baud=19200",
                     "?stopbits=3", "?colour=red", "?baud=9600&baud=19200"]))


@GENERATED
@given(address=st.one_of(ADDRESS_PARTS.map("".join), st.text(max_size=20)))
def test_generated_addresses_are_accepted_only_when_a_port_can_be_made(tmp_path, address):
    path = station_with(tmp_path, "address: sim://rf\n", f"address: {json.dumps(address)}\n")
    try:
        station = load_station(path)
    except InputError as err:
        assert str(err).startswith(f"{path}:") and "\n" not in str(err)
        return
    address = station.instrument("rf").address
    assert not address.startswith("sim://")  # the generated ones never are
    LinkPool().open(address, {"baudrate": 19200})  # would raise InputError for a bad one


def test_a_protocol_on_an_instrument_that_is_no_potentiostat_is_refused(tmp_path):
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text((ROOT / "sequences" / "lipon_conductivity.yaml").read_text().replace(
        "potentiostat: mes4", "potentiostat: rf"))
    match = refused_by_validate_and_run(tmp_path, protocol, None, protocol, "potentiostat")
    assert "rf is not a potentiostat" in match["rest"]


def test_the_shipped_station_shares_ports_only_on_its_buses():
    station = load_station()
    assert station.spec.instruments["shutter"].address == \
        station.spec.instruments["valves"].address  # one Modbus unit, coils 0 and 1-2
    assert station.spec.instruments["chamber_gauge"].address == \
        station.spec.instruments["process_gauge"].address  # one 937B, channels 1 and 3
    assert station.lacks("mes4", "potentiostat") == []


# --- the command line --------------------------------------------------------------------
@GENERATED
@given(speed=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from(["nan", "inf", "-inf", "0", "1e7", "1e-3"])))
def test_generated_speeds_outside_the_documented_range_are_refused(tmp_path, speed):
    code, err = cli("resume", "1", "--data", tmp_path / "none", "--speed", str(speed))
    assert code == 2
    value = float(speed)
    if 0.01 <= value <= 1e6:
        assert "holds no lipon-hw data" in err  # the option passed; the run is missing
    else:
        assert "Invalid value for '--speed'" in err


@pytest.mark.parametrize("option", [("--seed", "-1"), ("--seed", str(2**32)),
                                    ("--speed", "nan"), ("--speed", "0")])
def test_bad_seed_or_speed_stores_nothing(tmp_path, option):
    code, err = cli("run", short_recipe(tmp_path), "--data", tmp_path / "data", *option)
    assert code == 2 and f"Invalid value for '{option[0]}'" in err
    assert stored_runs(tmp_path / "data") == 0


# --- drivers: built-in or registered plug-ins, never an import named by a file -----------
def test_a_module_named_in_a_station_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "payload.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass X: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    station = station_with(tmp_path, "driver: ae_bus ", 'driver: "payload:X"')
    match = refused_by_validate_and_run(tmp_path, short_recipe(tmp_path), station, station,
                                        "instruments.rf.driver")
    assert "lipon_hw.drivers entry-point group" in match["rest"]
    assert not marker.exists()


def test_a_registered_plug_in_driver_is_checked_like_a_built_in_one(tmp_path, monkeypatch):
    (tmp_path / "vendor_gauge.py").write_text(textwrap.dedent("""\
        class VendorGauge:
            LIMITS = {"max_pressure_torr": (1e-10, 1e3)}

            def __init__(self, name, link, channel: int = 1, max_pressure_torr=None):
                if not 1 <= channel <= 4:
                    raise ValueError(f"channel {channel} is not 1-4")
                self.name, self.link, self.channel = name, link, channel

            def identify(self):
                return "vendor gauge"

            def make_safe(self):
                pass

            def pressure_torr(self):
                return 1e-6
        """))
    info = tmp_path / "vendor_gauge-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vendor-gauge\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lipon_hw.drivers]\n"
                                           "vendor_gauge = vendor_gauge:VendorGauge\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = ("name: bench\ninstruments:\n  gauge:\n    driver: vendor_gauge\n"
            "    address: socket://127.0.0.1:5020\n    settings: {channel: CH}\n"
            "    limits: {max_pressure_torr: 1.0e-3}\ntools:\n  sputter: {base_gauge: gauge}\n")
    path = tmp_path / "bench.yaml"
    path.write_text(text.replace("CH", "2"))
    station = load_station(path)
    assert station.lacks("gauge", "base_gauge") == []
    assert station.unconnected["gauge"].channel == 2
    path.write_text(text.replace("CH", "7"))
    with pytest.raises(InputError, match=r"bench.yaml:6: instruments.gauge.settings: driver "
                                         r"vendor_gauge cannot use them \(channel 7 is not 1-4\)"):
        load_station(path)
    path.write_text(text.replace("CH", "2").replace("max_pressure_torr: 1.0e-3",
                                                    "max_pressure: 1.0e-3"))
    with pytest.raises(InputError, match="did you mean max_pressure_torr"):
        load_station(path)
