"""A connected station's instruments as ophyd-async devices, found by capability.

Each instrument's live driver is matched against the capabilities of
`lipon_hw.interfaces` (the `typing.Protocol`s the station checked its roles against when
it loaded), in the order of `CAPABILITIES`, and gets the device of the first it
implements; an instrument with none of them (a potentiostat, a source selector) gets
no device. Setpoint ranges come from the station's limits (`limits.setpoint_range`).

The clock. A bluesky RunEngine runs in wall time, so the simulated lab runs on a
real-time clock here: in this process, its World following `speed` × the wall clock
(1: real time; 60: a minute of chamber time per second). That is what a user of
`devices()` expects — readings that move while a plan waits, no ports opened, no
server to stop, the station's seed — and every read still goes through the real driver,
its framing and the station's `Link.exchange()` to the emulator, exactly as over TCP.
A station of real instruments (or of emulators served by `lipon-hw sim serve`, reached at
socket:// addresses) runs on the wall clock and takes no other speed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ophyd_async.core import Device

from lipon_hw import interfaces
from lipon_hw.api import ConnectedStation
from lipon_hw.bluesky import movables, readables
from lipon_hw.bluesky.calls import DriverCalls
from lipon_hw.bluesky.limits import setpoint_range, station_limit
from lipon_hw.errors import InputError

Factory = Callable[[DriverCalls, Any, Any, str], Device]


def _sputter(calls, driver, station, name):
    power = setpoint_range(station, name, driver, "power_setpoint_W", "W", "max_power_W")
    return movables.SputterSupplyDevice(calls, driver, power, name)


def _flow(calls, driver, station, name):
    flow = setpoint_range(station, name, driver, "flow_setpoint_sccm", "sccm",
                          "max_flow_sccm")
    return movables.MassFlowDevice(calls, driver, flow, name)


def _source(calls, driver, station, name):
    current = setpoint_range(station, name, driver, "current_setpoint_A", "A",
                             "max_current_A")
    return movables.SourceSupplyDevice(calls, driver, current, name)


def _thermometer(calls, driver, station, name):
    alarm, _ = station_limit(station, name, driver, "lipon_max_C")
    return readables.ThermometerDevice(calls, driver, name, alarm)


#: capability → the device an instrument implementing it gets, first match wins
CAPABILITIES: list[tuple[type, Factory]] = [
    (interfaces.SputterSupply, _sputter),
    (interfaces.MassFlowController, _flow),
    (interfaces.SourceSupply, _source),
    (interfaces.ThicknessMonitor,
     lambda calls, driver, station, name: readables.ThicknessMonitorDevice(calls, driver, name)),
    (interfaces.PressureGauge,
     lambda calls, driver, station, name: readables.PressureGaugeDevice(calls, driver, name)),
    (interfaces.Thermometer, _thermometer),
    (interfaces.Shutter,
     lambda calls, driver, station, name: movables.ShutterDevice(calls, driver, name)),
    (interfaces.VacuumValves,
     lambda calls, driver, station, name: movables.ValvesDevice(calls, driver, name)),
]


class StationDevices(Mapping[str, Device]):
    """The devices of a connected station by instrument name (`devs["qcm"]`).

    `close()` (or leaving a `with` block) stops the devices' calls, puts every instrument
    in its safe state (RF off, flow off, shutter closed, ...) and closes the links.
    `lab` is the connected `lipon_hw.station.Lab` (its `sim` is the simulated lab)."""

    def __init__(self, connected: ConnectedStation, calls: DriverCalls,
                 found: dict[str, Device], speed: float):
        self._connected = connected
        self._calls = calls
        self._devices = found
        self.lab = connected.lab
        self.speed = speed

    def __getitem__(self, name: str) -> Device:
        if name not in self._devices:
            raise KeyError(f"station {self.lab.station.spec.name!r} has no device {name!r} "
                           f"(it has {', '.join(self._devices)})")
        return self._devices[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)

    def close(self) -> None:
        """Safe state on every instrument (each tried), then the links closed."""
        if self._calls.closed:
            return
        self._calls.close()
        self._connected.close()

    def __enter__(self) -> StationDevices:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def devices(station_path: str | Path | None = None, speed: float = 1.0,
            seed: int | None = None) -> StationDevices:
    """Connect a station (default: the built-in simulated lab) and return its
    instruments as bluesky devices, connected in the bluesky event loop — so a
    `RunEngine` must exist first. `speed` runs a simulated station's clock that many
    times faster than the wall clock; `seed` overrides its seed."""
    from bluesky.run_engine import call_in_bluesky_event_loop, get_bluesky_event_loop

    from lipon_hw.station import load_station

    loop = get_bluesky_event_loop()
    if loop is None or not loop.is_running():
        raise InputError("lipon_hw.bluesky.devices() connects its devices in the bluesky "
                         "event loop: create the RunEngine first (RE = RunEngine())")
    if not (isinstance(speed, int | float) and speed > 0 and math.isfinite(speed)):
        raise InputError(f"speed must be a finite number above 0, not {speed!r}")
    station = load_station(station_path)
    if station.in_process:
        from lipon_hw.sim.serve import scaled_clock

        clock = scaled_clock(speed)
    elif speed != 1:
        raise InputError(f"station {station.spec.name!r} has real instruments: its clock is "
                         f"the wall clock, so speed must be 1 (not {speed!r})")
    else:
        clock = time.monotonic
    connected = ConnectedStation(station.connect(clock, seed), None)
    calls = DriverCalls()
    try:
        found = {}
        for name, driver in connected.instruments.items():
            factory = next((f for proto, f in CAPABILITIES if isinstance(driver, proto)), None)
            if factory is not None:
                found[name] = factory(calls, driver, station, name)
        call_in_bluesky_event_loop(_connect(found))
    except BaseException:
        calls.close()
        connected.close()
        raise
    return StationDevices(connected, calls, found, float(speed))


async def _connect(found: dict[str, Device]) -> None:
    """Name each device after its instrument and connect them all."""
    for name, device in found.items():
        device.set_name(name)
    await asyncio.gather(*(device.connect() for device in found.values()))
