"""A cell-test protocol against the station: which potentiostat, how many channels, what
its driver can run, and the channel's voltage window and current limits (from the station
file and the driver's current ranges, read from its class before anything connects)."""

from __future__ import annotations

from lipon_hw.celltest.protocol_schema import _Head, _Step
from lipon_hw.station import Station, driver_class
from lipon_hw.yamlfile import Doc


def potentiostat(doc: Doc, head: _Head, station: Station) -> str:
    if head.potentiostat is None:
        name = station.spec.tools.get("cycler", {}).get("potentiostat")
        if name is None:
            raise doc.error(("potentiostat",), f"is required: station {station.spec.name!r} "
                                               "has no `cycler` tool with a potentiostat")
        return name
    if head.potentiostat not in station.spec.instruments:
        raise doc.error(("potentiostat",), f"instrument {head.potentiostat!r} is not in station "
                                           f"{station.spec.name!r} (it has "
                                           f"{', '.join(station.spec.instruments)})")
    if lacks := station.lacks(head.potentiostat, "potentiostat"):
        raise doc.error(("potentiostat",), f"{head.potentiostat} is not a potentiostat (it "
                                           f"lacks {', '.join(lacks)})")
    return head.potentiostat


def channel_count(station: Station, pstat: str) -> int:
    inst = station.instrument(pstat)
    return len(getattr(inst, "addresses", None) or [inst.address])


def driver_techniques(station: Station, pstat: str) -> tuple:
    return getattr(driver_class(station.instrument(pstat).driver), "TECHNIQUES", ())


def check_limits(doc: Doc, loc: tuple, p: _Step, station: Station, pstat: str) -> None:
    limits = station.instrument(pstat).limits
    lo, hi = limits.get("min_V"), limits.get("max_V")
    i_max = limits.get("max_current_A")
    volts = {k: getattr(p, k) for k in ("voltage_V", "from_V", "to_V", "vertex1_V",
                                         "vertex2_V", "dc_V") if getattr(p, k, None) is not None}
    if p.until.voltage_V is not None:
        volts["until.voltage_V"] = p.until.voltage_V
    for key, v in volts.items():
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            window = f"{'−∞' if lo is None else f'{lo:g}'}…{'∞' if hi is None else f'{hi:g}'}"
            raise doc.error(loc + tuple(key.split(".")),
                            f"{v:g} V is outside the channel window {window} V of {pstat}")
    current = getattr(p, "current_A", None)
    if i_max is not None and current is not None and abs(current) > i_max:
        raise doc.error(loc + ("current_A",), f"|{current:g}| A is above the station limit "
                                              f"max_current_A = {i_max:g} of {pstat}")
    full_scale = largest_current_range(station, pstat)
    if full_scale is not None and current is not None and abs(current) > full_scale:
        raise doc.error(loc + ("current_A",), f"|{current:g}| A is above {pstat}'s largest "
                                              f"current range, {full_scale:g} A")


def max_current(station: Station, pstat: str) -> tuple[float, str] | None:
    """The largest |I| a channel of `pstat` may carry, and a phrase saying what sets it."""
    limits = [(v, f"the station limit max_current_A = {v:g} A of {pstat}")
              for v in [station.instrument(pstat).limits.get("max_current_A")] if v is not None]
    full_scale = largest_current_range(station, pstat)
    if full_scale is not None:
        limits.append((full_scale, f"{pstat}'s largest current range, {full_scale:g} A"))
    return min(limits) if limits else None


def largest_current_range(station: Station, pstat: str) -> float | None:
    """The driver's largest current range (its `current_ranges_A` is a constant of the
    make, so it is read from the class, before any instrument is connected)."""
    ranges = getattr(driver_class(station.instrument(pstat).driver), "current_ranges_A", None)
    try:
        return max(ranges(None)) if ranges is not None else None
    except (TypeError, AttributeError, ValueError):
        return None
