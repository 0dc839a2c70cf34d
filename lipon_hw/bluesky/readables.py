"""Devices that only read: a thickness monitor, a pressure gauge, a thermometer.

Each is an ophyd-async `StandardReadable` whose signals are its driver's queries
(`backend.driver_r`), named as the capability names them (`thickness_nm`,
`pressure_torr`, `temperature_C`), with their units. The first signals of each are
hinted (what a live table or plot shows); every read asks the instrument afresh.
"""

from __future__ import annotations

from ophyd_async.core import StandardReadable
from ophyd_async.core import StandardReadableFormat as Format

from lipon_hw.bluesky.backend import driver_r
from lipon_hw.bluesky.calls import DriverCalls

HINTED = Format.HINTED_UNCACHED_SIGNAL
PLAIN = Format.UNCACHED_SIGNAL


class ThicknessMonitorDevice(StandardReadable):
    """A quartz-crystal monitor (`ThicknessMonitor`): rate and thickness of the film
    it is set for, the crystal's frequency and its remaining life."""

    def __init__(self, calls: DriverCalls, driver, name: str = ""):
        inst = driver.name
        with self.add_children_as_readables(HINTED):
            self.thickness_nm = driver_r(calls, inst, "thickness_nm", driver.thickness_nm,
                                         units="nm", precision=3)
            self.rate_A_s = driver_r(calls, inst, "rate_A_s", driver.rate_A_s,
                                     units="Å/s", precision=3)
        with self.add_children_as_readables(PLAIN):
            self.frequency_Hz = driver_r(calls, inst, "frequency_Hz", driver.frequency_Hz,
                                         units="Hz", precision=3)
            self.crystal_life_pct = driver_r(calls, inst, "crystal_life_pct",
                                             driver.crystal_life_pct, units="%", precision=1)
        super().__init__(name=name)


class PressureGaugeDevice(StandardReadable):
    """A vacuum gauge (`PressureGauge`)."""

    def __init__(self, calls: DriverCalls, driver, name: str = ""):
        with self.add_children_as_readables(HINTED):
            self.pressure_torr = driver_r(calls, driver.name, "pressure_torr",
                                          driver.pressure_torr, units="Torr")
        super().__init__(name=name)


class ThermometerDevice(StandardReadable):
    """A thermometer (`Thermometer`); `alarm_high_C`, when the station gives one (a
    LiPON substrate's `lipon_max_C`), is its alarm limit in the descriptor."""

    def __init__(self, calls: DriverCalls, driver, name: str = "",
                 alarm_high_C: float | None = None):
        limits = None if alarm_high_C is None else \
            {"alarm": {"low": None, "high": float(alarm_high_C)}}
        with self.add_children_as_readables(HINTED):
            self.temperature_C = driver_r(calls, driver.name, "temperature_C",
                                          driver.temperature_C, units="degC", precision=1,
                                          limits=limits)
        super().__init__(name=name)
