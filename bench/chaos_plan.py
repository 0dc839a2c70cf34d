"""What one chaos run is: a sequence (shipped, or a bench-local short variant of a shipped
one's shape) and a station with 1-3 faults from the catalogue that fit the sequence's
tool, drawn from a seeded generator. Used by `bench/chaos.py`."""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass, field

import yaml

from lipon_hw.station import default_station_text

#: a short LiPON deposition: the shipped recipe's shape, 30 nm (tests/recipes.py's SHORT)
SHORT_LIPON = """\
name: chaos short LiPON
tool: sputter
sample: {id: C-1, substrate: glass}
record_every_s: 5
checkpoint_every_s: 30
steps:
  - pump_down: {below_torr: 2.0e-5, timeout_min: 60}
  - gas: {n2_sccm: 20, pressure_mtorr: 15, settle_s: 10}
  - rf: {power_W: 50, ramp_W_per_s: 5, regulation: load}
  - presputter: {for_min: 1}
  - deposit: {film: LiPON, until_thickness_nm: 30, max_h: 8}
  - rf: {power_W: 0, ramp_W_per_s: 10}
  - gas: {n2_sccm: 0}
  - vent: {}
interlocks:
  - {when: "reflected_power_W > 0.1 * forward_power_W for 5 s", then: pause,
     during: [presputter, deposit]}
  - {when: "process_gauge.pressure_torr > 0.03", then: abort, during: [presputter, deposit]}
"""

#: the thesis LNMO protocol's shape, two channels and three cycles
SHORT_LNMO = """\
name: chaos LNMO short
kind: cycling
potentiostat: mes4
channels: 1-2
cell: {kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}
record: {every_s: 30, every_mV: 5}
safety: {min_V: 2.5, max_V: 5.2}
steps:
  - tag: cycle
  - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_h: 2}}
  - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5, time_h: 2}}
  - loop: {to: cycle, times: 3}
"""

#: the shipped Li plating protocol's shape: two cells, two cycles
SHORT_PLATING = """\
name: chaos Li / LiPON / Cu plating short
kind: cycling
potentiostat: mes4
channels: 1-2
cell: {kind: plating, area_cm2: 0.04}
record: {every_s: 600, every_mV: 5}
safety: {min_V: -1.5, max_V: 3.5}
steps:
  - rest: {until: {time_min: 10}}
  - tag: cycle
  - cc: {current_A: -5.0e-8, until: {capacity_uAh: 2.0, voltage_V: -1.2}}
  - cc: {current_A: 5.0e-8, until: {voltage_V: 0.5, time_h: 400}}
  - loop: {to: cycle, times: 2}
"""


@dataclass(frozen=True)
class Sequence:
    name: str
    #: a shipped sequence's bare name, or None for `text`
    shipped: str | None
    text: str | None
    tool: str  # sputter, evaporator, cycler, prober
    #: virtual seconds it takes undisturbed (where faults are timed)
    duration_s: float
    #: its usual wall time from its first readings to its end, on a loaded 2-core machine
    #: (the scale of the moment a kill comes)
    wall_s: float = 5.0
    #: potentiostat channels it uses (cell tests; a prober's sites)
    channels: tuple[int, ...] = ()


SEQUENCES = [
    Sequence("lipon_rf_sputter", "lipon_rf_sputter", None, "sputter", 26610, 7.0),
    Sequence("cu_collector", "cu_collector", None, "evaporator", 16160, 6.0),
    Sequence("au_seed", "au_seed", None, "evaporator", 14205, 3.0),
    Sequence("li_anode", "li_anode", None, "evaporator", 15835, 6.0),
    Sequence("short_lipon", None, SHORT_LIPON, "sputter", 4000, 1.0),
    Sequence("lipon_conductivity", "lipon_conductivity", None, "cycler", 8297, 2.5, (1,)),
    Sequence("lnmo_short", None, SHORT_LNMO, "cycler", 6 * 3600, 3.0, (1, 2)),
    Sequence("plating_short", None, SHORT_PLATING, "cycler", 400000, 5.0, (1, 2)),
    # 600 cells, 20 touchdowns of the 32-site card (probe_pstat channels 1-32) in 52 s
    Sequence("sheet_screening", "sheet_screening", None, "prober", 52, 5.0,
             tuple(range(1, 33))),
]

SPUTTER = ("rf", "qcm", "chamber_gauge", "process_gauge", "n2_mfc", "shutter")
EVAPORATOR = ("evap_supply", "evap_qcm", "evap_controller", "evap_gauge", "evap_shutter",
              "substrate_tc")
CHECKSUM = {"rf", "qcm", "shutter", "evap_qcm", "evap_controller", "evap_shutter",
            "substrate_tc"}
ERROR_REPLY = {"rf", "chamber_gauge", "process_gauge", "n2_mfc", "shutter", "evap_gauge",
               "evap_shutter", "substrate_tc"}


@dataclass
class Fault:
    entry: dict
    label: str = field(default="")


def _window(rng: random.Random, seq: Sequence) -> dict:
    return {"at_s": round(rng.uniform(0.02, 0.9) * seq.duration_s, 1)}


def _for(rng: random.Random, longest_s: float = 900.0) -> dict:
    return {"for_s": round(rng.choice([rng.uniform(1, 30), rng.uniform(30, longest_s)]), 1)}


def draw_fault(rng: random.Random, seq: Sequence) -> dict:
    """One catalogue entry fitting the sequence's tool, timed within its run."""
    when = _window(rng, seq)
    if seq.tool == "cycler":
        ch = rng.choice(seq.channels)
        kind = rng.choice(["cell_soft_short", "cell_hard_short", "cell_open",
                           "cell_high_interface", "channel_fault", "link_drop", "silent",
                           "garble", "error_reply", "clock_jump"])
        if kind == "clock_jump":
            return {"fault": kind, **when, "jump_s": rng.choice([-3600, 86400]), **_for(rng)}
        entry = {"fault": kind, "instrument": "mes4", "channel": ch, **when}
        if kind.startswith("cell_"):
            return entry  # cell faults never clear
        return {**entry, **_for(rng)}
    if seq.tool == "prober":
        return _prober_fault(rng, seq, when)
    names = SPUTTER if seq.tool == "sputter" else EVAPORATOR
    wire = ["link_drop", "silent", "garble", "bad_checksum", "error_reply"]
    if seq.tool == "sputter":
        physical = ["rf_arcs", "reflected_power", "plasma_loss", "crystal_fail",
                    "crystal_life_end", "vacuum_leak", "gas_supply_loss"]
    else:
        physical = ["crystal_fail", "crystal_life_end", "vacuum_leak", "source_burnout",
                    "substrate_overtemp"]
    kind = rng.choice(wire + physical + ["clock_jump"])
    tool = {"tool": seq.tool}
    if kind in wire:
        pool = {"bad_checksum": CHECKSUM, "error_reply": ERROR_REPLY}.get(kind, set(names))
        instrument = rng.choice(sorted(set(names) & pool))
        return {"fault": kind, "instrument": instrument, **when, **_for(rng)}
    if kind == "clock_jump":
        return {"fault": kind, **when, "jump_s": rng.choice([-3600, 86400]), **_for(rng)}
    if kind == "rf_arcs":
        return {"fault": kind, **tool, **when, "for_s": round(rng.uniform(10, 600), 1),
                "count": rng.randint(1, 20)}
    if kind == "reflected_power":
        return {"fault": kind, **tool, **when, **_for(rng),
                "reflected_pct": round(rng.uniform(5, 60), 1)}
    if kind == "crystal_life_end":
        qcm = "qcm" if seq.tool == "sputter" else rng.choice(["evap_qcm", "evap_controller"])
        return {"fault": kind, "instrument": qcm, **when,
                "at_life_pct": round(rng.uniform(0, 99), 1)}
    if kind == "vacuum_leak":
        return {"fault": kind, **tool, **when, **_for(rng),
                "leak_mbar_l_s": float(f"{10 ** rng.uniform(-6, -1):.2g}")}
    if kind == "gas_supply_loss":
        return {"fault": kind, "instrument": "n2_mfc", **when, **_for(rng)}
    if kind == "source_burnout":
        return {"fault": kind, **tool, **when, **_for(rng)}
    if kind == "substrate_overtemp":
        return {"fault": kind, **tool, **when, **_for(rng),
                "rise_C": round(rng.uniform(20, 300), 1)}
    return {"fault": kind, **tool, **when, **_for(rng)}  # plasma_loss, crystal_fail


def _prober_fault(rng: random.Random, seq: Sequence, when: dict) -> dict:
    """A fault of a screening's prober: its stage's wire or a site's potentiostat channel
    (its wire, or the channel failing), or the host's clock; lasting up to 90 s (a sheet
    takes about a minute: half of them within the 60 s a site's channel is waited for)."""
    kind = rng.choice(["link_drop", "silent", "garble", "error_reply", "channel_fault",
                       "clock_jump"])
    if kind == "clock_jump":
        return {"fault": kind, **when, "jump_s": rng.choice([-3600, 86400]), **_for(rng, 90)}
    instrument = "probe_pstat" if kind == "channel_fault" else \
        rng.choice(["stage", "probe_pstat"])
    site = {"channel": rng.choice(seq.channels)} if instrument == "probe_pstat" else {}
    return {"fault": kind, "instrument": instrument, **site, **when, **_for(rng, 90)}


def label(entry: dict) -> str:
    """`fault@target t+for` in a few characters, for the table."""
    target = entry.get("instrument") or entry.get("tool") or "host"
    if "channel" in entry:
        target += f"/{entry['channel']}"
    dur = f"+{entry['for_s']:g}" if "for_s" in entry else ""
    return f"{entry['fault']}@{target} {entry['at_s']:g}{dur}s"


def station_text(entries: list[dict], seed: int) -> str:
    """The built-in simulated station with `entries` as its `sim: faults:` and `seed`."""
    text = default_station_text()
    header = "sim:\n  seed: 1\n"
    if header not in text:
        raise RuntimeError("the built-in station's sim: section has changed shape")
    block = textwrap.indent(yaml.safe_dump(entries, sort_keys=False,
                                           default_flow_style=None), "    ")
    return text.replace(header, f"sim:\n  seed: {seed}\n  faults:\n{block}")


@dataclass
class Plan:
    index: int
    seed: int
    sequence: Sequence
    faults: list[dict]
    kill: bool
    #: for a killed run: the share of its usual wall time after which the kill comes, once
    #: it has readings; and whether each resume is killed again (bounded by max_kills)
    kill_at: float
    rekill: list[bool]


def plan_run(index: int, base_seed: int, kill_fraction: float, max_kills: int,
             sequences: list[Sequence] | None = None) -> Plan:
    """The seeded plan of run `index` of a benchmark seeded `base_seed`: the same
    (base_seed, index) gives the same plan whatever --runs or --jobs say."""
    seed = base_seed * 100_003 + index
    rng = random.Random(seed)
    seq = rng.choice(sequences or SEQUENCES)
    faults = [draw_fault(rng, seq) for _ in range(rng.randint(1, 3))]
    kill = rng.random() < kill_fraction
    rekill = [rng.random() < 0.3 for _ in range(max(0, max_kills - 1))]
    return Plan(index, seed, seq, faults, kill, rng.uniform(0.05, 0.9), rekill)
