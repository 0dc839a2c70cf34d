"""Devices that are set: RF power, gas flow, source current, the shutter, the valves.

Each setpoint is a `SignalRW` whose write is the driver's own command, bounded by the
station's limit (`limits.Range`, shown as the descriptor's control limits). The
device is `Movable`: `bps.mv(n2_mfc, 20)` or a `scan` over it sets that setpoint, and
a value outside the limit raises `InputError` from `set()` itself — before any
status exists and before a byte is sent. What it reads is the instrument's own
read-back (`flow_sccm` is the measured flow, not the setpoint echoed).

Switching RF or a source on is an output signal of its own (`rf.output`), never a
side effect of a setpoint: a scan of the setpoint with RF off is a dry run.
"""

from __future__ import annotations

from bluesky.protocols import Movable
from ophyd_async.core import AsyncStatus, Device, SignalRW, StandardReadable, StrictEnum

from lipon_hw.bluesky.backend import driver_r, driver_rw
from lipon_hw.bluesky.calls import DriverCalls
from lipon_hw.bluesky.limits import Range
from lipon_hw.bluesky.readables import HINTED, PLAIN
from lipon_hw.errors import InputError


class _Setpoint(StandardReadable, Movable):
    """A readable device whose `set(value)` writes one bounded setpoint signal."""

    #: the attribute naming the setpoint signal (a second attribute holding the signal
    #: would make it a second child, read twice under another name)
    SETPOINT: str
    _range: Range

    def set(self, value: float) -> AsyncStatus:
        self._range.check(value)  # refused here, before a status or a frame exists
        setpoint: SignalRW = getattr(self, self.SETPOINT)
        return setpoint.set(float(value))


class SputterSupplyDevice(_Setpoint):
    """An RF generator (`SputterSupply`); moves its power setpoint, within `max_power_W`."""

    SETPOINT = "power_setpoint_W"

    def __init__(self, calls: DriverCalls, driver, power: Range, name: str = ""):
        inst = driver.name
        with self.add_children_as_readables(HINTED):
            self.forward_power_W = driver_r(calls, inst, "forward_power_W",
                                            driver.forward_power_W, units="W", precision=0)
        with self.add_children_as_readables(PLAIN):
            self.reflected_power_W = driver_r(calls, inst, "reflected_power_W",
                                              driver.reflected_power_W, units="W", precision=0)
            self.load_power_W = driver_r(calls, inst, "load_power_W", driver.load_power_W,
                                         units="W", precision=0)
            self.dc_bias_V = driver_r(calls, inst, "dc_bias_V", driver.dc_bias_V, units="V",
                                      precision=0)
            self.power_setpoint_W = driver_rw(calls, inst, "power_setpoint_W",
                                              driver.power_setpoint_W,
                                              driver.set_power_setpoint_W, units="W",
                                              precision=0, setpoint=power)
            self.output = driver_rw(calls, inst, "output", lambda: driver.status().output_on,
                                    driver.set_output, bool)
        self._range = power
        super().__init__(name=name)


class MassFlowDevice(_Setpoint):
    """A mass-flow controller (`MassFlowController`); moves its flow setpoint, within
    `max_flow_sccm`."""

    SETPOINT = "flow_setpoint_sccm"

    def __init__(self, calls: DriverCalls, driver, flow: Range, name: str = ""):
        inst = driver.name
        with self.add_children_as_readables(HINTED):
            self.flow_sccm = driver_r(calls, inst, "flow_sccm", driver.flow_sccm,
                                      units="sccm", precision=2)
        with self.add_children_as_readables(PLAIN):
            self.flow_setpoint_sccm = driver_rw(calls, inst, "flow_setpoint_sccm",
                                                driver.flow_setpoint_sccm,
                                                driver.set_flow_sccm, units="sccm",
                                                precision=2, setpoint=flow)
        self._range = flow
        super().__init__(name=name)


class SourceSupplyDevice(_Setpoint):
    """An evaporation source supply (`SourceSupply`); moves its current setpoint, within
    `max_current_A`. `output` switches it (read back where the driver can)."""

    SETPOINT = "current_setpoint_A"

    def __init__(self, calls: DriverCalls, driver, current: Range, name: str = ""):
        inst = driver.name
        with self.add_children_as_readables(HINTED):
            self.current_A = driver_r(calls, inst, "current_A", driver.current_A, units="A",
                                      precision=2)
        with self.add_children_as_readables(PLAIN):
            self.voltage_V = driver_r(calls, inst, "voltage_V", driver.voltage_V, units="V",
                                      precision=3)
            self.current_setpoint_A = driver_rw(calls, inst, "current_setpoint_A",
                                                driver.current_setpoint_A,
                                                driver.set_current_A, units="A",
                                                precision=2, setpoint=current)
            if hasattr(driver, "output_on"):
                self.output = driver_rw(calls, inst, "output", driver.output_on,
                                        driver.set_output, bool)
        self._range = current
        super().__init__(name=name)


class ShutterState(StrictEnum):
    OPEN = "open"
    CLOSED = "closed"


class ShutterDevice(StandardReadable, Movable):
    """A shutter (`Shutter`): `set("open")` / `set("closed")`, read back from the
    instrument (`state`)."""

    def __init__(self, calls: DriverCalls, driver, name: str = ""):
        def move(state: ShutterState) -> None:
            if state is ShutterState.OPEN:
                driver.open()
            else:
                driver.close()

        with self.add_children_as_readables(HINTED):
            self.state = driver_rw(
                calls, driver.name, "state",
                lambda: ShutterState.OPEN if driver.is_open() else ShutterState.CLOSED,
                move, ShutterState)
        self._instrument = driver.name
        super().__init__(name=name)

    def set(self, value: str) -> AsyncStatus:
        return self.state.set(_choice(ShutterState, value, self._instrument))


class ValveState(StrictEnum):
    PUMP = "pump"
    VENT = "vent"
    ISOLATE = "isolate"


class ValvesDevice(Device, Movable):
    """A chamber's valves (`VacuumValves`): `set("pump" | "vent" | "isolate")`. Not
    readable: the capability has no read-back of the valves (read the gauge)."""

    def __init__(self, calls: DriverCalls, driver, name: str = ""):
        self._calls, self._driver = calls, driver
        super().__init__(name=name)

    def set(self, value: str) -> AsyncStatus:
        state = _choice(ValveState, value, self._driver.name)
        act = {ValveState.PUMP: self._driver.pump, ValveState.VENT: self._driver.vent,
               ValveState.ISOLATE: self._driver.isolate}[state]
        return AsyncStatus(self._calls.run(self._driver.name, state.value, act))


def _choice(enum: type[StrictEnum], value, instrument: str):
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(e.value) for e in enum)
        raise InputError(f"{instrument} can be set to {choices}, not {value!r}") from None
