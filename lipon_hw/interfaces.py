"""Capabilities, not makes: what a recipe may ask of an instrument.

Each is a `typing.Protocol`; a driver implements one by having the methods, so a
recipe written against `SputterSupply` runs on any generator whose driver does.
Names carry their units. Every instrument also has `make_safe()`, which puts it in
the state that cannot hurt the sample, the tool or a person (RF off, flow off,
shutter closed, ...), and `identify()`, its own answer to "who are you".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class Instrument(Protocol):
    name: str

    def identify(self) -> str: ...

    def make_safe(self) -> None: ...


@dataclass(frozen=True)
class SupplyStatus:
    output_on: bool
    setpoint_reached: bool
    interlock_open: bool
    fault: bool
    raw: int = 0


@runtime_checkable
class SputterSupply(Instrument, Protocol):
    def set_output(self, on: bool) -> None: ...

    def set_power_setpoint_W(self, power_W: float) -> None: ...

    def set_regulation_mode(self, mode: str) -> None:
        """'forward' or 'load' (delivered) power regulation."""

    def power_setpoint_W(self) -> float: ...

    def forward_power_W(self) -> float: ...

    def reflected_power_W(self) -> float: ...

    def load_power_W(self) -> float: ...

    def dc_bias_V(self) -> float: ...

    def status(self) -> SupplyStatus: ...


@runtime_checkable
class HostWatchdog(Protocol):
    """An instrument that switches its output off by itself when the host has not
    exchanged a valid frame with it for `host_watchdog_s()` (a generator's communications
    watchdog). A run arms it with the station's `watchdog_period_s` and, while the output
    is on, exchanges at least every half of it (`lipon_hw.deposition.heartbeat`)."""

    name: str
    #: the watchdog time the station gives (its `host_watchdog_s` limit, or the default)
    watchdog_period_s: float
    #: called after every valid exchange with the instrument, whatever it was
    on_exchange: Callable[[], None] | None

    def set_host_watchdog_s(self, timeout_s: float) -> None:
        """Arm the watchdog for `timeout_s`; 0 disarms it."""

    def host_watchdog_s(self) -> float:
        """The armed time, 0 when disarmed."""

    def host_watchdog_tripped(self) -> bool:
        """The watchdog switched the output off since it was last switched on."""


@dataclass(frozen=True)
class Film:
    """Film parameters a thickness monitor needs (INFICON material table style)."""

    name: str
    density_g_cm3: float
    z_ratio: float
    tooling_pct: float = 100.0


@runtime_checkable
class ThicknessMonitor(Instrument, Protocol):
    def set_film(self, film: Film) -> None: ...

    def rate_A_s(self) -> float: ...

    def thickness_nm(self) -> float: ...

    def frequency_Hz(self) -> float: ...

    def crystal_life_pct(self) -> float: ...

    def zero(self) -> None: ...


@runtime_checkable
class ReadsTogether(Protocol):
    """An instrument whose protocol answers several quantities in one query (the SQM-160's
    `W`: rate, thickness and frequency of every sensor). `read_together(names)` reads the
    named quantities (method names of its capability) with the fewest exchanges its protocol
    allows, every one a reading taken now: each value as that quantity's own method gives
    it, or the InstrumentError that method would raise for it (the others still read). A
    lost link raises, as a single reading does, and so does a refusal of the query that
    carries several (each of those quantities is refused with it)."""

    def read_together(self, names: tuple[str, ...]) -> dict[str, float | Exception]: ...


@runtime_checkable
class PressureGauge(Instrument, Protocol):
    def pressure_torr(self) -> float: ...


@runtime_checkable
class MassFlowController(Instrument, Protocol):
    def set_flow_sccm(self, flow_sccm: float) -> None: ...

    def flow_sccm(self) -> float: ...

    def flow_setpoint_sccm(self) -> float: ...


@runtime_checkable
class Shutter(Instrument, Protocol):
    def open(self) -> None: ...

    def close(self) -> None: ...

    def is_open(self) -> bool: ...


@runtime_checkable
class VacuumValves(Instrument, Protocol):
    """Roughing/turbo pumping and venting of a chamber (valves and pump enables)."""

    def pump(self) -> None: ...

    def vent(self) -> None: ...

    def isolate(self) -> None: ...


@runtime_checkable
class SourceSupply(Instrument, Protocol):
    """The power supply of an evaporation source, run in constant current."""

    def set_output(self, on: bool) -> None: ...

    def set_current_A(self, current_A: float) -> None: ...

    def current_setpoint_A(self) -> float: ...

    def current_A(self) -> float: ...

    def voltage_V(self) -> float: ...


@runtime_checkable
class SourceSelector(Instrument, Protocol):
    """Routes the source supply to one of several boats (a high-current switch)."""

    def select_source(self, number: int) -> None: ...


@runtime_checkable
class DepositionController(ThicknessMonitor, Protocol):
    """A thickness monitor that also closes the rate loop on a source (PID, shutter)."""

    def set_rate_control(self, rate_A_s: float, final_thickness_nm: float, p_gain: float,
                         i_time_s: float, d_time_s: float, max_power_pct: float,
                         shutter_delay_s: float) -> None: ...

    def start_layer(self) -> None: ...

    def stop_layer(self) -> None: ...

    def output_pct(self) -> float: ...

    def phase(self) -> str: ...

    def crystal_failed(self) -> bool: ...


@runtime_checkable
class Thermometer(Instrument, Protocol):
    def temperature_C(self) -> float: ...


@runtime_checkable
class PotentiostatRun(Protocol):
    """One technique running on one channel. `poll()` returns the samples that arrived
    since the last call (in time order); once `finished`, `end_reason` says why:
    'v_max', 'v_min', 'i_min' (a limit of the technique), 'window' (its safety window,
    where the instrument judges it: a run's optional `judges_window` says so), 'done' (its
    time or sweep ran out), 'aborted' (stopped) or 'error' (the instrument refused to go
    on)."""

    channel: int
    finished: bool
    #: the longest the host may wait between polls (a host-timed instrument measures only
    #: when asked); None if the instrument measures and buffers on its own
    poll_interval_s: float | None

    def poll(self) -> list: ...

    @property
    def end_reason(self) -> str | None: ...


@runtime_checkable
class Potentiostat(Instrument, Protocol):
    """A cell tester with numbered channels (from 1); techniques are those of
    `lipon_hw.techniques`. A channel runs one technique at a time; `make_safe`
    stops every channel and disconnects every cell. `TECHNIQUES` (class attribute) lists
    the technique types the instrument can run."""

    TECHNIQUES: tuple[type, ...]

    @property
    def channels(self) -> int: ...

    def start(self, channel: int, technique) -> PotentiostatRun: ...

    def stop(self, channel: int) -> None: ...

    def cell_on(self, channel: int, voltage_V: float | None = None) -> None: ...

    def cell_off(self, channel: int) -> None: ...

    def current_ranges_A(self) -> tuple[float, ...]:
        """The current ranges the channels can autorange over, smallest first."""


@dataclass(frozen=True)
class ProbeCard:
    """A prober's probe card: `rows` × `cols` sites at `pitch_mm` (x along the columns,
    y along the rows; the sheet's pitch), site (i, j) numbered (i−1)·cols + j from 1 and
    wired to potentiostat channel `channels[site − 1]`."""

    rows: int
    cols: int
    pitch_mm: tuple[float, float]
    channels: tuple[int, ...]

    @property
    def sites(self) -> int:
        return self.rows * self.cols

    def site_offset_mm(self, row: int, col: int) -> tuple[float, float]:
        """Where site (row, col) touches, relative to site (1, 1), in mm."""
        return ((col - 1) * self.pitch_mm[0], (row - 1) * self.pitch_mm[1])

    def channel(self, row: int, col: int) -> int:
        return self.channels[(row - 1) * self.cols + (col - 1)]


@runtime_checkable
class ProberStage(Instrument, Protocol):
    """The XYZ stage that steps a sheet under a probe card (Z down = needles on the pads).

    Positions are in the sheet's frame: (x, y) is the sheet point under site (1, 1), cell
    (r, c) sitting at ((c−1)·pitch_x, (r−1)·pitch_y). `move_to_mm` (needles lifted first)
    and `contact` send their moves and return the seconds they take: the host waits that
    long on its own clock, then asks `moving()` until False. `make_safe` lifts the needles
    to clear height: the cells disconnected from the probes."""

    card: ProbeCard
    contact_z_mm: float
    clear_z_mm: float

    def move_to_mm(self, x_mm: float, y_mm: float) -> float: ...

    def contact(self, down: bool) -> float: ...

    def moving(self) -> bool: ...

    def position_mm(self) -> tuple[float, float, float]:
        """(x, y) in the sheet's frame and the machine Z."""

    def still_where_left(self) -> None:
        """After its link was lost and came back: InstrumentError unless the stage knows
        its position still and stands where this driver left it (its last target, or the
        position it last reported); a controller reset meanwhile has lost its frame."""
