"""The station: which instruments exist, how to reach them, and their limits.

A station file is YAML:

    name: ...
    sim: {seed: 1}            # present ⇒ sim:// addresses are served by an in-process World
    instruments:
      rf: {driver: ae_bus, address: sim://rf, limits: {max_power_W: 100}, settings: {unit: 1}}
      mes4: {driver: methodscript, address: "sim://mes4/{1-16}"}   # one port per channel
    tools:
      sputter: {rf_supply: rf, ...}   # role → instrument
    notify: {command: "...", url: "https://..."}   # optional (`station_notify`)

Recipes speak of roles (`rf_supply`, `thickness_monitor`, ...) of one tool; the
station says which instrument plays each. The built-in default station is the
simulated lab, so every command works with no hardware and no flags.

An address may hold one channel range `{a-b}`: an instrument that enumerates one
port per channel (a MultiEmStat4 shows up as 16 serial ports) is one instrument
whose driver gets one Link per expanded address, in order.

`driver:` is a short name of `lipon_hw.drivers.DRIVERS`, or the name of a plug-in
driver: a class registered by an installed distribution in the `lipon_hw.drivers`
entry-point group, e.g. in its pyproject.toml

    [project.entry-points."lipon_hw.drivers"]
    my_gauge = "my_package.gauge:MyGauge"

A driver class is built as `cls(name, link, **settings, **limits it takes)` and its
constructor only checks and keeps its settings (the station is validated by building
each driver once on a link that must not be used). It declares the station limits it
knows in `LIMITS = {key: (low, high)}`, and a multidrop bus it can share a port on in
`BUS` with `bus_claims()` (see `lipon_hw.station_checks`). Nothing else is imported:
a `module:Class` written in a station file is refused, since validating a file must
never run code named by it.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lipon_hw import interfaces
from lipon_hw.drivers import DRIVERS
from lipon_hw.engine import interlocks as il
from lipon_hw.errors import InputError
from lipon_hw.links import LinkPool
from lipon_hw.station_checks import check_instrument, check_shared_ports, check_simulated_lab
from lipon_hw.station_notify import NotifySpec, check_notify
from lipon_hw.yamlfile import Doc, load, loads, pydantic_error

DEFAULT_STATION = "sim_lab.yaml"
#: the entry-point group through which installed distributions add drivers
DRIVER_ENTRY_POINTS = "lipon_hw.drivers"

#: what each role must be able to do
ROLES: dict[str, type] = {
    "rf_supply": interfaces.SputterSupply,
    "thickness_monitor": interfaces.ThicknessMonitor,
    "base_gauge": interfaces.PressureGauge,
    "process_gauge": interfaces.PressureGauge,
    "gas_flow": interfaces.MassFlowController,
    "shutter": interfaces.Shutter,
    "valves": interfaces.VacuumValves,
    "source_supply": interfaces.SourceSupply,
    "source_selector": interfaces.SourceSelector,
    "deposition_controller": interfaces.DepositionController,
    "substrate_thermometer": interfaces.Thermometer,
    "potentiostat": interfaces.Potentiostat,
    "stage": interfaces.ProberStage,
}


class FilmSpec(BaseModel):
    """A film as a crystal monitor needs it, in the ranges INFICON monitors accept:
    density 0.5-99.99 g/cm³ (no solid is above osmium's 22.6), Z-ratio 0.1-10,
    tooling 10-399 %."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    density_g_cm3: float = Field(ge=0.5, le=22.6)
    z_ratio: float = Field(ge=0.1, le=10.0)
    tooling_pct: float = Field(default=100.0, ge=10.0, le=399.0)


_RANGE = re.compile(r"\{(\d+)-(\d+)\}")
MAX_CHANNELS = 256
#: a simulated bank (sim://) may hold more: a campaign of thousands of simulated cells on
#: one potentiostat, spread over a cluster (`lipon_hw.cluster`)
MAX_SIM_CHANNELS = 100_000


def expand_address(address: str) -> list[str]:
    """`sim://mes4/{1-3}` → [sim://mes4/1, sim://mes4/2, sim://mes4/3]; an address without
    braces is itself. A zero-padded start keeps its width (`{01-16}` → 01 … 16).
    InputError (one sentence) for a malformed range."""
    if "{" not in address and "}" not in address:
        return [address]
    ranges = list(_RANGE.finditer(address))
    stray = _RANGE.sub("", address)
    if len(ranges) != 1 or "{" in stray or "}" in stray:
        raise InputError(f"address {address!r} must hold exactly one channel range "
                         "written {first-last}, e.g. sim://mes4/{1-16}")
    match = ranges[0]
    first, last = int(match[1]), int(match[2])
    if not first <= last:
        raise InputError(f"address {address!r}: the channel range {match[0]} runs backwards "
                         f"({first} > {last})")
    most = MAX_SIM_CHANNELS if address.startswith("sim://") else MAX_CHANNELS
    if last - first + 1 > most:
        raise InputError(f"address {address!r}: the channel range {match[0]} names "
                         f"{last - first + 1} ports, more than {most}")
    width = len(match[1]) if match[1].startswith("0") and len(match[1]) > 1 else 0
    head, tail = address[:match.start()], address[match.end():]
    return [f"{head}{n:0{width}d}{tail}" for n in range(first, last + 1)]


class InstrumentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    driver: str
    address: str
    #: a reply takes at least a few ms at 9600 baud; past a minute no interlock could act
    timeout_s: float = Field(default=1.0, ge=0.01, le=60.0, allow_inf_nan=False)
    settings: dict[str, Any] = {}
    limits: dict[str, Any] = {}  # numbers; keys and ranges checked per driver at load
    films: dict[str, FilmSpec] = {}
    sim: dict[str, Any] = {}

    @property
    def addresses(self) -> list[str]:
        """The address with its channel range expanded: one per port, in channel order."""
        return expand_address(self.address)


class SimSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(default=1, ge=0, le=2**32 - 1)  # numpy's SeedSequence takes any
    # non-negative integer; 32 bits are what --seed accepts too
    #: faults the simulated lab injects (`lipon_hw.sim.fault_schedule`; docs/faults.md),
    #: each entry checked field by field when the station is loaded
    faults: list[Any] = Field(default=[], description="faults the simulated lab injects, "
                              "each {fault, instrument or tool, at_s or after_s, for_s, "
                              "parameters}: docs/faults.md")


class StationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    sim: SimSpec | None = None
    instruments: dict[str, InstrumentSpec]
    tools: dict[str, dict[str, str]] = {}
    #: interlock rules for every run on a tool (by tool name) or a potentiostat (by name)
    interlocks: dict[str, list[il.RuleSpec]] = Field(default={}, max_length=50)
    notify: NotifySpec | None = None


@dataclass
class Station:
    spec: StationSpec
    doc: Doc
    text: str
    #: each instrument's driver built on a link that refuses use, as validation built it
    unconnected: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the station's interlock rules by tool or potentiostat, syntax checked, names not yet
    interlocks: dict[str, il.Declared] = field(default_factory=dict, repr=False)

    @property
    def simulated(self) -> bool:
        """The station file describes the simulated lab (its `sim:` section): what a
        station *is*, for the simulator's own tools; the engine asks what it can *do*
        (`in_process`, `default_seed`, `measures_films`)."""
        return self.spec.sim is not None

    @property
    def in_process(self) -> bool:
        """Every instrument lives in this process, on the run's own clock (`sim://`): a run
        may go in virtual time, no guard process is needed, and a resume rolls their world
        back to its checkpoint (what came after never happened). False as soon as one
        instrument is outside — hardware, or emulators served by `lipon-hw sim serve`,
        whose world lives on while the host is down."""
        return all(address.startswith("sim://") for inst in self.spec.instruments.values()
                   for address in inst.addresses)

    @property
    def default_seed(self) -> int | None:
        """The seed a run takes when none is asked for (None: nothing of the station is
        random)."""
        return self.spec.sim.seed if self.spec.sim is not None else None

    @property
    def measures_films(self) -> bool:
        """The station can measure a film it made, for a tooling calibration without an
        operator's number: the simulated lab knows its films' true thickness."""
        return self.in_process and self.spec.sim is not None

    @property
    def path(self) -> str:
        return self.doc.path

    def instrument(self, name: str) -> InstrumentSpec:
        return self.spec.instruments[name]

    def role(self, tool: str, role: str) -> str:
        return self.spec.tools[tool][role]

    def lacks(self, instrument: str, role: str) -> list[str]:
        """What the instrument's driver lacks to act as `role` (nothing: it can)."""
        return role_gaps(self.unconnected[instrument], role)

    def limit(self, instrument: str, key: str) -> float | None:
        return self.spec.instruments[instrument].limits.get(key)

    def cell_check(self):
        """The simulated lab's check of a protocol's declared cell (`sim.lab.check_cell_spec`),
        or None on hardware, whose cells are whatever sits in the holder."""
        if not self.simulated:
            return None
        from lipon_hw.sim.lab import check_cell_spec

        return check_cell_spec

    def connect(self, clock, seed: int | None = None) -> Lab:
        """Open every instrument (and build the simulated lab when the station is one)."""
        sim_lab = None
        endpoints = {}
        hooks: dict[str, Any] = {}
        if self.simulated:
            from lipon_hw.sim.lab import SimLab
            from lipon_hw.sim.lab_hooks import SimCells, SimFilmTruth, SimPhysics
            from lipon_hw.sim.sheet import SimSheets

            sim_lab = SimLab(self.spec, clock, seed if seed is not None else self.spec.sim.seed)
            endpoints = sim_lab.emulators
            hooks = {"cells": SimCells(sim_lab), "physics": SimPhysics(sim_lab),
                     "film_truth": SimFilmTruth(sim_lab), "sheets": SimSheets(sim_lab)}
        # in-process links back off on the run's clock: a lost sim:// port re-opens after
        # the same virtual delay on every machine (a fault's re-appearance is reproducible)
        pool = LinkPool(endpoints, clock=clock) if self.in_process else LinkPool(endpoints)
        instruments = {}
        for name, inst in self.spec.instruments.items():
            cls = driver_class(inst.driver)
            links = [pool.open(address, getattr(cls, "SERIAL_DEFAULTS", {}), inst.timeout_s)
                     for address in inst.addresses]
            link = links if len(links) > 1 else links[0]  # several: one Link per channel port
            instruments[name] = cls(name, link, **driver_kwargs(cls, inst))
        return Lab(self, instruments, pool, sim_lab, **hooks)


class CellLoading(Protocol):
    """`Lab.cells`: puts cells on potentiostat channels, as an operator loads holders."""

    def mount(self, store, run_id: int, instrument: str, channel: int, spec,
              sample_id: str | None, seed: int | None) -> None:
        """A cell built from the sample's films (or `spec`'s kind) onto the channel;
        ValueError when it cannot be built."""

    def channel(self, instrument: str, channel: int) -> PhysicsCheckpoint:
        """The physics of the cell on the channel, for the channel's checkpoints."""


class PhysicsCheckpoint(Protocol):
    """`Lab.physics` (and a channel's cell): state that a checkpoint saves and a resume
    restores, so what came after the checkpoint never happened. A snapshot is a new
    JSON-able dict each time: the caller keeps it as it was (a channel's saved state)."""

    def snapshot(self) -> dict: ...

    def restore(self, state: dict) -> None: ...


class FilmTruth(Protocol):
    """`Lab.film_truth`: the films as they really are."""

    def record_film(self, store, run_id: int, sample_id: str, step: int,
                    material: str) -> None:
        """Keep the true film behind the layer a step just recorded (apart from it)."""

    def thickness_nm(self, material: str) -> float | None:
        """The true thickness of the newest film of `material` (None: there is none)."""


class SheetLoading(Protocol):
    """`Lab.sheets`: puts a sheet of cells on the prober's chuck (a simulated station's)."""

    def load(self, store, run_id: int, spec, seed: int | None) -> None:
        """The sheet `spec` (a SheetSpec) built, its cells' truth stored apart from
        measurements; InputError for one that cannot be built."""


@dataclass
class Lab:
    """A connected station: live drivers by name, and what only a simulated lab can do.

    `cells`, `physics`, `film_truth` and `sheets` are hooks the engine calls by capability
    (None on hardware, implemented in `lipon_hw.sim.lab_hooks` and `lipon_hw.sim.sheet`);
    `sim` is the simulated lab itself, for tests and the simulator's own tools: the engine
    never reads it."""

    station: Station
    instruments: dict[str, Any]
    pool: LinkPool
    sim: Any = None
    cells: CellLoading | None = None
    physics: PhysicsCheckpoint | None = None
    film_truth: FilmTruth | None = None
    sheets: SheetLoading | None = None
    closed: bool = field(default=False)

    def for_role(self, tool: str, role: str):
        return self.instruments[self.station.role(tool, role)]

    def close(self) -> None:
        if not self.closed:
            self.pool.close()
            self.closed = True


def driver_class(key: str) -> type:
    """The driver class of a station's `driver:` name: a built-in driver or a plug-in of
    the `lipon_hw.drivers` entry-point group; never an arbitrary import."""
    if key in DRIVERS:
        module, _, cls = DRIVERS[key].partition(":")
        return getattr(importlib.import_module(module), cls)
    plugins = {ep.name: ep for ep in metadata.entry_points(group=DRIVER_ENTRY_POINTS)}
    if key in plugins:
        try:
            cls = plugins[key].load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is the user's to fix
            raise InputError(f"driver {key!r} (plug-in {plugins[key].value}) cannot be "
                             f"loaded ({type(exc).__name__}: {exc})") from None
        if not inspect.isclass(cls):
            raise InputError(f"driver {key!r} (plug-in {plugins[key].value}) is not a class")
        return cls
    known = sorted(DRIVERS) + sorted(plugins)
    guess = difflib.get_close_matches(key, known, n=1)
    raise InputError(f"driver {key!r} is unknown ({f'did you mean {guess[0]}? ' if guess else ''}"
                     f"known: {', '.join(known)}; other drivers are plug-ins registered in "
                     f"the {DRIVER_ENTRY_POINTS} entry-point group)")


def driver_kwargs(cls: type, inst: InstrumentSpec) -> dict:
    """Station settings, plus those limits the driver itself enforces."""
    params = inspect.signature(cls.__init__).parameters
    kwargs = dict(inst.settings)
    kwargs.update({k: v for k, v in inst.limits.items() if k in params})
    return kwargs


def role_gaps(driver, role: str) -> list[str]:
    """What a driver (built, or its class) lacks to act as `role`: the methods,
    properties and attributes of the role's interface."""
    return [m for m in _protocol_members(ROLES[role]) if not hasattr(driver, m)]


def default_station_text() -> str:
    return resources.files("lipon_hw").joinpath("data", DEFAULT_STATION).read_text("utf-8")


def load_station(path: str | Path | None = None, text: str | None = None) -> Station:
    """The station file at `path`, the built-in simulated lab, or a run's stored copy."""
    if text is not None:
        doc = loads(text, str(path or "<stored station>"))
    elif path is None:
        text = default_station_text()
        doc = loads(text, f"<built-in {DEFAULT_STATION}>")
    else:
        doc = load(path)
        text = doc.text
    if not isinstance(doc.data, dict):
        raise doc.error((), "a station file must be a mapping with name, instruments and tools")
    try:
        spec = StationSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise pydantic_error(doc, exc) from None
    return Station(spec, doc, text, _check(spec, doc), _interlocks(spec, doc))


def _interlocks(spec: StationSpec, doc: Doc) -> dict[str, il.Declared]:
    """Each set of station rules belongs to a tool or an instrument of the station."""
    out = {}
    for owner, specs in spec.interlocks.items():
        if owner not in spec.tools and owner not in spec.instruments:
            raise doc.error(("interlocks", owner), f"{owner!r} is neither a tool nor an "
                            f"instrument of this station (tools: {', '.join(spec.tools)})")
        if len(specs) > il.MAX_INTERLOCKS:
            raise doc.error(("interlocks", owner), f"at most {il.MAX_INTERLOCKS} rules")
        out[owner] = il.declare(doc, ("interlocks", owner), specs)
    return out


def _check(spec: StationSpec, doc: Doc) -> dict[str, Any]:
    """Every instrument, port and role checked; the drivers built unconnected."""
    ports, built = {}, {}
    for name, inst in spec.instruments.items():
        try:
            cls = driver_class(inst.driver)
        except InputError as exc:
            raise doc.error(("instruments", name, "driver"), str(exc)) from None
        try:
            addresses = inst.addresses
        except InputError as exc:
            raise doc.error(("instruments", name, "address"), str(exc)) from None
        ports[name], built[name] = check_instrument(doc, name, inst, cls, addresses,
                                                    spec.sim is not None)
    check_shared_ports(doc, spec.instruments, built, ports)
    check_notify(doc, spec.notify)
    if spec.sim is not None:
        check_simulated_lab(doc, spec)
    for tool, roles in spec.tools.items():
        for role, name in roles.items():
            loc = ("tools", tool, role)
            if role not in ROLES:
                raise doc.error(loc, f"role {role!r} is unknown (known: {', '.join(ROLES)})")
            if name not in spec.instruments:
                raise doc.error(loc, f"instrument {name!r} is not defined under instruments")
            missing = role_gaps(built[name], role)
            if missing:
                raise doc.error(loc, f"{name} ({spec.instruments[name].driver}) cannot act as "
                                     f"{role}: it lacks {', '.join(missing)}")
    return built


def _protocol_members(proto: type) -> list[str]:
    """Public methods, properties and annotated attributes of a typing.Protocol."""
    names = {m for m in dir(proto) if not m.startswith("_")}
    for klass in proto.__mro__:
        names |= {a for a in getattr(klass, "__annotations__", {}) if not a.startswith("_")}
    return sorted(names)
