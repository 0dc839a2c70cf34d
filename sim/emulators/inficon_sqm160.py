"""INFICON SQM-160 emulator: the monitor's packets, readings from the sputter tool's crystal.

The tool's crystal is wired to one sensor input (setting `sensor`); the other inputs of a
2- or 6-channel unit (setting `channels`) have no crystal and read 0 Hz. Readings follow
what the instrument computes, with the *configured* film parameters:

- thickness and rate: the INFICON sensor measurement both emulators share
  (`lipon_hw.sim.emulators.inficon_sensor`): the Z-match equation from the crystal's uncoated
  frequency, between the frequency at the last zero (`S`) and now, with the active film's
  density and Z-ratio, times film and crystal tooling; every rate reading carries noise;
- crystal life: where the frequency sits between the System 2 frequency min and max;
- a failed crystal reads 0 Hz and rate 0, and its thickness holds the last value computed
  while it oscillated (the manual's exact crystal-fail display could not be checked).

Film and system parameters are instrument memory: they live on this object, survive new
connections, and are part of `snapshot()` / `restore()` with the zero frequency. A packet
with a bad CRC is dropped without a reply (assumption; the manual documents no status for
it); a '!' inside a packet restarts reception there, as the manual says.

Command summary (SQM-160 manual ch. 8.4 as the reference notes and the open clients quote
it) and coverage: `@` version, `J` channels, `L{n}`/`L{n}?` rate, `M` average rate,
`N{n}` thickness, `O` average thickness, `P{n}` frequency, `R{n}` crystal life, `W` all
readings, `S` zero thickness and rate, `T` zero the timer (acknowledged; the timer has no
reading here), `Y` power-up flag, `Z` defaults, `D{f}` active film, `A{f}?`/`A{f} …` film
parameters, `B?`/`B …` and `C?`/`C …` system parameters, `U?`/`U1`/`U0` shutter relay
(status, open, close). Any other command answers status 'C' (invalid command), bad data
'D'. Unverified: `D`, `U` and the field order of A/B/C are from a third-party package, not
the manual; the shutter relay is not wired to a tool here (each station's shutter is on its
relay module), so `U` switches the relay's own state only.
"""

from __future__ import annotations

from lipon_hw.drivers.inficon_sqm160 import (
    DISPLAY_UNITS,
    FilmRecord,
    SystemRecord1,
    SystemRecord2,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.emulators.inficon_framing import InficonEmulator
from lipon_hw.sim.emulators.inficon_sensor import CrystalSensor, FilmConstants
from lipon_hw.sim.state import state_dict

FIRMWARE = "MON Ver 4.13"  # the version string pymeasure's tests quote
# film parameter limits from the SQM-160 specifications (quoted from memory: unverified)
DENSITY_LIMITS_G_CM3 = (0.5, 99.99)
TOOLING_LIMITS_PCT = (10, 399)
Z_RATIO_LIMITS = (0.1, 10.0)


class SQM160Emulator(InficonEmulator):
    model = "INFICON SQM-160"
    bad_crc_reply = b""  # dropped: the manual names no status for it (assumption)

    def __init__(self, name: str, tool, sensor: int = 1, channels: int = 2):
        super().__init__(name)
        if channels not in (2, 6) or not 1 <= sensor <= channels:
            raise InputError(f"{name}: an SQM-160 has 2 or 6 channels and the crystal on one "
                             f"of them (got channels={channels}, sensor={sensor})")
        self.tool = tool
        self.sensor = sensor
        self.channels = channels
        self.crystal_sensor = CrystalSensor(tool)
        self._constants_for: tuple = (None, None)  # (film, system 1, sensor) -> constants
        self.handlers = {
            "@": lambda arg: FIRMWARE, "J": lambda arg: str(self.channels),
            "L": self._cmd_rate, "M": self._cmd_average_rate,
            "N": self._cmd_thickness, "O": self._cmd_average_thickness,
            "P": self._cmd_frequency, "R": self._cmd_life, "W": self._cmd_all,
            "S": self._cmd_zero, "T": lambda arg: "", "Y": self._cmd_power_up,
            "Z": self._cmd_defaults, "D": self._cmd_select_film, "A": self._cmd_film,
            "B": self._cmd_system1, "C": self._cmd_system2, "U": self._cmd_shutter,
        }
        self.shutter_open = False  # the rear-panel shutter relay
        self.power_up = True
        self._cmd_defaults("")
        self._cmd_zero("")

    # --- instrument memory ---------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"films": {str(n): state_dict(f) for n, f in self.films.items()},
                "active_film": self.active_film, "system1": state_dict(self.system1),
                "system2": state_dict(self.system2), "power_up": self.power_up,
                "zero_Hz": self.crystal_sensor.zero_Hz, "held_A": self.crystal_sensor.held_A,
                "shutter_open": self.shutter_open}

    def restore(self, state: dict) -> None:
        self.films = {int(n): FilmRecord(**f) for n, f in state["films"].items()}
        self.active_film = state["active_film"]
        system1 = dict(state["system1"])
        system1["crystal_tooling_pct"] = tuple(system1["crystal_tooling_pct"])
        self.system1 = SystemRecord1(**system1)
        self.system2 = SystemRecord2(**state["system2"])
        self.power_up = state["power_up"]
        self.crystal_sensor.zero_Hz = state["zero_Hz"]
        self.crystal_sensor.held_A = state["held_A"]
        self.shutter_open = state.get("shutter_open", False)  # older checkpoints lack it

    # --- physics (the shared sensor measurement) ------------------------------------------
    def _film(self) -> FilmRecord:
        film = self.films.get(self.active_film)
        return film if film is not None else default_film(self.active_film)

    def _constants(self, sensor: int) -> FilmConstants:
        film = self._film()
        kept = self._constants_for
        if kept[0] is not None:  # frozen records: the very same ones, the same constants
            kept_film, kept_system, kept_sensor = kept[0]
            if kept_film is film and kept_system is self.system1 and kept_sensor == sensor:
                return kept[1]
        key = (film, self.system1, sensor)  # equal records (a film written again), too
        if kept[0] != key:
            tooling = film.tooling_pct / 100 * self.system1.crystal_tooling_pct[sensor - 1] / 100
            self._constants_for = (key, FilmConstants(film.density_g_cm3, film.z_ratio, tooling))
        else:
            self._constants_for = (key, kept[1])
        return self._constants_for[1]

    def _live_crystal(self, sensor: int) -> dict | None:
        """The tool's crystal if it is on `sensor` and oscillating."""
        return self.crystal_sensor.live() if sensor == self.sensor else None

    def _frequency_Hz(self, sensor: int) -> float:
        return self.crystal_sensor.frequency_Hz() if sensor == self.sensor else 0.0

    def _rate_A_s(self, sensor: int) -> float:
        crystal = self._live_crystal(sensor)
        if crystal is None:
            return 0.0
        return self.crystal_sensor.measured_rate_A_s(self._constants(sensor), crystal)

    def _thickness_A(self, sensor: int) -> float:
        if sensor != self.sensor:
            return 0.0
        return self.crystal_sensor.thickness_A(self._constants(sensor))

    def _averaged_sensors(self) -> list[int]:
        mask = self._film().sensor_mask
        return [s for s in range(1, self.channels + 1)
                if mask & 1 << (s - 1) and self._live_crystal(s) is not None]

    # --- display -------------------------------------------------------------------------
    def _show_rate(self, rate_A_s: float) -> str:
        return f"{rate_A_s / DISPLAY_UNITS[self.system1.display_mode][0]:5.2f}"

    def _show_thickness(self, thickness_A: float) -> str:
        return f"{thickness_A / 10 / DISPLAY_UNITS[self.system1.display_mode][1]:6.3f}"

    def _sensor_arg(self, arg: str) -> int:
        sensor = int(arg.removesuffix("?"))
        if not 1 <= sensor <= self.channels:
            raise ValueError(f"sensor {sensor} is not installed")
        return sensor

    # --- commands (each returns the reply data or raises ValueError for status 'D') -------
    def _cmd_rate(self, arg: str) -> str:
        return self._show_rate(self._rate_A_s(self._sensor_arg(arg)))

    def _cmd_thickness(self, arg: str) -> str:
        return self._show_thickness(self._thickness_A(self._sensor_arg(arg)))

    def _cmd_frequency(self, arg: str) -> str:
        return f"{self._frequency_Hz(self._sensor_arg(arg)):.3f}"

    def _cmd_life(self, arg: str) -> str:
        life = self.crystal_sensor.life_pct(self._frequency_Hz(self._sensor_arg(arg)),
                                            self.system2.frequency_min_MHz * 1e6,
                                            self.system2.frequency_max_MHz * 1e6)
        return f"{life:.2f}"

    def _cmd_average_rate(self, arg: str) -> str:
        sensors = self._averaged_sensors()
        return self._show_rate(sum(map(self._rate_A_s, sensors)) / max(1, len(sensors)))

    def _cmd_average_thickness(self, arg: str) -> str:
        sensors = self._averaged_sensors()
        return self._show_thickness(sum(map(self._thickness_A, sensors)) / max(1, len(sensors)))

    def _cmd_all(self, arg: str) -> str:
        """Rate, thickness and frequency of every sensor, as L, N and P give them, from one
        look at its crystal (the three are read at one instant)."""
        readings = ["00.00"]
        for s in range(1, self.channels + 1):
            crystal = self._live_crystal(s)
            if crystal is None:  # no crystal on this input, or a failed one
                rate, thickness, frequency = 0.0, self._thickness_A(s), 0.0
            else:
                constants = self._constants(s)
                rate = self.crystal_sensor.measured_rate_A_s(constants, crystal)
                thickness = self.crystal_sensor.thickness_from(constants, crystal)
                frequency = crystal["frequency_Hz"]
            readings.append(f"{self._show_rate(rate).strip()} "
                            f"{self._show_thickness(thickness).strip()} {frequency:.3f}")
        return " ".join(readings)

    def _cmd_zero(self, arg: str) -> str:
        self.crystal_sensor.zero()
        return ""

    def _cmd_power_up(self, arg: str) -> str:
        flag, self.power_up = self.power_up, False
        return "1" if flag else "0"

    def _cmd_defaults(self, arg: str) -> str:
        self.films: dict[int, FilmRecord] = {}
        self.active_film = 1
        self.system1 = SystemRecord1()
        self.system2 = SystemRecord2()
        return ""

    def _cmd_shutter(self, arg: str) -> str:
        if arg == "?":
            return "1" if self.shutter_open else "0"
        if arg not in ("0", "1"):
            raise ValueError(f"U{arg} is not U?, U0 or U1")
        self.shutter_open = arg == "1"
        return ""

    def _cmd_select_film(self, arg: str) -> str:
        self.active_film = film_number(arg)
        return ""

    def _cmd_film(self, arg: str) -> str:
        if arg.endswith("?"):
            number = film_number(arg[:-1])
            return self.films.get(number, default_film(number)).format()
        number, record = parse_film_setting(arg)
        self.films[number] = record
        return ""

    def _cmd_system1(self, arg: str) -> str:
        if arg == "?":
            return self.system1.format()
        record = SystemRecord1.parse(arg)
        if record.display_mode not in DISPLAY_UNITS:
            raise ValueError(f"display mode {record.display_mode} is not emulated")
        self.system1 = record
        return ""

    def _cmd_system2(self, arg: str) -> str:
        if arg == "?":
            return self.system2.format()
        record = SystemRecord2.parse(arg)
        if record.frequency_min_MHz >= record.frequency_max_MHz:
            raise ValueError("frequency min must be below max")
        self.system2 = record
        return ""


def default_film(number: int) -> FilmRecord:
    """A film slot after a reset (`Z`); values are an assumption."""
    return FilmRecord(name=f"FILM {number}")


def film_number(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a film number")
    number = int(text)
    if not 1 <= number <= 99:
        raise ValueError(f"film {number} does not exist")
    return number


def parse_film_setting(arg: str) -> tuple[int, FilmRecord]:
    """`A{film}{record}`: the film number has 1 or 2 digits and the name 8 characters, so
    the split is the one that leaves a valid record."""
    for digits in (2, 1):
        try:
            number, record = film_number(arg[:digits]), FilmRecord.parse(arg[digits:])
        except ValueError:
            continue
        check_film(record)
        return number, record
    raise ValueError(f"{arg!r} is not a film setting")


def check_film(record: FilmRecord) -> None:
    for value, (low, high) in ((record.density_g_cm3, DENSITY_LIMITS_G_CM3),
                               (record.tooling_pct, TOOLING_LIMITS_PCT),
                               (record.z_ratio, Z_RATIO_LIMITS)):
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
