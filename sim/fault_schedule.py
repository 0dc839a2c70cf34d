"""The simulated lab's fault schedule: entries of the catalogue (`fault_catalogue`), timed.

An entry, in a station's `sim: faults:` list or given to `SimLab.faults.add(...)`:

    - {fault: vacuum_leak, tool: sputter, at_s: 3600, for_s: 600, leak_mbar_l_s: 1.0e-3}
    - {fault: silent, instrument: qcm, after_s: [100, 200], for_s: 30}
    - {fault: cell_hard_short, instrument: mes4, channel: 3, after_cycles: 200}

- `fault`: a name of the catalogue; `instrument` (a station instrument), or `tool`
  (`sputter`, `evaporator`) for faults of a chamber, and `channel` on a potentiostat;
- when: `at_s` (virtual time, seconds) or `after_s` (from when the lab was built, or from
  `add()`); cell faults may instead come `after_cycles` equivalent full cycles of the
  cell on the channel; nothing: at once. Events of a run (a step, a loop count) are the
  engine's to time, not the lab's;
- `for_s`: the fault clears after that long (faults that cannot clear refuse it);
- the fault's parameters, each a number inside its range (the catalogue's `Param`).

Any number may be given as a range `[low, high]`: it is drawn from a generator seeded by
the station's seed and the entry's position, so the same seed gives the same faults at the
same virtual times. A malformed entry is refused with `FaultEntryError`, whose `loc`
names the field (the station check turns it into file:line: field: sentence).

Firing is lazy, as the World is: `World.sync` pops the events due, advances the tools to
each event's own time and applies it there, so physics sees a fault exactly when it came;
every emulator calls `World.sync` (through `Faults.tick`) before it acts on bytes.
"""

from __future__ import annotations

import difflib
import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from lipon_hw.errors import InputError
from lipon_hw.sim.fault_catalogue import (
    ERROR_REPLIES,
    FAULTS,
    TARGETS,
    FaultKind,
    Param,
    life_limits_Hz,
)

#: the timing fields and their ranges (seconds; cycles)
TIMING = {"at_s": Param(0.0, 1e9, None, "s", "virtual time of the onset"),
          "after_s": Param(0.0, 1e9, None, "s", "delay from when the entry was armed"),
          "after_cycles": Param(0.0, 1e6, None, "cycles", "equivalent full cycles of the cell"),
          "for_s": Param(1e-3, 1e9, None, "s", "how long it lasts")}
TARGET_FIELDS = ("instrument", "tool", "channel")
#: a salt so the schedule's draws differ from every other seeded stream of the lab
SCHEDULE_STREAM = 0xFA17


class FaultEntryError(InputError):
    """A malformed fault entry; `loc` is the path of the field at fault."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc


@dataclass
class ScheduledFault:
    """One entry, parsed and resolved: what it hits, when, with which numbers."""

    index: int
    kind: FaultKind
    params: dict
    instrument: str | None
    tool: str | None
    channel: int | None
    start_s: float | None  # None: triggered by cycles only
    after_cycles: float | None
    for_s: float | None
    target: object = field(repr=False, default=None)
    times: list[float] = field(default_factory=list)  # when it acts (arcs: each arc)

    @property
    def end_s(self) -> float | None:
        return None if self.for_s is None or self.start_s is None else \
            self.start_s + self.for_s

    def cell_fault(self) -> dict:
        """The entry as a `lipon_hw.sim.cells.faults.Fault` spec."""
        out = {"kind": self.kind.name.removeprefix("cell_")}
        if self.after_cycles is not None:
            out["at_cycle"] = self.after_cycles
        else:
            out["at_s"] = self.start_s
        out.update({k: v for k, v in self.params.items() if v is not None})
        return out


class FaultSchedule:
    """The lab's schedule: `add` entries; `pop_due(t)` gives what fires by `t`, in order."""

    def __init__(self, lab, seed: int):
        self._lab = lab
        self._seed = seed
        self._heap: list[tuple[float, int, Callable[[float], None]]] = []
        #: when the next event is due (inf: none): what every touch of the lab compares with
        self.next_s = math.inf
        self._seq = 0
        self.entries: list[ScheduledFault] = []
        self.fired: list[tuple[float, str, str]] = []  # (time, fault, "start"/"stop"/"arc")
        self._held: dict[tuple, int] = {}  # entries of a non-additive fault now in force

    # --- the API --------------------------------------------------------------------------
    def add(self, entry: dict | None = None, *, where: tuple = (), **fields) -> ScheduledFault:
        """Schedule one entry (a dict as in a station file, or keywords): `after_s` counts
        from now. FaultEntryError names the field of a malformed entry."""
        raw = dict(entry or {}, **fields) if isinstance(entry, dict | None) else entry
        index = len(self.entries)
        where = where or ("faults", index)
        scheduled = self._parse(raw, index, where)
        self.entries.append(scheduled)
        self._arm(scheduled)
        return scheduled

    def pop_due(self, t: float) -> Iterator[tuple[float, Callable[[float], None]]]:
        """Events due by `t`, earliest first (ties in the order they were scheduled)."""
        heap = self._heap
        while heap and heap[0][0] <= t:
            te, _, action = heapq.heappop(heap)
            self.next_s = heap[0][0] if heap else math.inf
            yield te, action

    def at(self, t: float, action: Callable[[float], None]) -> None:
        """Any other lab event at `t`, fired as the faults are, whichever instrument is
        touched first (the prober's needles landing while only the potentiostat talks)."""
        self._enqueue(t, action)

    def due(self, t: float) -> bool:
        return self.next_s <= t

    def _enqueue(self, t: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self._heap, (t, self._seq, action))
        self._seq += 1
        self.next_s = self._heap[0][0]

    def cell_faults(self, instrument: str, channel: int, since_s: float) -> list[dict]:
        """The scheduled faults of a channel a cell mounted at `since_s` takes on: those
        still ahead, and those counted in the cell's own cycles."""
        return [e.cell_fault() for e in self.entries if e.kind.target == "cell"
                and (e.instrument, e.channel) == (instrument, channel)
                and (e.after_cycles is not None or e.start_s >= since_s)]

    # --- parsing ----------------------------------------------------------------------------
    def _parse(self, raw, index: int, where: tuple) -> ScheduledFault:
        if not isinstance(raw, dict):
            raise FaultEntryError(where, "must be a mapping with a fault, what it hits and "
                                         "when, e.g. {fault: silent, instrument: rf, "
                                         "at_s: 3600}")
        name = raw.get("fault")
        if not isinstance(name, str) or name not in FAULTS:
            guess = difflib.get_close_matches(str(name), list(FAULTS), n=1)
            hint = f"did you mean {guess[0]}? " if guess else ""
            raise FaultEntryError(where + ("fault",),
                                  f"{name!r} is not a fault of the catalogue ({hint}it has: "
                                  f"{', '.join(FAULTS)})" if name is not None else
                                  f"is missing: name one of {', '.join(FAULTS)}")
        kind = FAULTS[name]
        timing = ["at_s", "after_s", "for_s"] + (["after_cycles"] if kind.target == "cell"
                                                else [])
        allowed = ["fault", *TARGET_FIELDS, *timing, *kind.params]
        for key in raw:
            if key not in allowed:
                extra = (" (events of a run are the engine's to time: give at_s or after_s)"
                         if key in ("at", "step", "nth") else "")
                raise FaultEntryError(where + (key,), f"is not a field of fault {name}{extra}; "
                                                      f"it takes: {', '.join(allowed[1:])}")
        target, instrument, tool, channel, driver = self._resolve(kind, raw, where)
        rng = np.random.default_rng([self._seed, SCHEDULE_STREAM, index])
        when = {key: self._number(raw[key], TIMING[key], where + (key,), rng)
                for key in timing if key in raw}
        starts = [k for k in ("at_s", "after_s", "after_cycles") if k in when]
        if len(starts) > 1:
            raise FaultEntryError(where + (starts[1],), f"and {starts[0]} both say when; "
                                                        "give one")
        if "for_s" in when and not kind.clears:
            raise FaultEntryError(where + ("for_s",), f"{name} does not clear by itself; "
                                                      "drop for_s")
        params = {}
        for key, spec in kind.params.items():
            if key == "code":
                spec = _error_range(kind, driver)
            if key in raw:
                params[key] = self._number(raw[key], spec, where + (key,), rng)
            else:
                if spec.default is None and kind.target != "cell":
                    raise FaultEntryError(where, f"fault {name} needs {key} ({spec.doc}, "
                                                 f"{_range(spec)})")
                params[key] = spec.default
        if name == "source_burnout" and params["boat"] > len(target.p.boats):
            raise FaultEntryError(where + ("boat",), f"the evaporator has boats 1–"
                                                     f"{len(target.p.boats)}, not "
                                                     f"{params['boat']:g}")
        now = self._lab.world.clock()
        start = (when["at_s"] if "at_s" in when else now + when["after_s"] if "after_s" in
                 when else None if "after_cycles" in when else now)
        entry = ScheduledFault(index, kind, params, instrument, tool, channel, start,
                               when.get("after_cycles"), when.get("for_s"), target)
        if name == "rf_arcs":
            count = int(params["count"])
            if count > 1 and entry.for_s is None:
                raise FaultEntryError(where + ("count",), f"{count} arcs need for_s, the "
                                                          "window they come in")
            entry.times = [start] if count == 1 else \
                sorted(start + x for x in rng.uniform(0.0, entry.for_s, count).tolist())
        return entry

    def _number(self, value, spec: Param, loc: tuple, rng) -> float:
        """A number inside `spec`'s range, or one drawn from a `[low, high]` inside it."""
        if isinstance(value, list | tuple) and len(value) == 2:
            low, high = (self._number(v, spec, loc, None) for v in value)
            if not low <= high:
                raise FaultEntryError(loc, f"the range [{low:g}, {high:g}] runs backwards")
            return float(rng.integers(int(low), int(high) + 1)) if spec.integer else \
                float(rng.uniform(low, high))
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value):
            raise FaultEntryError(loc, f"must be a finite number or a range [low, high], not "
                                       f"{value!r} ({spec.doc}, {_range(spec)})")
        if not spec.low <= value <= spec.high:
            raise FaultEntryError(loc, f"{value:g} is outside {_range(spec)} ({spec.doc})")
        if spec.integer and value != int(value):
            raise FaultEntryError(loc, f"must be a whole number, not {value:g}")
        return float(value)

    # --- what an entry hits ------------------------------------------------------------------
    def _resolve(self, kind: FaultKind, raw: dict, where: tuple):
        """(target, instrument, tool, channel, driver) of an entry."""
        lab = self._lab
        instrument, tool, channel = (raw.get(k) for k in TARGET_FIELDS)
        if kind.target == "host":
            given = [k for k in TARGET_FIELDS if k in raw]
            if given:
                raise FaultEntryError(where + (given[0],), f"{kind.name} hits the host, not "
                                                           "an instrument; drop it")
            return lab, None, None, None, None
        if tool is not None:
            if kind.target not in ("sputter", "evaporator", "chamber"):
                raise FaultEntryError(where + ("tool",), f"{kind.name} hits "
                                      f"{TARGETS[kind.target]}: name its instrument")
            if instrument is not None:
                raise FaultEntryError(where + ("tool",), "and instrument both say what it "
                                                         "hits; give one")
            if tool not in lab.world.tools or kind.target not in ("chamber", tool):
                ok = list(lab.world.tools) if kind.target == "chamber" else [kind.target]
                raise FaultEntryError(where + ("tool",), f"{tool!r} is not a tool "
                                      f"{kind.name} can hit (it can: {', '.join(ok)})")
            if channel is not None:
                raise FaultEntryError(where + ("channel",), "a tool has no channels")
            return lab.world.tools[tool], None, tool, None, None
        if instrument is None:
            raise FaultEntryError(where, f"fault {kind.name} needs an instrument"
                                  + (" or a tool" if kind.target in ("sputter", "evaporator",
                                                                      "chamber") else ""))
        driver = lab.drivers_by_instrument.get(instrument)
        if driver is None:
            known = ", ".join(lab.drivers_by_instrument) or "none"
            raise FaultEntryError(where + ("instrument",), f"{instrument!r} is not a simulated "
                                                           f"instrument (these are: {known})")
        if kind.drivers is not None and driver not in kind.drivers:
            raise FaultEntryError(where + ("instrument",), f"{instrument} ({driver}) cannot "
                                  f"show {kind.name}; instruments that can: drivers "
                                  f"{', '.join(kind.drivers)}")
        ports = lab.ports_of(instrument)
        if channel is not None or kind.target in ("cell", "channel"):
            if instrument not in lab.potentiostats:
                raise FaultEntryError(where + ("channel",) if channel is not None else where
                                      + ("instrument",), f"{instrument} is not a potentiostat "
                                                         "with channels")
            if channel is None and len(ports) > 1:
                raise FaultEntryError(where, f"{instrument} has {len(ports)} channels: name "
                                             "the channel")
            channel = 1 if channel is None else channel
            if isinstance(channel, bool) or not isinstance(channel, int) or \
                    not 1 <= channel <= len(ports):
                raise FaultEntryError(where + ("channel",), f"{channel!r} is not a channel of "
                                                            f"{instrument} (1–{len(ports)})")
        if kind.target == "wire":
            return (ports if channel is None else [ports[channel - 1]]), instrument, None, \
                channel, driver
        if kind.target in ("cell", "channel"):
            return ports[channel - 1], instrument, None, channel, driver
        emulator = ports[0]
        tool_obj = getattr(emulator, "tool", None)
        names = {id(t): n for n, t in lab.world.tools.items()}
        tool_name = names.get(id(tool_obj))
        if tool_name is None or kind.target not in ("chamber", "crystal", tool_name):
            raise FaultEntryError(where + ("instrument",), f"{instrument} is not on "
                                                           f"{TARGETS[kind.target]}")
        if kind.target == "crystal":
            return (tool_obj, life_limits_Hz(emulator)), instrument, tool_name, None, driver
        return tool_obj, instrument, tool_name, None, driver

    # --- arming ---------------------------------------------------------------------------------
    def _arm(self, e: ScheduledFault) -> None:
        kind, name = e.kind, e.kind.name
        if kind.target == "cell":
            self._lab.add_cell_fault(e)
            return
        if name == "rf_arcs":
            for t in e.times:
                self._push(t, e, "arc", kind.start)
            return
        e.times = [e.start_s]
        self._push(e.start_s, e, "start", kind.start)
        if e.for_s is not None and kind.stop is not None:
            self._push(e.end_s, e, "stop", kind.stop)

    def _push(self, t: float, e: ScheduledFault, what: str, fn) -> None:
        target = e.target
        key = (e.kind.name, tuple(map(id, target)) if isinstance(target, list) else id(target))

        def action(t_fire: float) -> None:
            if not e.kind.additive and what in ("start", "stop"):
                held = self._held.get(key, 0) + (1 if what == "start" else -1)
                self._held[key] = held
                if what == "stop" and held > 0:  # another entry still holds it
                    self.fired.append((t_fire, e.kind.name, "held"))
                    return
            fn(target, e.params, t_fire)
            self.fired.append((t_fire, e.kind.name, what))

        self._enqueue(t, action)


def _range(spec: Param) -> str:
    unit = f" {spec.unit}" if spec.unit else ""
    return f"{spec.low:g}…{spec.high:g}{unit}"


def _error_range(kind: FaultKind, driver: str | None) -> Param:
    """The `code` of an error_reply is the protocol's: its range and default."""
    if kind.name != "error_reply":
        return kind.params["code"]
    low, high, default, doc = ERROR_REPLIES[driver]
    return Param(low, high, default, "", doc, integer=True)
