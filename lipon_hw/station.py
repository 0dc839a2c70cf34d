"""The station: which instruments exist, how to reach them, and their limits.

A station file is YAML:

    name: ...
    sim: {seed: 1}            # present ⇒ sim:// addresses are served by an in-process World
    instruments:
      rf: {driver: ae_bus, address: sim://rf, limits: {max_power_W: 100}, settings: {unit: 1}}
      mes4: {driver: methodscript, address: "sim://mes4/{1-16}"}   # one port per channel
    tools:
      sputter: {rf_supply: rf, ...}   # role → instrument

Recipes speak of roles (`rf_supply`, `thickness_monitor`, ...) of one tool; the
station says which instrument plays each. The built-in default station is the
simulated lab, so every command works with no hardware and no flags.

An address may hold one channel range `{a-b}`: an instrument that enumerates one
port per channel (a MultiEmStat4 shows up as 16 serial ports) is one instrument
whose driver gets one Link per expanded address, in order.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lipon_hw import interfaces
from lipon_hw.drivers import DRIVERS
from lipon_hw.errors import InputError
from lipon_hw.links import LinkPool
from lipon_hw.yamlfile import Doc, load, loads, pydantic_error

DEFAULT_STATION = "sim_lab.yaml"

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
}


class FilmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    density_g_cm3: float = Field(gt=0)
    z_ratio: float = Field(gt=0)
    tooling_pct: float = Field(default=100.0, gt=0)


_RANGE = re.compile(r"\{(\d+)-(\d+)\}")
MAX_CHANNELS = 256


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
    if last - first + 1 > MAX_CHANNELS:
        raise InputError(f"address {address!r}: the channel range {match[0]} names "
                         f"{last - first + 1} ports, more than {MAX_CHANNELS}")
    width = len(match[1]) if match[1].startswith("0") and len(match[1]) > 1 else 0
    head, tail = address[:match.start()], address[match.end():]
    return [f"{head}{n:0{width}d}{tail}" for n in range(first, last + 1)]


class InstrumentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    driver: str
    address: str
    timeout_s: float = Field(default=1.0, gt=0)
    settings: dict[str, Any] = {}
    limits: dict[str, float] = {}
    films: dict[str, FilmSpec] = {}
    sim: dict[str, Any] = {}

    @property
    def addresses(self) -> list[str]:
        """The address with its channel range expanded: one per port, in channel order."""
        return expand_address(self.address)


class SimSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 1


class StationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    sim: SimSpec | None = None
    instruments: dict[str, InstrumentSpec]
    tools: dict[str, dict[str, str]] = {}


@dataclass
class Station:
    spec: StationSpec
    doc: Doc
    text: str

    @property
    def simulated(self) -> bool:
        return self.spec.sim is not None

    @property
    def path(self) -> str:
        return self.doc.path

    def instrument(self, name: str) -> InstrumentSpec:
        return self.spec.instruments[name]

    def role(self, tool: str, role: str) -> str:
        return self.spec.tools[tool][role]

    def limit(self, instrument: str, key: str) -> float | None:
        return self.spec.instruments[instrument].limits.get(key)

    def connect(self, clock, seed: int | None = None) -> Lab:
        """Open every instrument (and build the simulated lab when the station is one)."""
        sim_lab = None
        endpoints = {}
        if self.simulated:
            from lipon_hw.sim.lab import SimLab

            sim_lab = SimLab(self.spec, clock, seed if seed is not None else self.spec.sim.seed)
            endpoints = sim_lab.emulators
        pool = LinkPool(endpoints)
        instruments = {}
        for name, inst in self.spec.instruments.items():
            cls = driver_class(inst.driver)
            links = [pool.open(address, getattr(cls, "SERIAL_DEFAULTS", {}), inst.timeout_s)
                     for address in inst.addresses]
            link = links if len(links) > 1 else links[0]  # several: one Link per channel port
            instruments[name] = cls(name, link, **_driver_kwargs(cls, inst))
        return Lab(self, instruments, pool, sim_lab)


@dataclass
class Lab:
    """A connected station: live drivers by name, and the simulated lab if any."""

    station: Station
    instruments: dict[str, Any]
    pool: LinkPool
    sim: Any = None
    closed: bool = field(default=False)

    def for_role(self, tool: str, role: str):
        return self.instruments[self.station.role(tool, role)]

    def close(self) -> None:
        if not self.closed:
            self.pool.close()
            self.closed = True


def driver_class(key: str) -> type:
    target = DRIVERS.get(key, key)
    if ":" not in target:
        raise InputError(f"driver {key!r} is unknown (known: {', '.join(sorted(DRIVERS))}, "
                         "or module:Class)")
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise InputError(f"driver {key!r} cannot be imported ({target})") from None


def _driver_kwargs(cls: type, inst: InstrumentSpec) -> dict:
    """Station settings, plus those limits the driver itself enforces."""
    params = inspect.signature(cls.__init__).parameters
    kwargs = dict(inst.settings)
    kwargs.update({k: v for k, v in inst.limits.items() if k in params})
    return kwargs


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
    _check(spec, doc)
    return Station(spec, doc, text)


def _check(spec: StationSpec, doc: Doc) -> None:
    for name, inst in spec.instruments.items():
        try:
            driver_class(inst.driver)
        except InputError as exc:
            raise doc.error(("instruments", name, "driver"), str(exc)) from None
        loc = ("instruments", name, "address")
        try:
            addresses = inst.addresses
        except InputError as exc:
            raise doc.error(loc, str(exc)) from None
        if addresses[0].startswith("sim://") and spec.sim is None:
            raise doc.error(loc, "sim:// addresses need a `sim:` section in the station")
    for tool, roles in spec.tools.items():
        for role, name in roles.items():
            loc = ("tools", tool, role)
            if role not in ROLES:
                raise doc.error(loc, f"role {role!r} is unknown (known: {', '.join(ROLES)})")
            if name not in spec.instruments:
                raise doc.error(loc, f"instrument {name!r} is not defined under instruments")
            cls = driver_class(spec.instruments[name].driver)
            missing = [m for m in _protocol_methods(ROLES[role]) if not hasattr(cls, m)]
            if missing:
                raise doc.error(loc, f"{name} ({spec.instruments[name].driver}) cannot act as "
                                     f"{role}: it lacks {', '.join(missing)}")


def _protocol_methods(proto: type) -> list[str]:
    return [m for m in dir(proto) if not m.startswith("_") and callable(getattr(proto, m))]
