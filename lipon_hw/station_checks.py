"""Everything about a station's instruments that can be checked before a run exists.

Each instrument's driver, address, limits, settings and `sim:` section are checked
here, with file:line:field, when the station is loaded (so `validate` finds what
`run` would trip on), and so are instruments that share a port:

- limits: only the keys the driver declares in `LIMITS`, each a finite number inside
  the driver's physical range; `max_X` never above `rated_X` (of the limits or of the
  simulated instrument), a channel window's `min_V` below its `max_V`;
- settings: only the driver's constructor parameters, with values the driver accepts
  (the driver is built once against a link that refuses to be used: a driver's
  constructor only checks and keeps its settings, it never talks);
- addresses: see `lipon_hw.addresses`;
- ports: two instruments reach one port only on a multidrop bus their drivers share
  (`BUS`), written the same way (one link, one lock), each driving its own part of
  the bus (`bus_claims()`: a Modbus unit's coils, a gauge controller's channels).
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass

from lipon_hw.addresses import Port, check_address
from lipon_hw.errors import InputError, LinkError
from lipon_hw.yamlfile import Doc


@dataclass
class _OnPort:
    name: str
    driver: str
    address: str
    bus: str | None
    claims: list[str]


def check_instrument(doc: Doc, name: str, inst, cls: type, addresses: list[str],
                     simulated: bool) -> tuple[list[Port], object]:
    """The ports of one instrument and its driver built (unconnected), or a located
    InputError."""
    base = ("instruments", name)
    ports = []
    for address in addresses:
        try:
            ports.append(check_address(address))
        except InputError as exc:
            raise doc.error(base + ("address",), str(exc)) from None
    if any(p.kind == "sim" for p in ports):
        if not simulated:
            raise doc.error(base + ("address",), "sim:// addresses need a `sim:` section in "
                                                 "the station")
        _check_sim_section(doc, base, inst)
    _check_limits(doc, base, inst, cls)
    driver = _build_unconnected(doc, base, name, inst, cls)
    return ports, driver


def check_shared_ports(doc: Doc, instruments: dict, built: dict, ports: dict) -> None:
    """Refuse two instruments on one port unless a multidrop bus allows it."""
    seen: dict[tuple, _OnPort] = {}
    claimed: dict[tuple, str] = {}
    for name, inst_ports in ports.items():
        driver = built[name]
        bus = getattr(type(driver), "BUS", None)
        claims = list(driver.bus_claims()) if bus else []
        loc = ("instruments", name, "address")
        here = _OnPort(name, instruments[name].driver, instruments[name].address, bus, claims)
        for port in inst_ports:
            other = seen.get(port.key)
            if other is None:
                seen[port.key] = here
                continue
            if other.name == name:
                raise doc.error(loc, "names one port twice")
            if bus is None or other.bus != bus:
                raise doc.error(loc, f"is the port of {other.name} as well; only instruments "
                                     "on one multidrop bus (Modbus RTU units, Genesys "
                                     "supplies, gauge controllers, Alicat units) may share a "
                                     f"port, and {name} ({here.driver}) and {other.name} "
                                     f"({other.driver}) are not")
            if here.address.strip() != other.address.strip():
                raise doc.error(loc, f"reaches the port of {other.name} written differently "
                                     f"({other.address!r}); write one address for one port")
            clash = _line_clash(port, type(driver), type(built[other.name]), here, other)
            if clash:
                raise doc.error(loc, clash)
        for claim in claims:
            owner = claimed.setdefault((bus, _port_keys(inst_ports), claim), name)
            if owner != name or claims.count(claim) > 1:
                raise doc.error(("instruments", name, "settings"),
                                f"{claim} on its bus is driven by "
                                f"{'it twice' if owner == name else owner} already")


def _line_clash(port: Port, cls: type, other_cls: type, here: _OnPort,
                other: _OnPort) -> str | None:
    """Why two instruments of one bus still cannot share this port: one line has one
    set of serial settings, one simulated port one emulator."""
    if port.kind == "sim":
        from lipon_hw.sim.emulators import EMULATORS

        if EMULATORS.get(here.driver) != EMULATORS.get(other.driver):
            return (f"is the simulated port of {other.name}, whose emulator cannot also "
                    f"serve {here.driver}; give {here.name} a sim:// port of its own")
        return None
    ours = {**getattr(cls, "SERIAL_DEFAULTS", {})}
    theirs = {**getattr(other_cls, "SERIAL_DEFAULTS", {})}
    given = {"baudrate" if k == "baud" else k for k in port.options}
    for key in sorted(set(ours) & set(theirs) - given):
        if ours[key] != theirs[key]:
            return (f"shares a line with {other.name}, but {here.driver} defaults to {key} "
                    f"{ours[key]} and {other.driver} to {theirs[key]}; give the line's "
                    f"{'baud' if key == 'baudrate' else key} in the address")
    return None


def _port_keys(ports: list[Port]) -> tuple:
    return tuple(p.key for p in ports)


# --- limits -----------------------------------------------------------------------------
def _check_limits(doc: Doc, base: tuple, inst, cls: type) -> None:
    known: dict[str, tuple[float, float]] = getattr(cls, "LIMITS", {})
    for key, value in inst.limits.items():
        loc = base + ("limits", key)
        if key not in known:
            guess = difflib.get_close_matches(key, list(known), n=1)
            hint = (f"; did you mean {guess[0]}?" if guess else
                    f" (its limits: {', '.join(known)})" if known else
                    "; it takes no limits")
            raise doc.error(loc, f"is not a limit driver {inst.driver} knows{hint}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise doc.error(loc, f"must be a number, not {value!r}")
        if not math.isfinite(value):
            raise doc.error(loc, f"must be a finite number, not {value}")
        inst.limits[key] = value = float(value)
        low, high = known[key]
        if not low <= value <= high:
            raise doc.error(loc, f"{value:g} is outside {low:g}…{high:g}, the range of "
                                 f"driver {inst.driver}")
    limits = inst.limits
    if "min_V" in limits and "max_V" in limits and not limits["min_V"] < limits["max_V"]:
        raise doc.error(base + ("limits", "min_V"), f"{limits['min_V']:g} V is not below "
                                                    f"max_V = {limits['max_V']:g} V")
    for key, value in limits.items():
        if not key.startswith("max_"):
            continue
        rated_key = "rated_" + key[len("max_"):]
        rating = limits.get(rated_key, inst.sim.get(rated_key))
        if isinstance(rating, int | float) and not isinstance(rating, bool) \
                and math.isfinite(rating) and value > rating:
            where = "" if rated_key in limits else "sim."
            raise doc.error(base + ("limits", key), f"{value:g} is above the instrument's "
                                                    f"rating {where}{rated_key} = {rating:g}")


# --- settings ---------------------------------------------------------------------------
class _UnconnectedLink:
    """What a driver is built with at validation: any use of it is a bug of the driver."""

    def __init__(self, address: str):
        self.address = address

    def __getattr__(self, attr):
        raise LinkError(f"{self.address} is not connected during validation")


def _build_unconnected(doc: Doc, base: tuple, name: str, inst, cls: type):
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    limits = getattr(cls, "LIMITS", {})
    accepted = [p for i, p in enumerate(params) if i >= 3 and p not in limits and
                params[p].kind not in (params[p].VAR_KEYWORD, params[p].VAR_POSITIONAL)]
    for key, value in inst.settings.items():
        loc = base + ("settings", key)
        if key in limits:
            raise doc.error(loc, f"is a limit of driver {inst.driver}: put it under limits, "
                                 "where its range is checked")
        if key not in params and not takes_any or key in ("self", "name", "link"):
            guess = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f"did you mean {guess[0]}? " if guess else ""
            raise doc.error(loc, f"is not a setting of driver {inst.driver} ({hint}it takes: "
                                 f"{', '.join(accepted) or 'none'})")
        bad = _non_finite(value)
        if bad is not None:
            raise doc.error(loc, f"must be finite, not {bad}")
        if key in params:
            wanted = _wrong_kind(params[key], value)
            if wanted is not None:
                raise doc.error(loc, f"must be {wanted}, not {value!r}")
    from lipon_hw.station import driver_kwargs

    links = [_UnconnectedLink(a) for a in inst.addresses]
    try:
        return cls(name, links if len(links) > 1 else links[0], **driver_kwargs(cls, inst))
    except InputError as exc:
        message = str(exc).removeprefix(f"{name}: ")
    except (TypeError, ValueError, LinkError) as exc:
        message = f"driver {inst.driver} cannot use them ({exc})"
    raise doc.error(base + ("settings",), message)


#: what a setting must be, by its driver's annotation of it: words and test (text is
#: left to the driver or emulator, whose words say how: "a quoted string", a unit's letter)
_KINDS = {"bool": ("true or false", lambda v: isinstance(v, bool)),
          "int": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
          "float": ("a number", lambda v: isinstance(v, int | float)
                    and not isinstance(v, bool))}


def _wrong_kind(param: inspect.Parameter, value) -> str | None:
    """What the setting must be, if `value` is not that, as the driver's signature
    declares it (`bool`, `int`, `float`, each or None); None if it is (or the annotation
    says nothing this knows: text, a card's dict, a pair)."""
    annotation = param.annotation
    if not isinstance(annotation, str):  # a module without postponed annotations
        annotation = getattr(annotation, "__name__", str(annotation))
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None and "None" in kinds:
        return None
    kinds = [k for k in kinds if k != "None"]
    if len(kinds) != 1 or kinds[0] not in _KINDS:
        return None
    words, ok = _KINDS[kinds[0]]
    return None if ok(value) else words


def _non_finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return value
    if isinstance(value, dict | list | tuple):
        for item in value.values() if isinstance(value, dict) else value:
            bad = _non_finite(item)
            if bad is not None:
                return bad
    return None


# --- the simulated lab ------------------------------------------------------------------
def _check_sim_section(doc: Doc, base: tuple, inst) -> None:
    """The driver has an emulator, and the `sim:` section holds only what it takes."""
    from lipon_hw.sim import lab
    from lipon_hw.sim.emulators import CELL_EMULATORS, EMULATORS
    from lipon_hw.sim.world import TOOLS

    if inst.driver in CELL_EMULATORS:
        factory = lab.cell_emulator_factory(inst.driver)
        known = set(lab.CELL_KEYS) - {"tool"} | _keywords(factory, skip=3)
    elif inst.driver in EMULATORS:
        init = lab.emulator_class(inst.driver).__init__
        known = {"tool"} | _keywords(init, skip=2)
        params = inspect.signature(init).parameters
        for key, value in inst.sim.items():  # each as its emulator declares it
            wanted = _wrong_kind(params[key], value) if key in params else None
            if wanted is not None:
                raise doc.error(base + ("sim", key), f"must be {wanted}, not {value!r}")
        tool = inst.sim.get("tool", "sputter")
        if tool not in TOOLS:
            raise doc.error(base + ("sim", "tool"), f"{tool!r} is not a tool of the simulated "
                                                    f"lab (it has {', '.join(TOOLS)})")
    else:
        raise doc.error(base + ("address",), f"driver {inst.driver} has no emulator in the "
                                             "simulated lab, so it cannot use a sim:// address")
    unknown = [k for k in inst.sim if k not in known]
    if unknown:
        raise doc.error(base + ("sim", unknown[0]),
                        f"has a setting the {inst.driver} emulator does not take: "
                        f"{unknown[0]} (it takes: {', '.join(sorted(known))})")
    bad = _non_finite(inst.sim)
    if bad is not None:
        raise doc.error(base + ("sim",), f"must hold finite numbers, not {bad}")


def check_simulated_lab(doc: Doc, spec) -> None:
    """Build the simulated lab once (~20 ms for the default station), as `connect`
    will: what its cells and emulators refuse is found here, before a run exists."""
    from lipon_hw.sim.fault_schedule import FaultEntryError
    from lipon_hw.sim.lab import SIM_PREFIX, SimLab

    try:
        SimLab(spec, lambda: 0.0, spec.sim.seed)
    except FaultEntryError as exc:
        raise doc.error(exc.loc, str(exc)) from None
    except (InputError, ValueError, TypeError, KeyError) as exc:
        message = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        loc: tuple = ("sim",)
        found = []
        for name, inst in spec.instruments.items():
            endpoints = {a[len(SIM_PREFIX):] for a in inst.addresses if a.startswith(SIM_PREFIX)}
            if message.startswith(f"instrument {name}:") or \
                    any(message.startswith(f"{e}:") for e in endpoints):
                found.append((name, inst))
        if found:
            message = message.partition(": ")[2]
            field = message.partition(" ")[0]  # "serial '12a' must be …" names its field
            # instruments sharing an emulator: the one whose sim: section holds the field
            name, inst = next(((n, i) for n, i in found if field in i.sim), found[0])
            loc = ("instruments", name, "sim") + ((field,) if field in inst.sim else ())
        raise doc.error(loc, message) from None


def _keywords(fn, skip: int) -> set[str]:
    """Keyword parameters of `fn` after its first `skip` (not counting self); through
    the **settings of a classmethod factory to its class's constructor."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    names = {p.name for p in params[skip:] if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    owner = getattr(fn, "__self__", None)
    if any(p.kind is p.VAR_KEYWORD for p in params) and isinstance(owner, type):
        names |= _keywords(owner.__init__, skip)
    return names
