"""Checks of what a protocol's values make together, once each value is in its range
(`ranges`): a safety window that is a window with the setpoints inside it, a step that
lasts at least one measurement, a sweep of bounded points and duration, currents within
100 C of a known capacity, cell parameters a lab can build. Each raises the one located
sentence of `Doc.error`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lipon_hw import ranges as r
from lipon_hw.errors import CellParamError
from lipon_hw.yamlfile import Doc

if TYPE_CHECKING:
    from lipon_hw.celltest.protocol import Program
    from lipon_hw.celltest.protocol_schema import CellSpec, Record, Safety, _Step

FOREVER_S = 1.0e7  # a step with no time limit still needs one on the instrument
FASTEST_C = 100.0  # a current in amperes is at most this C-rate of a known capacity


MIN_WINDOW_V = 0.1  # a safety window narrower than this trips on noise at the first sample


def setpoint_volts(p: _Step) -> dict[str, float]:
    """Voltages a step applies (an end condition, `until.voltage_V`, is not one: a limit
    reached first trips the channel, which is a defined end)."""
    return {k: getattr(p, k) for k in ("voltage_V", "from_V", "to_V", "vertex1_V",
                                       "vertex2_V", "dc_V") if getattr(p, k, None) is not None}


def check_safety(doc: Doc, base: tuple, safety: Safety, loc: tuple | None = None,
                  p: _Step | None = None) -> None:
    """A safety window (a step's own over the protocol's) is a window, min_V at least
    MIN_WINDOW_V below max_V, and a step's setpoints lie strictly inside it: a setpoint on
    or past a limit would trip the channel at once. Each sentence names the line of every
    limit involved, since either side may be the mistake."""
    own = set(p.safety.model_fields_set) if p is not None and p.safety is not None else set()
    if own:
        safety = safety.model_copy(update=p.safety.model_dump(exclude_unset=True))

    def origin(key: str) -> tuple:
        return (loc if key in own else base) + ("safety", key)

    def at(key: str) -> str:
        return f"{key} at line {doc.line(origin(key))}"

    lo, hi = safety.min_V, safety.max_V
    if lo is not None and hi is not None and hi - lo < MIN_WINDOW_V \
            and (p is None or own & {"min_V", "max_V"}):
        key = "max_V" if p is None or "max_V" in own else "min_V"
        raise doc.error(origin(key), f"the safety window {lo:g}…{hi:g} V ({at('min_V')}, "
                                     f"{at('max_V')}) is empty or narrower than "
                                     f"{MIN_WINDOW_V:g} V: max_V must be above min_V")
    if p is None:
        return
    window = f"{'−∞' if lo is None else f'{lo:g}'}…{'∞' if hi is None else f'{hi:g}'}"
    for key, v in setpoint_volts(p).items():
        if (lo is not None and v <= lo) or (hi is not None and v >= hi):
            limit = "min_V" if lo is not None and v <= lo else "max_V"
            raise doc.error(loc + (key,), f"{v:g} V is not inside the safety window {window} V: "
                                          f"{at(limit)} would trip the channel on it")
    current, i_max = getattr(p, "current_A", None), safety.max_current_A
    if current is not None and i_max is not None and abs(current) >= i_max:
        raise doc.error(loc + ("current_A",), f"|{current:g}| A is not below the safety limit "
                                              f"max_current_A = {i_max:g} A "
                                              f"({at('max_current_A')})")


def check_interval(doc: Doc, loc: tuple, p: _Step, record: Record) -> None:
    """A step measures at least once: its time limit is not shorter than the instrument's
    measurement interval (the instrument would refuse it once the run has started)."""
    duration = p.until.duration_s
    if duration is None:  # EIS and sweeps take no `until`: they run their own course
        return
    interval = (p.record or record).interval_s
    if duration < interval:
        key = next(k for k in ("time_s", "time_min", "time_h") if getattr(p.until, k))
        raise doc.error(loc + ("until", key), f"the step would last {duration:g} s, less than "
                                              f"one measurement interval ({interval:g} s, "
                                              "record.interval_s)")


def check_sweep(doc: Doc, loc: tuple, p: _Step) -> None:
    """A sweep's points (path / step) and duration (path / rate) are bounded."""
    if not hasattr(p, "path_V"):  # the sweeps
        return
    path_mV = p.path_V() * 1e3
    points = path_mV / p.step_mV
    if points > r.MAX_SWEEP_POINTS:
        raise doc.error(loc + ("step_mV",), f"{p.step_mV:g} mV over a {path_mV:g} mV path makes "
                                            f"{points:.3g} points, more than "
                                            f"{r.MAX_SWEEP_POINTS:.0e}")
    if path_mV / p.rate_mV_s > FOREVER_S:
        raise doc.error(loc + ("rate_mV_s",), f"{p.rate_mV_s:g} mV/s over a {path_mV:g} mV path "
                                              f"takes {path_mV / p.rate_mV_s:.3g} s, longer "
                                              f"than a step may last ({FOREVER_S:.0e} s)")


def check_c_rates(doc: Doc, program: Program, capacity_Ah: float | None, channel: int,
                  max_current: tuple[float, str] | None = None) -> None:
    """With a known capacity: a current given in amperes is at most the fastest C-rate
    (C_RATE: 100 C), as a C-rate is; and a C-rate's current is within `max_current`
    (the potentiostat's limit and what sets it), as a current in amperes is."""
    if capacity_Ah is None:
        return
    cell = f"the {capacity_Ah * 1e6:g} µAh cell of channel {channel}"
    for i, st in enumerate(program.steps):
        p = st.params
        current = getattr(p, "current_A", None) if p is not None else None
        rate = getattr(p, "rate_C", None) if p is not None else None
        loc = program.base + ("steps", i, st.kind)
        if current is not None and abs(current) > FASTEST_C * capacity_Ah:
            raise doc.error(loc + ("current_A",), f"|{current:g}| A is "
                                                  f"{abs(current) / capacity_Ah:.3g} C for "
                                                  f"{cell}, faster than {FASTEST_C:g} C")
        if rate is not None and max_current is not None \
                and abs(rate) * capacity_Ah > max_current[0]:
            raise doc.error(loc + ("rate_C",), f"{rate:g} C of {cell} is "
                                               f"{abs(rate) * capacity_Ah:.3g} A, above "
                                               f"{max_current[1]}")


def check_cell(doc: Doc, loc: tuple, cell: CellSpec, cell_check) -> None:
    """A cell's model parameters are finite numbers (or lists of them, or short names), an
    initial state of charge is one, and the lab can build the cell (`cell_check`: the
    simulated lab refuses unknown parameters and faults)."""
    for key, value in cell.params.items():
        values = value if isinstance(value, list) else [value]
        if len(values) > 1000 or not all(_param_value_ok(v) for v in values):
            raise doc.error(loc + ("params", key), "a cell parameter is a finite number, a list "
                                                   "of them, or a short name")
        if key == "initial_soc":
            lo, hi = r.SOC
            if not (isinstance(value, int | float) and lo <= value <= hi):
                raise doc.error(loc + ("params", key), f"{value!r} is outside {lo:g}–{hi:g} "
                                                       "(a state of charge)")
    if cell_check is None or (cell.kind is None and not cell.params and not cell.faults):
        return
    try:
        cell_check(cell)
    except CellParamError as exc:
        raise doc.error(loc + ("params", exc.key), exc.message) from None
    except (ValueError, TypeError, KeyError) as exc:
        field = "params" if cell.params else "faults" if cell.faults else "kind"
        raise doc.error(loc + (field,), f"the lab cannot build this cell ({exc})") from None


def _param_value_ok(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return math.isfinite(v) and abs(v) < 1e30
    return v is None or (isinstance(v, str) and len(v) <= 64)


