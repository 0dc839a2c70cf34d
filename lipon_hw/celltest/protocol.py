"""Cell-test protocols: schema, and validation against the station before a channel moves.

A protocol (`kind: cycling`) names a potentiostat of the station, the channels it runs
on and the steps every channel follows:

    name: LNMO / LiPON / Li cycling
    kind: cycling
    potentiostat: mes4            # default: the station's `cycler` tool
    channels: 1-16                # or a mapping: {"1-8": {sample: X}, "9-16": {protocol: fast}}
    cell: {kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}
    record: {every_s: 30, every_mV: 5}
    safety: {min_V: 3.0, max_V: 5.2}
    termination: {cycles: 600, retention_below_pct: 80}
    steps:
      - eis: {from_Hz: 3.0e6, to_Hz: 0.1, per_decade: 10, amplitude_mV: 10}
      - tag: cycle
      - cc: {rate_C: 2, until: {voltage_V: 5.1}}
      - cc: {rate_C: -2, until: {voltage_V: 3.5}}
      - loop: {to: cycle, times: 600}

End conditions (`until`) are any-of; `goto: {condition: tag}` jumps elsewhere when that
condition ended the step. A `loop` jumps back `times` − 1 times, and every jump back
starts a new cycle. C-rates become currents from the channel's capacity (given, or from
its sample's cathode). A channel entry may take its samples from a sheet's screening
instead (`{"1-8": {from_screening: {sheet: S, hard_bins: [1, 2], seed: 1}}}`: one
screened cell per channel, `screened`). Errors name the file, line and field.

The schema (pydantic models) is `protocol_schema`; every number has a physical range
(`ranges`); what numbers make together is checked in
`protocol_checks` (safety window, sweeps, currents, cell parameters); a program that
could loop forever, or run more than 10⁷ steps, is refused by `termination`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from pydantic import ValidationError

from lipon_hw import techniques as tq
from lipon_hw.celltest import protocol_checks as chk
from lipon_hw.celltest import protocol_station as on_station
from lipon_hw.celltest import rules as cell_rules
from lipon_hw.celltest import screened
from lipon_hw.celltest.protocol_checks import FOREVER_S  # noqa: F401 (API)
from lipon_hw.celltest.protocol_schema import (  # noqa: F401 (the protocol's API)
    CATHODE_UAH_CM2_PER_UM,
    CC,
    CCCV,
    CELL_KINDS,
    CONDITIONS,
    CV,
    STEP_KINDS,
    CellSpec,
    ChannelSpec,
    CyclicSweepStep,
    DCPolarizationStep,
    EISStep,
    FromScreening,
    Loop,
    ProtocolSpec,
    Record,
    Rest,
    Safety,
    Setting,
    Sweep,
    Termination,
    Until,
    _Head,
    _Step,
    _Untagged,
)
from lipon_hw.celltest.termination import check_termination
from lipon_hw.engine import interlocks as il
from lipon_hw.errors import (
    CellParamError,  # noqa: F401 (API)
    )
from lipon_hw.station import Station
from lipon_hw.yamlfile import Doc, load, loads, pydantic_error


# --- the validated protocol ----------------------------------------------------------------
@dataclass
class PlannedStep:
    """One entry of a program: a technique step, a tag or a loop."""

    kind: str
    line: int
    params: _Step | None = None
    tag: str | None = None
    loop: Loop | None = None
    target: int | None = None  # index of the loop's tag
    gotos: dict[str, int] = field(default_factory=dict)

    @property
    def step_type(self) -> str:
        p = self.params
        return getattr(p, "step_type", None) or p.TYPE or self.kind.upper()

    def describe(self) -> dict:
        if self.params is None:
            return {self.kind: self.tag if self.tag else self.loop.model_dump()}
        return {self.kind: self.params.model_dump(exclude_none=True, exclude_defaults=True)}


@dataclass
class Program:
    name: str
    steps: list[PlannedStep]
    record: Record
    safety: Safety
    termination: Termination
    base: tuple = ()  # where the program is in its file: () or ("protocols", name)
    interlocks: il.Declared | None = None  # its rules, names not yet bound to a channel


@dataclass
class ChannelPlan:
    channel: int
    program: Program
    sample: str | None
    cell: CellSpec
    capacity_Ah: float | None  # for C-rates; None if unknown
    #: the potentiostat's rules from the station, then the program's: this channel's own
    rules: list[il.Rule] = field(default_factory=list)
    #: where its sample is picked from (`FromScreening`), for a cell taken from a sheet's
    #: screening; `sample` is None while it is not picked (read without a store)
    screening: FromScreening | None = None


@dataclass
class Protocol:
    path: str
    text: str
    name: str
    potentiostat: str
    channels: list[ChannelPlan]
    poll_every_s: float | None
    checkpoint_every_s: float
    #: rules on the potentiostat as a whole (the station's for it, then the programs'
    #: its channels run), checked once for all its channels of the run (`rules`)
    rules: list[il.Rule] = field(default_factory=list)


def stores_with(program: Program) -> int:
    """The sign of the current that stores charge in the program's cycles: −1 when the
    repeated part starts with a negative current (Li plated on the working electrode, as
    in Li/Cu tests, then stripped), else +1. A cycle's coulombic efficiency is what the
    other sign took back out over what this one put in."""
    loops = [s for s in program.steps if s.loop is not None]
    start = loops[-1].target if loops else 0
    for st in program.steps[start:]:
        if st.kind == "cv":
            return 1  # a potentiostatic hold in a cycle is its charge
        current = getattr(st.params, "current_A", None) if st.params else None
        rate = getattr(st.params, "rate_C", None) if st.params else None
        if current is not None or rate is not None:
            return -1 if (current if current is not None else rate) < 0 else 1
    return 1


def leads(program: Program) -> dict[int, float]:
    """Step id (index in the program) → the step's measurement interval: its first sample
    comes that long after the technique starts (cycle figures count the open circuit
    between two steps as no charge)."""
    return {n: (st.params.record or program.record).interval_s
            for n, st in enumerate(program.steps) if st.params is not None}


def is_protocol(doc_data) -> bool:
    return isinstance(doc_data, dict) and doc_data.get("kind") == "cycling"


def load_protocol(path: str, station: Station, text: str | None = None,
                  sample_capacity=None, sample_exists=None, cell_check=None,
                  screened_cells=None) -> Protocol:
    """Parse and validate. `sample_capacity(sample_id, area_cm2)` gives a sample's
    capacity in Ah from its film stack (or None); `sample_exists(sample_id)` says whether
    the store knows a sample (None: no store, nothing said); `cell_check(cell)` raises
    ValueError for a cell spec the station's lab cannot build (the simulated lab's hook:
    unknown model parameters); `screened_cells(from_screening, channels, taken)` picks
    the cells of an entry's channels that takes them from a screening (`screened`; None: they stay
    unpicked, sample None, for a protocol read back for its channels and programs only);
    `text` stands in for the file."""
    doc = load(path) if text is None else loads(text, path)
    return protocol_from_doc(doc, station, text, sample_capacity, sample_exists, cell_check,
                             screened_cells)


def protocol_from_doc(doc: Doc, station: Station, text: str | None = None,
                      sample_capacity=None, sample_exists=None, cell_check=None,
                      screened_cells=None) -> Protocol:
    if not isinstance(doc.data, dict):
        raise doc.error((), "a protocol must be a mapping with name, kind, channels and steps")
    try:
        head = _Head.model_validate(doc.data)
    except ValidationError as exc:
        raise pydantic_error(doc, _Untagged(exc)) from None
    pstat = on_station.potentiostat(doc, head, station)
    programs = {None: _program(doc, (), head.name, head, station, pstat)}
    for name, spec in head.protocols.items():
        programs[name] = _program(doc, ("protocols", name), name, spec, station, pstat)
    chk.check_cell(doc, ("cell",), head.cell, cell_check)
    max_current = on_station.max_current(station, pstat)
    plans = []
    entries = list(_channels(doc, head, station, pstat))
    picked = screened.resolve(doc, entries, screened_cells)
    for loc, number, spec in entries:
        sample = picked.get(number, spec.sample)
        if spec.protocol is not None and spec.protocol not in head.protocols:
            raise doc.error(loc + ("protocol",), f"protocol {spec.protocol!r} is not defined "
                                                 f"under protocols (it has "
                                                 f"{', '.join(head.protocols) or 'none'})")
        if sample is not None and sample_exists is not None and not sample_exists(sample):
            if spec.sample is None:  # picked: in the store, but the lab cannot build it
                raise doc.error(loc + ("from_screening",), f"cell {sample} has no films in "
                                "the store, nor has its sheet's roll: the simulated lab "
                                "cannot build it")
            raise doc.error(loc + ("sample",), f"sample {spec.sample!r} is not in the store: "
                                               "deposit it first, or give the cell instead")
        cell = _merge_cell(head.cell, spec.cell)
        if spec.cell is not None:
            chk.check_cell(doc, loc + ("cell",), cell, cell_check)
        capacity = cell.capacity_uAh * 1e-6 if cell.capacity_uAh else None
        if capacity is None and sample and sample_capacity and cell.area_cm2:
            capacity = sample_capacity(sample, cell.area_cm2)
        program = programs[spec.protocol]
        if sample is not None or spec.from_screening is None:  # else: its cell not picked
            _check_rates(doc, loc, program, capacity, number)
        chk.check_c_rates(doc, program, capacity, number, max_current)
        plans.append(ChannelPlan(number, program, sample, cell, capacity,
                                 channel_rules(station, pstat, program, doc.path),
                                 spec.from_screening))
    if text is None:
        text = doc.text  # the bounded read, not a second one of a file that may change
    return Protocol(doc.path, text, head.name, pstat, plans, head.poll_every_s,
                    head.checkpoint_every_s, potentiostat_rules(station, pstat, plans, doc.path))


def _merge_cell(base: CellSpec, override: CellSpec | None) -> CellSpec:
    if override is None:
        return base
    return base.model_copy(update=override.model_dump(exclude_unset=True))


def parse_channels(text: str | int | list[int], available: int | None = None) -> list[int]:
    """'1-4,7' → [1, 2, 3, 4, 7]; ValueError if malformed, or (given `available`, the
    potentiostat's channel count) past it or repeated. Ranges are checked before they are
    expanded, so `1-999999999999` costs nothing."""
    parts = [text] if isinstance(text, int) else text if isinstance(text, list) \
        else str(text).split(",")
    out: list[int] = []
    seen: set[int] = set()
    for part in parts:
        if isinstance(part, int):
            lo = hi = part
        else:
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
                raise ValueError(f"{part.strip()[:40]!r} is not a channel or a range like 1-16")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if available is not None:
            for number in (lo, hi):
                if not 1 <= number <= available:
                    raise ValueError(f"the potentiostat has channels 1–{available}, "
                                     f"not {number}")
        for number in range(lo, hi + 1):
            if number in seen:
                raise ValueError(f"channel {number} is given twice")
            seen.add(number)
            out.append(number)
    return out


def _channels(doc: Doc, head: _Head, station: Station, pstat: str):
    available = on_station.channel_count(station, pstat)
    entries = (head.channels.items() if isinstance(head.channels, dict)
               else [(None, ChannelSpec())])
    seen: set[int] = set()
    for key, spec in entries:
        loc = ("channels",) + ((key,) if key is not None else ())
        try:
            numbers = parse_channels(key if key is not None else head.channels, available)
        except ValueError as exc:
            raise doc.error(loc, str(exc).replace("the potentiostat", pstat)) from None
        for number in numbers:
            if number in seen:
                raise doc.error(loc, f"channel {number} is given twice")
            seen.add(number)
            yield loc, number, spec


def _program(doc: Doc, base: tuple, name: str, spec: ProtocolSpec, station: Station,
             pstat: str) -> Program:
    chk.check_safety(doc, base, spec.safety)
    steps = [_parse_step(doc, base + ("steps", i), raw) for i, raw in enumerate(spec.steps)]
    tags: dict[str, int] = {}
    for i, st in enumerate(steps):
        if st.tag is not None:
            if st.tag in tags:
                raise doc.error(base + ("steps", i, "tag"), f"tag {st.tag!r} is used twice")
            tags[st.tag] = i
    techniques = on_station.driver_techniques(station, pstat)
    for i, st in enumerate(steps):
        loc = base + ("steps", i, st.kind)
        if st.loop is not None:
            if st.loop.to not in tags or tags[st.loop.to] > i:
                raise doc.error(loc + ("to",), f"no tag {st.loop.to!r} before this loop")
            st.target = tags[st.loop.to]
        if st.params is None:
            continue
        if techniques and st.params.TECHNIQUE not in techniques:
            raise doc.error(loc, f"{pstat} ({station.instrument(pstat).driver}) cannot run "
                                 f"{st.kind}")
        for key, tag in st.params.goto.items():
            if key not in st.params.until.model_fields_set:
                raise doc.error(loc + ("goto", key), "is not one of this step's end "
                                                      "conditions (`until`)")
            if tag not in tags:
                raise doc.error(loc + ("goto", key), f"no tag {tag!r} in this protocol")
            st.gotos[key] = tags[tag]
        _check_ends(doc, loc, st.params)
        on_station.check_limits(doc, loc, st.params, station, pstat)
        chk.check_safety(doc, base, spec.safety, loc, st.params)
        chk.check_sweep(doc, loc, st.params)
        chk.check_interval(doc, loc, st.params, spec.record)
    program = Program(name, steps, spec.record, spec.safety, spec.termination, base,
                      il.declare(doc, (*base, "interlocks"), spec.interlocks))
    check_termination(doc, base, program)
    cell_rules.bind(program.interlocks, pstat, doc.path)  # refused now, before any channel
    return program


def channel_rules(station: Station, pstat: str, program: Program, path: str) -> list[il.Rule]:
    """One channel's own rules (each channel counts how long its conditions have held):
    the station's for its potentiostat, then its program's."""
    return (cell_rules.bind(station.interlocks.get(pstat), pstat, "station", f"{pstat} ")[0]
            + cell_rules.bind(program.interlocks, pstat, path)[0])


def potentiostat_rules(station: Station, pstat: str, plans: list[ChannelPlan], path: str
                       ) -> list[il.Rule]:
    """The rules on the potentiostat as a whole, once each: the station's for it, then
    those of every program a channel runs."""
    rules = cell_rules.bind(station.interlocks.get(pstat), pstat, "station", f"{pstat} ")[1]
    programs = {id(plan.program): plan.program for plan in plans}
    for program in programs.values():
        rules += cell_rules.bind(program.interlocks, pstat, path)[1]
    return rules


def _parse_step(doc: Doc, loc: tuple, raw) -> PlannedStep:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise doc.error(loc, "each step is a mapping with exactly one step name, "
                             "e.g. `- cc: {current_A: 3.0e-6, until: {voltage_V: 5.1}}`")
    kind, params = next(iter(raw.items()))
    line = doc.line(loc)
    if kind == "tag":
        if not isinstance(params, str) or not params:
            raise doc.error(loc + (kind,), "a tag is a name, e.g. `- tag: cycle`")
        return PlannedStep(kind, line, tag=params)
    known = (*STEP_KINDS, "tag", "loop")
    if kind not in known:
        raise doc.error(loc + (kind,), f"unknown step {kind!r} (known: {', '.join(known)})")
    model = Loop if kind == "loop" else STEP_KINDS[kind]
    try:
        value = model.model_validate(params or {})
    except ValidationError as exc:
        raise pydantic_error(doc, exc, loc + (kind,)) from None
    if kind == "loop":
        return PlannedStep(kind, line, loop=value)
    return PlannedStep(kind, line, params=value)


def _check_ends(doc: Doc, loc: tuple, p: _Step) -> None:
    allowed = p.allowed_ends()
    for key in p.until.model_fields_set:
        group = "time" if key.startswith("time") else "capacity" if key.startswith(
            "capacity") else key
        if group not in allowed:
            raise doc.error(loc + ("until", key), f"a {type(p).__name__.lower()} step cannot "
                                                  f"end on {key} (it can on: "
                                                  f"{', '.join(allowed) or 'nothing'})")
    if missing := p.missing_end():
        raise doc.error(loc + ("until",), missing)


def _check_rates(doc: Doc, loc: tuple, program: Program, capacity_Ah: float | None,
                 channel: int) -> None:
    if capacity_Ah is not None:
        return
    for st in program.steps:
        p = st.params
        if p is not None and (getattr(p, "rate_C", None) is not None or p.until.rate_C):
            raise doc.error(loc, f"channel {channel}: a C-rate needs the cell's capacity: give "
                                 "cell.capacity_uAh, or a sample whose film stack has a cathode "
                                 "and cell.area_cm2")


# --- from a step to a technique ------------------------------------------------------------
def recording(rec: Record) -> tq.Recording:
    return tq.Recording(dt_s=rec.every_s, dV=rec.every_mV * 1e-3 if rec.every_mV else None,
                        dI=rec.every_uA * 1e-6 if rec.every_uA else None)


def technique(st: PlannedStep, plan: ChannelPlan) -> tq.Technique:
    """The technique a channel runs for this step, currents resolved from C-rates (each
    step kind builds its own: `protocol_schema`), with the step's safety window where the
    technique drives the cell (`techniques.Window`: an instrument that can judges it too)."""
    rec = st.params.record or plan.program.record
    made = st.params.technique(Setting(recording(rec), rec.interval_s,
                                       st.params.until.duration_s or FOREVER_S,
                                       plan.capacity_Ah))
    window = safety(st, plan).window()
    if "window" not in getattr(type(made), "__dataclass_fields__", {}) or \
            window == tq.Window():
        return made
    return replace(made, window=window)


def safety(st: PlannedStep, plan: ChannelPlan) -> Safety:
    """The step's safety limits over the protocol's (the step's win where given)."""
    base = plan.program.safety
    if st.params.safety is None:
        return base
    return base.model_copy(update=st.params.safety.model_dump(exclude_unset=True))
