"""bluesky devices of the simulated lab (`lipon_hw.bluesky`): a RunEngine counts,
scans and runs a custom plan on them, and every reading and setpoint goes through the
drivers to the simulated world, whose state is read back here to check them.

The lab runs at 600x real time, so the chamber pumps down in about a wall second. Every
check holds however slowly the machine runs: a plan's sleeps and delays are minimums of
wall time, and more time only pumps the chamber further or grows more film."""

from __future__ import annotations

import contextlib

import pytest

pytest.importorskip("ophyd_async", reason="the bluesky extra is not installed "
                    "(pip install 'lipon-hw[bluesky]'; CI installs it with [dev])")

import bluesky.plan_stubs as bps  # noqa: E402
import bluesky.plans as bp  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from bluesky.utils import FailedStatus  # noqa: E402

from lipon_hw.bluesky import devices  # noqa: E402
from lipon_hw.errors import InputError, LinkLost  # noqa: E402

SPEED = 600.0  # simulated seconds per wall second


@pytest.fixture(scope="module")
def RE():
    return RunEngine({})


@contextlib.contextmanager
def simulated_lab(speed=SPEED):
    with devices(speed=speed) as devs:
        yield devs
    world = devs.lab.sim.world
    assert not world.sputter.shutter_open()  # left safe: shutter closed, RF and flow off
    assert world.sputter.n2_setpoint_sccm() == 0
    assert not world.sputter.s.rf_on


@pytest.fixture
def lab(RE):
    with simulated_lab() as devs:
        yield devs


def record(RE):
    docs: dict[str, list] = {"descriptor": [], "event": []}
    token = RE.subscribe(lambda name, doc: docs.setdefault(name, []).append(doc))
    return docs, token


def column(docs, key):
    return [event["data"][key] for event in docs["event"]]


def pumped(devs, wall_s=1.0):
    """A plan: start the roughing pump and let the chamber pump down."""
    yield from bps.mv(devs["valves"], "pump")
    yield from bps.sleep(wall_s)


def test_count_reads_the_world_with_units_and_limits(RE):
    docs, token = record(RE)
    names = ("qcm", "chamber_gauge", "rf", "n2_mfc", "substrate_tc")
    with simulated_lab(speed=60.0) as lab:  # a minute a second: pumping is seen, not done
        try:
            RE(bps.mv(lab["valves"], "pump"))
            RE(bp.count([lab[n] for n in names], num=4, delay=0.1))
        finally:
            RE.unsubscribe(token)
        in_world = lab.lab.sim.world.sputter.pressure_torr()
    keys = docs["descriptor"][0]["data_keys"]
    units = {k: keys[k].get("units") for k in keys}
    assert units["qcm-thickness_nm"] == "nm" and units["qcm-rate_A_s"] == "Å/s"
    assert units["chamber_gauge-pressure_torr"] == "Torr"
    assert units["rf-forward_power_W"] == "W" and units["n2_mfc-flow_sccm"] == "sccm"
    assert units["substrate_tc-temperature_C"] == "degC"
    assert keys["rf-power_setpoint_W"]["limits"]["control"] == {"low": 0.0, "high": 100.0}
    assert keys["n2_mfc-flow_setpoint_sccm"]["limits"]["control"]["high"] == 50.0
    assert keys["substrate_tc-temperature_C"]["limits"]["alarm"]["high"] == 150.0
    assert keys["qcm-thickness_nm"]["source"] == "lipon-hw://qcm/thickness_nm"
    pressure = column(docs, "chamber_gauge-pressure_torr")
    assert len(pressure) == 4
    # the roughing pump draws the chamber down from atmosphere as the wall clock runs:
    # at least 18 s of chamber time from first to last read (τ = 40 s)
    assert 0 < pressure[-1] < 0.8 * pressure[0] and pressure[0] <= 800.0
    assert len(set(pressure)) == 4
    assert all(5.0e6 < f < 6.1e6 for f in column(docs, "qcm-frequency_Hz"))  # a live crystal
    assert all(10.0 < t < 40.0 for t in column(docs, "substrate_tc-temperature_C"))
    assert all(abs(f) < 0.5 for f in column(docs, "n2_mfc-flow_sccm"))  # no gas asked
    assert column(docs, "rf-forward_power_W") == [0.0] * 4 and not any(column(docs, "rf-output"))
    # the world went on pumping after the last read (a reading, not a constant)
    assert in_world < pressure[-1]


def test_scan_over_the_flow_setpoint_moves_the_mfc(RE, lab):
    docs, token = record(RE)
    try:
        RE(pumped(lab))
        RE(bp.scan([lab["process_gauge"]], lab["n2_mfc"], 0.0, 40.0, 5))
    finally:
        RE.unsubscribe(token)
    setpoints = column(docs, "n2_mfc-flow_setpoint_sccm")
    flows = column(docs, "n2_mfc-flow_sccm")
    pressure = column(docs, "process_gauge-pressure_torr")
    assert setpoints == pytest.approx([0.0, 10.0, 20.0, 30.0, 40.0], abs=0.01)
    assert flows == pytest.approx(setpoints, abs=1.0)  # measured flow follows its setpoint
    # more gas, more pressure: 40 sccm into ~17 L/s is ~30 mTorr
    assert all(b > a for a, b in zip(pressure, pressure[1:], strict=False))
    assert 0.01 < pressure[-1] < 0.06
    assert docs["descriptor"][0]["data_keys"]["n2_mfc-flow_sccm"]["units"] == "sccm"
    # the simulated controller really holds the last setpoint
    assert lab.lab.sim.world.sputter.n2_setpoint_sccm() == pytest.approx(40.0)


def deposit_and_watch(devs, reads=5):
    """A custom plan: gas and RF on a pumped chamber, shutter open while the crystal's
    thickness is read over time, shutter closed, RF off."""
    yield from pumped(devs)
    yield from bps.mv(devs["n2_mfc"], 20.0, devs["rf"], 50.0)
    yield from bps.mv(devs["rf"].output, True)
    yield from bps.sleep(0.05)  # ignition and match (30 s of chamber time)
    yield from bps.open_run()
    yield from bps.mv(devs["shutter"], "open")
    for _ in range(reads):
        yield from bps.trigger_and_read([devs["qcm"], devs["shutter"], devs["rf"]])
        yield from bps.sleep(0.1)
    yield from bps.mv(devs["shutter"], "closed")
    yield from bps.trigger_and_read([devs["shutter"]], name="closed")
    yield from bps.mv(devs["rf"].output, False, devs["n2_mfc"], 0.0)
    yield from bps.close_run()


def test_a_custom_plan_deposits_while_the_shutter_is_open(RE, lab):
    docs, token = record(RE)
    try:
        RE(deposit_and_watch(lab))
    finally:
        RE.unsubscribe(token)
    primary = [e for e in docs["event"] if "qcm-thickness_nm" in e["data"]]
    thickness = [e["data"]["qcm-thickness_nm"] for e in primary]
    assert len(thickness) == 5
    assert all(b > a for a, b in zip(thickness, thickness[1:], strict=False))  # it grows
    assert all(e["data"]["shutter-state"] == "open" for e in primary)
    assert all(40.0 < e["data"]["rf-forward_power_W"] < 60.0 for e in primary)
    assert all(0.1 < e["data"]["qcm-rate_A_s"] < 2.0 for e in primary)  # ~0.5 Å/s at 50 W
    closed = [e for e in docs["event"] if "qcm-thickness_nm" not in e["data"]]
    assert [e["data"]["shutter-state"] for e in closed] == ["closed"]
    world = lab.lab.sim.world
    assert not world.sputter.shutter_open() and not world.sputter.s.rf_on
    film = world.film_stack()  # film reached the substrate only through the open shutter
    assert film and film[-1]["material"] == "LiPON" and film[-1]["thickness_nm"] > 0


def test_a_setpoint_beyond_the_station_limit_is_refused_before_anything_is_sent(
        RE, lab, monkeypatch):
    link = lab.lab.instruments["rf"].link
    sent = []
    monkeypatch.setattr(link, "write", lambda data: sent.append(data))  # nothing may go out
    with pytest.raises(InputError) as refused:
        RE(bps.mv(lab["rf"], 150.0))
    message = str(refused.value)
    assert message == ("rf: power_setpoint_W 150 W is outside the limit 0–100 W "
                       "(max_power_W in the station); nothing was sent")
    with pytest.raises(FailedStatus) as failed:  # the signal itself refuses it too
        RE(bps.mv(lab["rf"].power_setpoint_W, 150.0))
    assert isinstance(failed.value.__cause__, InputError)
    assert str(failed.value.__cause__) == message
    with pytest.raises(InputError, match="n2_mfc: flow_setpoint_sccm -1 sccm is outside"):
        RE(bps.mv(lab["n2_mfc"], -1.0))
    with pytest.raises(InputError, match="shutter can be set to 'open', 'closed', not 'ajar'"):
        RE(bps.mv(lab["shutter"], "ajar"))
    assert sent == []
    monkeypatch.undo()
    assert lab.lab.sim.world.sputter.s.setpoint_W == 0  # the generator never heard of it


def test_a_lost_link_is_reported_naming_the_device(RE, lab):
    RE(bp.count([lab["n2_mfc"]]))  # it answers first
    lab.lab.sim.emulators["mfc"].faults.unplugged = True
    with pytest.raises(LinkLost) as lost:
        RE(bp.count([lab["n2_mfc"]]))
    message = str(lost.value)
    assert message.startswith("n2_mfc could not read flow_sccm (sim://mfc ")
    assert "unplugged" in message and "\n" not in message
    lab.lab.sim.emulators["mfc"].faults.unplugged = False  # plugged back for the safe state
    lab.lab.pool.link("sim://mfc").reopen_now()


def test_only_the_bluesky_package_imports_bluesky():
    """The extra stays optional: no other module of lipon_hw imports bluesky or
    ophyd(-async), at the top or inside a function."""
    import ast
    from pathlib import Path

    import lipon_hw

    root = Path(lipon_hw.__file__).parent
    offences = []
    for path in sorted(root.rglob("*.py")):
        if (root / "bluesky") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level \
                else []
            offences += [f"{path.relative_to(root)}:{node.lineno}: {n}" for n in names
                         if n.split(".")[0] in ("bluesky", "ophyd", "ophyd_async")
                         or n.startswith("lipon_hw.bluesky")]
    assert len(list(root.rglob("*.py"))) > 50 and offences == []
