"""The simulated lab of a station: one World and one emulator per `sim://` address.

Instruments sharing an address (two gauge channels on one controller, a shutter
and valves on one relay module) share one emulator, as they share one box.
The emulator is chosen by the first instrument's driver; its settings are the
union of the instruments' `sim:` sections (e.g. `rated_power_W`, `tool`).

Potentiostats (`CELL_EMULATORS`) are built from their cells instead, one emulator per
instrument, whose channel ports serve the instrument's expanded addresses in order
(`sim://mes4/{1-16}`: channel 1 on `mes4/1`, …). Their `sim:` section declares the cells:

    sim:
      cells: {"1-16": {kind: lnmo}, "3": {kind: blocking}}   # ranges or single channels
      cell: {kind: blocking}                                  # a one-channel instrument
      fault_rates: {soft_short: 0.05, open: 0.01}             # per cell (assumptions)
      faults_within_cycles: 600                               # drawn faults start by then

Faults (`sim: faults:` of the station, `SimLab.faults.add(...)` from a test) are armed
here: see `lipon_hw.sim.fault_schedule` and docs/faults.md.

Identity: an emulator that reports a serial number takes `serial:` (a quoted string) in
the `sim:` section, and one with a bus address `address:`; without them each serial is
derived from the emulator's name (the endpoint, or a potentiostat's instrument name), so
two controllers of one station never report the same one.

A cell spec is what `lipon_hw.sim.cells.factories.cell_from_spec` takes; a narrower key wins over
a range, and a channel with no declared cell holds a blocking cell. Drawn faults come
from a generator seeded by the World's seed, the instrument's name and the channel, so
the same seed gives the same faulty cells. Other `sim:` keys go to the emulator.
"""

from __future__ import annotations

import importlib
import re
import zlib
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from lipon_hw.errors import CellParamError, InputError
from lipon_hw.sim.cells.factories import (
    DEFAULT_AREA_CM2,
    cell_from_films,
    cell_from_spec,
    default_layers,
)
from lipon_hw.sim.cells.faults import draw_faults
from lipon_hw.sim.emulators import CELL_EMULATORS, EMULATORS
from lipon_hw.sim.fault_schedule import FaultSchedule
from lipon_hw.sim.world import World

SIM_PREFIX = "sim://"
DEFAULT_CELL = {"kind": "blocking"}
CELL_KEYS = ("cells", "cell", "fault_rates", "faults_within_cycles", "tool")
_CHANNELS = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


class SimLab:
    def __init__(self, spec, clock: Callable[[], float], seed: int):
        self.world = World(clock, seed=seed)
        self.emulators: dict = {}  # endpoint (NAME of sim://NAME) → the emulator serving it
        self.potentiostats: dict = {}  # instrument → its emulator, whose ports are channels
        self.drivers: dict[str, str] = {}
        settings: dict[str, dict] = {}
        for name, inst in spec.instruments.items():
            endpoints = [a[len(SIM_PREFIX):] for a in inst.addresses
                         if a.startswith(SIM_PREFIX)]
            if not endpoints:
                continue
            if inst.driver in CELL_EMULATORS:
                self._add_potentiostat(name, inst, endpoints, clock)
                continue
            for endpoint in endpoints:
                self.drivers.setdefault(endpoint, inst.driver)
                settings.setdefault(endpoint, {}).update(inst.sim)
        for endpoint, driver in self.drivers.items():
            if endpoint in self.emulators:
                raise InputError(f"sim://{endpoint} is a potentiostat's channel port; no other "
                                 "instrument can share it")
            cls = emulator_class(driver)
            kwargs = dict(settings[endpoint])
            tool = self.world.tool(kwargs.pop("tool", "sputter"))
            self.emulators[endpoint] = cls(endpoint, tool, **kwargs)
        self._arm_faults(spec, seed)
        from lipon_hw.sim.chuck import attach_chucks

        self.chucks = attach_chucks(self, spec, seed)  # one under each simulated stage

    @property
    def chuck(self):
        """The prober's chuck (`lipon_hw.sim.chuck`), None without a simulated stage; a
        station with several stages reaches theirs through `chucks`."""
        return next(iter(self.chucks.values()), None) if len(self.chucks) == 1 else None

    # --- faults (lipon_hw.sim.fault_schedule) -------------------------------------------
    def _arm_faults(self, spec, seed: int) -> None:
        """The fault schedule: every emulator fires it before acting on bytes; the
        station's `sim: faults:` entries are added (FaultEntryError names a bad field)."""
        self.host_clock_offset_s = 0.0
        self.drivers_by_instrument = {
            name: inst.driver for name, inst in spec.instruments.items()
            if any(a.startswith(SIM_PREFIX) for a in inst.addresses)}
        self._ports = {name: [self.emulators[a[len(SIM_PREFIX):]] for a in inst.addresses
                              if a.startswith(SIM_PREFIX)]
                       for name, inst in spec.instruments.items()
                       if name in self.drivers_by_instrument}
        self.faults = FaultSchedule(self, seed)
        self.world.schedule = self.faults
        for emulator in {id(e): e for ports in self._ports.values() for e in ports}.values():
            emulator.faults.tick = self._fire_due_faults
        entries = getattr(getattr(spec, "sim", None), "faults", None) or []
        for index, entry in enumerate(entries):
            self.faults.add(entry, where=("sim", "faults", index))

    def _fire_due_faults(self) -> None:
        """Before an emulator acts on bytes: the World advanced (and the faults fired)
        only when a fault is due, so a potentiostat's polls never integrate the tools."""
        if self.faults.next_s <= self.world.clock():
            self.world.sync()

    def ports_of(self, instrument: str) -> list:
        """The emulators serving an instrument's simulated addresses, in order."""
        return self._ports[instrument]

    def add_cell_fault(self, entry) -> None:
        """A scheduled cell fault onto the cell now on its channel (and onto cells mounted
        later, by `mount_cell`)."""
        self.cell(entry.instrument, entry.channel).add_faults([entry.cell_fault()])

    def host_clock(self) -> float:
        """The host's clock as the lab shows it: the lab clock plus every clock jump
        (`clock_jump` faults) fired so far."""
        self.world.sync()
        return self.world.clock() + self.host_clock_offset_s

    # --- potentiostats and their cells ---------------------------------------------------
    def _add_potentiostat(self, name: str, inst, endpoints: list[str], clock) -> None:
        taken = [e for e in endpoints if e in self.emulators]
        if taken:
            raise InputError(f"instrument {name}: sim://{taken[0]} already serves another "
                             "potentiostat")
        specs = channel_cell_specs(name, inst.sim, len(endpoints))
        cells = {ch: self._build_cell(name, ch, spec, inst.sim) for ch, spec in specs.items()}
        kwargs = {k: v for k, v in inst.sim.items() if k not in CELL_KEYS}
        try:
            emulator = cell_emulator_factory(inst.driver)(name, cells, clock, **kwargs)
        except TypeError as exc:
            raise InputError(f"instrument {name}: its sim: section has a setting the "
                             f"{inst.driver} emulator does not take ({exc})") from None
        self.potentiostats[name] = emulator
        for channel, endpoint in enumerate(endpoints, start=1):
            self.emulators[endpoint] = emulator.ports[channel]

    def _build_cell(self, instrument: str, channel: int, spec: dict, sim: dict):
        spec = {"name": f"{instrument}/{channel}", **spec}
        rates = sim.get("fault_rates")
        if rates:
            if not isinstance(rates, dict):
                raise InputError(f"instrument {instrument}: sim.fault_rates must map fault "
                                 "kinds to probabilities")
            rng = np.random.default_rng([self.world.seed, zlib.crc32(instrument.encode()),
                                         channel])
            drawn = draw_faults(rng, rates, sim.get("faults_within_cycles"))
            spec["faults"] = [*spec.get("faults", ()), *drawn]
        try:
            return cell_from_spec(spec)
        except (ValueError, TypeError) as exc:
            raise InputError(f"instrument {instrument}: the cell of channel {channel} cannot "
                             f"be built ({exc})") from None

    def _port(self, instrument: str, channel: int):
        emulator = self.potentiostats.get(instrument)
        if emulator is None:
            known = ", ".join(self.potentiostats) or "none"
            raise InputError(f"{instrument!r} is not a simulated potentiostat (these are: "
                             f"{known})")
        if channel not in emulator.ports:
            raise InputError(f"{instrument} has channels 1–{len(emulator.ports)}, not {channel}")
        return emulator.ports[channel]

    def cell(self, instrument: str, channel: int):
        """The cell on a potentiostat's channel (numbered from 1)."""
        return self._port(instrument, channel).cell

    def mount_cell(self, instrument: str, channel: int, cell) -> None:
        """Put `cell` on the channel in place of the one there; it gets what the channel
        applies now (open circuit unless the cell is switched on). Refused while a script
        runs on the channel: its limits were worked out on the old cell."""
        port = self._port(instrument, channel)
        if getattr(port, "running", False):
            raise InputError(f"{instrument} channel {channel} is running a measurement; stop "
                             "it before mounting another cell")
        now = self.world.clock()
        scheduled = self.faults.cell_faults(instrument, channel, now)
        if scheduled:
            cell.add_faults(scheduled)
        if hasattr(port, "mount"):
            port.mount(cell)
            return
        old = port.cell
        port.cell = cell
        cell.set_control(now, old.mode, old.value)

    # --- checkpoints ------------------------------------------------------------------
    def snapshot(self) -> dict:
        """World and instrument memories, JSON-serialisable, for checkpoints."""
        return {"world": self.world.snapshot(),
                "emulators": {name: emu.snapshot() for name, emu in self.emulators.items()
                              if hasattr(emu, "snapshot")}}

    def restore(self, snap: dict) -> None:
        self.world.restore(snap["world"])
        for name, state in snap["emulators"].items():
            self.emulators[name].restore(state)


def channel_cell_specs(instrument: str, sim: dict, channels: int) -> dict[int, dict]:
    """Channel → cell spec from the `cells:`/`cell:` of an instrument's `sim:` section."""
    where = f"instrument {instrument}: sim"
    if "cell" in sim and "cells" in sim:
        raise InputError(f"{where} has both cell and cells; use cells for several channels")
    specs = {ch: dict(DEFAULT_CELL) for ch in range(1, channels + 1)}
    if "cell" in sim:
        if channels != 1:
            raise InputError(f"{where}.cell is for a one-channel instrument; this one has "
                             f"{channels} channels, so use cells: {{\"1-{channels}\": {{…}}}}")
        specs[1] = _cell_spec(f"{where}.cell", sim["cell"])
        return specs
    declared = sim.get("cells") or {}
    if not isinstance(declared, dict):
        raise InputError(f"{where}.cells must map channels (\"3\" or \"1-16\") to cell specs")
    spans = []
    for key, spec in declared.items():
        match = _CHANNELS.fullmatch(str(key))
        first = int(match[1]) if match else 0
        last = int(match[2] or match[1]) if match else 0
        if not match or not 1 <= first <= last <= channels:
            raise InputError(f"{where}.cells: {str(key)!r} is not a channel or a range "
                             f"first-last within 1–{channels}")
        spans.append((last - first, first, last, _cell_spec(f"{where}.cells[{key}]", spec)))
    for _, first, last, spec in sorted(spans, key=lambda s: -s[0]):  # narrower keys win
        for ch in range(first, last + 1):
            specs[ch] = dict(spec)
    return specs


def _cell_spec(where: str, spec) -> dict:
    if not isinstance(spec, dict) or "kind" not in spec:
        raise InputError(f"{where} must be a cell spec with a kind, e.g. {{kind: lnmo}}")
    return dict(spec)


def emulator_class(driver: str) -> type:
    target = EMULATORS.get(driver)
    if target is None:
        raise InputError(f"driver {driver!r} has no emulator, so it cannot use a sim:// address")
    return _resolve(target)


def cell_emulator_factory(driver: str) -> Callable:
    return _resolve(CELL_EMULATORS[driver])


def _resolve(target: str):
    """`package.module:Name.attribute` → the object."""
    module, _, path = target.partition(":")
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


#: a model parameter may differ from the model's own value by this factor at most, with
#: its sign: they are scales (ohms, seconds, farads), and six decades off is a typo
PARAM_DECADES = 6


def check_cell_spec(spec) -> None:
    """The lab's hook for a protocol's declared cell (a CellSpec: kind, params, faults,
    area_cm2, temperature_C): build it once from the seeds' stack, so unknown model
    parameters and faults are refused before a run row exists (ValueError), and hold each
    number given to the scale of the model's own (CellParamError)."""

    kind = spec.kind or "lnmo"

    temperature_C = 25.0 if spec.temperature_C is None else spec.temperature_C

    def build(params):
        return cell_from_films(kind, default_layers(kind), spec.area_cm2 or
                               DEFAULT_AREA_CM2[kind], temperature_C, spec.faults, None,
                               params=params)

    build(spec.params or None)
    defaults = asdict(build(None).params)
    for key, value in spec.params.items():
        _check_param_scale(key, value, defaults.get(key))


def _check_param_scale(key: str, value, default) -> None:
    if (key.startswith("ce_") and not key.endswith("_cycles")) or key.endswith("_alpha"):
        # coulombic efficiencies and CPE exponents
        if not (isinstance(value, int | float) and 0 < value <= 1):
            raise CellParamError(key, f"{value!r} is outside 0–1 (an efficiency or a CPE "
                                         "exponent)")
        return
    if not isinstance(value, int | float) or not isinstance(default, int | float) \
            or default == 0 or key == "initial_soc":
        return
    scale = 10.0 ** PARAM_DECADES
    if value != 0 and (value * default < 0 or not abs(default) / scale <= abs(value)
                       <= abs(default) * scale):
        raise CellParamError(key, f"{value:g} is not within {PARAM_DECADES} decades of the "
                                     f"model's {default:g}, with its sign")
