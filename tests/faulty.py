"""The default simulated station with a fault schedule, connected on a hand-driven clock."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml
from conftest import ManualClock

from lipon_hw.station import default_station_text, load_station

SIM_HEADER = "sim:\n  seed: 1\n"


def station_text(faults: list[dict] | str, seed: int = 1) -> str:
    """The default station's text with `faults` (entries, or YAML lines) as `sim: faults:`."""
    block = faults if isinstance(faults, str) else yaml.safe_dump(faults, sort_keys=False)
    entries = textwrap.indent(block, "    ")
    text = default_station_text()
    assert SIM_HEADER in text
    return text.replace(SIM_HEADER, f"sim:\n  seed: {seed}\n  faults:\n{entries}")


def connect(faults: list[dict] | str = (), seed: int = 1, t0: float = 0.0):
    """(lab, clock): the default station with `faults`, connected at virtual time `t0`."""
    clock = ManualClock(t0)
    station = load_station(text=station_text(list(faults) if not isinstance(faults, str)
                                             else faults, seed), path="faulty_station.yaml")
    return station.connect(clock), clock


def at(clock: ManualClock, t: float) -> None:
    """Move the hand clock to virtual time `t` (never back)."""
    assert t >= clock.t
    clock.t = t


def station_with_rules(tmp_path, rules: dict, faults: list[dict] = ()) -> Path:
    """The default station's file with `rules` as its `interlocks:` (tool or instrument →
    rule entries) and `faults` as its `sim: faults:`, written to `tmp_path/station.yaml`."""
    spec = yaml.safe_load(station_text(list(faults)) if faults else default_station_text())
    spec["interlocks"] = rules
    path = Path(tmp_path) / "station.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def fault_station(tmp_path, faults: list[dict], rules: dict | None = None) -> Path:
    """The default station's file with `faults` as its `sim: faults:` and `rules` (tool or
    instrument → rule entries) as its `interlocks:`, written to `tmp_path/station.yaml`."""
    spec = yaml.safe_load(default_station_text())
    spec["sim"]["faults"] = faults
    if rules:
        spec["interlocks"] = rules
    path = Path(tmp_path) / "station.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


#: what a run says when channel 2's cell could not be disconnected (`lost_cell_campaign`)
CELL_2_NOT_SAFE = ("the hardware was NOT all made safe: channel 2: the cell could not be "
                   "disconnected")


def lost_cell_campaign(tmp_path) -> tuple[str, str]:
    """(protocol, station) files of a 3-cycle LNMO campaign on channels 1-2 whose channel 2
    link drops for good at 1800 s (the simulated lab's `link_drop`): its cell cannot be
    disconnected, and the run must end failed saying so (`CELL_2_NOT_SAFE`)."""
    from recipes import LNMO

    station = fault_station(tmp_path, [{"fault": "link_drop", "instrument": "mes4",
                                        "channel": 2, "at_s": 1800}])
    protocol = Path(tmp_path) / "lnmo.yaml"
    protocol.write_text(LNMO.format(channels="1-2", cycles=3), encoding="utf-8")
    return str(protocol), str(station)


def spy_labs(monkeypatch) -> list:
    """Every lab a station connects from now on (the run's own, to read its simulated world
    after the run has closed its links)."""
    from lipon_hw.station import Station

    labs, connect_lab = [], Station.connect

    def spied(self, *args, **kwargs):
        labs.append(connect_lab(self, *args, **kwargs))
        return labs[-1]

    monkeypatch.setattr(Station, "connect", spied)
    return labs
