"""A setpoint's allowed range, from the station, checked before anything is sent.

The station file's `limits:` of an instrument (`max_power_W: 100`) bound what a device
may be set to. Where the station names none, the driver's own bound is used (the
one it would refuse beyond), so a device never offers more than its driver accepts.
A value outside the range raises `InputError`, one sentence naming the instrument, the
value and the limit, before the device sends a byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lipon_hw.errors import InputError


@dataclass(frozen=True)
class Range:
    instrument: str
    quantity: str
    units: str
    low: float
    high: float | None
    #: the station limit this range comes from, for the error message
    key: str = ""

    def check(self, value: Any) -> float:
        """`value` as a float when it is a finite number within the range."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise InputError(f"{self.instrument}: {self.quantity} takes a number of "
                             f"{self.units}, not {value!r}")
        if number < self.low or (self.high is not None and number > self.high):
            high = "" if self.high is None else f"{self.high:g}"
            where = f" ({self.key} in the station)" if self.key else ""
            raise InputError(f"{self.instrument}: {self.quantity} {number:g} {self.units} is "
                             f"outside the limit {self.low:g}–{high} {self.units}{where}; "
                             "nothing was sent")
        return number

    def datakey_limits(self) -> dict:
        """The range as event-model `limits` (control limits: what may be set)."""
        return {"control": {"low": self.low, "high": self.high}}


def station_limit(station, instrument: str, driver, key: str) -> tuple[float | None, str]:
    """(value, where) of a limit: the station's `limits: {key: ...}` of the instrument, else
    the driver's attribute of that name (what it enforces by default), else None."""
    value = station.limit(instrument, key)
    if value is not None:
        return float(value), key
    default = getattr(driver, key, None)
    return (float(default), "") if isinstance(default, int | float) else (None, "")


def setpoint_range(station, instrument: str, driver, quantity: str, units: str,
                   key: str) -> Range:
    """The range 0 … the station's `key` limit for a setpoint of `instrument`."""
    high, where = station_limit(station, instrument, driver, key)
    return Range(instrument, quantity, units, 0.0, high, where)
