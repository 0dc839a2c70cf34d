"""INFICON SQM-160 rate/thickness monitor: its commands, parameter records and display units.

Packet, CRC and the 'A'/'C'/'D' reply statuses: `lipon_hw.drivers.inficon_packet` (SQM-160
manual PN 074-511-P1C §5.3). The SQM-160 adds no status of its own.

Commands this driver uses (reply data after 'A'): ``@`` model, ``L{s}`` rate, ``N{s}``
thickness, ``P{s}`` frequency in Hz, ``R{s}`` crystal life in %, ``W`` all readings ("00.00",
then rate, thickness and frequency of each sensor: `read_together`), ``S`` zero, ``B?`` system
parameters 1 (for the display mode), ``A{f}?`` / ``A{f}<fields>`` film parameters, ``D{f}``
select film.

Unverified (the SQM-160 manual's command reference could not be read; these field orders come
from protocols.md and the public `sqm160` package, which agree and whose author ran it against
an instrument): the film record is an 8-character name then density (g/cm³, 2 decimals),
tooling (% , integer), Z-ratio (3 decimals), final thickness (kÅ), thickness setpoint (kÅ),
time setpoint (s) and a sensor bit mask; system parameters 1 (``B``) are time base, simulate,
display mode, high-rate resolution, rate filter and six crystal toolings; system parameters 2
(``C``) are frequency min/max (MHz), rate min/max, thickness min/max and etch mode. Display
mode 0 (Å) is taken to report Å/s and kÅ (the "1.000" thickness form of the SQC-310 manual's
examples) and mode 1 (nm) nm/s and µm. Other display modes carry no thickness and are refused.

Display units (``B?``) are read once and kept, not asked before every rate and thickness
(they were a third of the exchanges with the instrument). What could change them is watched:
the kept units are forgotten on every command this driver sends that writes anything (a
film record, a film select, a zero, system parameters sent through `query`), on every failed
attempt on the link (a retry, a lost link: the instrument may have restarted) and, for a
change made from the front panel, which no command shows, re-read every `UNITS_REREAD_EVERY`
readings of rate or thickness.

Crystal failure (modelled so by the emulator; the manual's wording on it is unverified): the
sensor reads 0 Hz, rate 0 and holds its last thickness. `crystal_failed()` says so outright,
`rate_A_s()` raises InstrumentError (a recipe must not mistake it for "no flux") and
`thickness_nm()` returns the held value, the last valid one.

Link recovery (`Link.exchange`'s retry rule). Idempotent, resent as they are: the queries,
the film record write ``A{f}<fields>`` (absolute values) and the film select ``D{f}``. Read
back before resending: ``S`` (zero): a second zero sent late loses what was deposited in
between, so after a failed attempt ``N{s}`` is read and the zero is resent only if the
thickness was not zeroed (`InficonInstrument.zero_once`). Unverified: that a real SQM-160
reads a thickness near 0 at once after ``S`` (the emulator does).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from lipon_hw.drivers.inficon_packet import STATUS_INVALID_COMMAND, InficonInstrument
from lipon_hw.errors import InputError, InstrumentError, LinkError
from lipon_hw.interfaces import Film
from lipon_hw.links import Link

#: display mode -> (Å/s per reported rate unit, nm per reported thickness unit)
DISPLAY_UNITS = {0: (1.0, 100.0), 1: (10.0, 1000.0)}
#: rate or thickness readings between two reads of the display units (a front-panel change)
UNITS_REREAD_EVERY = 16
#: commands that only read: the display units kept survive them (any other forgets them)
_READS = ("L", "N", "P", "R", "W", "@", "B?")
#: what one `W` reply carries for each sensor, in order after its leading "00.00" field
ALL_READINGS = ("rate_A_s", "thickness_nm", "frequency_Hz")
FILM_NAME_CHARS = 8


# --- parameter records (SQM-160 `A`, `B`, `C`; field orders unverified, see above) ---------
class SpacedRecord:
    """A parameter record as the SQM-160 sends it: the fields in order, separated by single
    spaces. `WIRE` holds each field's format (``<8``: text padded to 8 characters, which may
    hold spaces; ``d``: an integer; ``.2f``: 2 decimals); a tuple field holds as many values
    as its default."""

    WIRE: tuple[str, ...] = ()
    #: what a reply that does not parse is said not to be
    WHAT = "a parameter record"

    def format(self) -> str:
        texts = []
        for spec, fmt in zip(fields(self), self.WIRE, strict=True):
            value = getattr(self, spec.name)
            if fmt.startswith("<"):
                value = value[:int(fmt[1:])]
            texts += [format(v, fmt) for v in (value if isinstance(value, tuple) else (value,))]
        return " ".join(texts)

    @classmethod
    def parse(cls, text: str):
        """ValueError unless `text` holds exactly the record's fields."""
        rest, values = text, {}
        for spec, fmt in zip(fields(cls), cls.WIRE, strict=True):
            if fmt.startswith("<"):
                width = int(fmt[1:])
                if rest[width:width + 1] != " ":
                    raise ValueError(f"{text!r} is not {cls.WHAT}")
                values[spec.name], rest = rest[:width].rstrip(), rest[width + 1:]
                continue
            count = len(spec.default) if isinstance(spec.default, tuple) else 1
            words = rest.split(None, count)
            if len(words) < count:
                raise ValueError(f"{text!r} is not {cls.WHAT}")
            convert = int if fmt.endswith("d") else float
            numbers = tuple(convert(word) for word in words[:count])
            values[spec.name] = numbers if isinstance(spec.default, tuple) else numbers[0]
            rest = words[count] if len(words) > count else ""
        if rest.strip():
            raise ValueError(f"{text!r} is not {cls.WHAT}: {rest!r} is left over")
        return cls(**values)


@dataclass(frozen=True)
class FilmRecord(SpacedRecord):
    name: str = "FILM"
    density_g_cm3: float = 1.0
    tooling_pct: int = 100
    z_ratio: float = 1.0
    final_thickness_kA: float = 0.0
    thickness_setpoint_kA: float = 0.0
    time_setpoint_s: int = 0
    sensor_mask: int = 1

    WIRE = (f"<{FILM_NAME_CHARS}", ".2f", "d", ".3f", ".3f", ".3f", "d", "d")
    WHAT = "a film record"


@dataclass(frozen=True)
class SystemRecord1(SpacedRecord):
    time_base_s: float = 0.25
    simulate: int = 0
    display_mode: int = 0
    high_rate_resolution: int = 0
    rate_filter: int = 8
    crystal_tooling_pct: tuple[int, ...] = (100,) * 6

    WIRE = (".2f", "d", "d", "d", "d", "d")
    WHAT = "the system parameters 1"


@dataclass(frozen=True)
class SystemRecord2(SpacedRecord):
    frequency_min_MHz: float = 5.0
    frequency_max_MHz: float = 6.0
    rate_min: float = 0.0
    rate_max: float = 100.0
    thickness_min: float = 0.0
    thickness_max: float = 1.0
    etch_mode: int = 0

    WIRE = (".3f", ".3f", ".3f", ".3f", ".3f", ".3f", "d")
    WHAT = "the system parameters 2"


def film_name(name: str) -> str:
    """The name as the SQM-160 stores it: printable ASCII, upper case, 8 characters at most."""
    if not name.isascii() or not name.isprintable() or "!" in name:
        raise InputError(f"film name {name!r} must be printable ASCII without '!'")
    return name.upper()[:FILM_NAME_CHARS]


# --- driver --------------------------------------------------------------------------------
class SQM160(InficonInstrument):
    """ThicknessMonitor on one SQM-160 sensor input; film parameters go to one film slot."""

    def __init__(self, name: str, link: Link, sensor: int = 1, film: int = 1):
        if not 1 <= int(sensor) <= 6:
            raise InputError(f"{name}: sensor must be 1 to 6, not {sensor!r}")
        if not 1 <= int(film) <= 99:
            raise InputError(f"{name}: film must be 1 to 99, not {film!r}")
        super().__init__(name, link)
        self.sensor = int(sensor)
        self.film = int(film)
        self._units: tuple[float, float] | None = None  # kept display units (docstring)
        self._units_used = 0  # readings that used them
        self._w_refused = False  # the instrument answered `W` as an invalid command

    def _display_units(self, readings: int = 1) -> tuple[float, float]:
        """The display units kept (read with `B?` first if due); `readings` of rate and
        thickness use them."""
        if self._units is None or self._units_used >= UNITS_REREAD_EVERY:
            self._units = None
            system = self.query_as("B?", SystemRecord1.parse, SystemRecord1.WHAT)
            if system.display_mode not in DISPLAY_UNITS:
                raise InstrumentError(f"{self.name} answered 'B?' with system parameters "
                                      f"whose display mode {system.display_mode} reports no "
                                      "thickness (set Å or nm in its menu)")
            self._units, self._units_used = DISPLAY_UNITS[system.display_mode], 0
        self._units_used += readings
        return self._units

    def query(self, command: str) -> str:
        """`InficonInstrument.query`; a command that writes anything forgets the display
        units kept (it may have changed them)."""
        if not (command.startswith(_READS) or (command.startswith("A")
                                               and command.endswith("?"))):
            self._units = None
        return super().query(command)

    def _transact(self, link: Link, packet: bytes) -> str:
        try:
            return super()._transact(link, packet)
        except LinkError:  # retried, or the link lost: the instrument may have restarted
            self._units = None
            raise

    # --- Instrument ------------------------------------------------------------------
    def make_safe(self) -> None:
        """Nothing to do: a monitor drives no power, gas or shutter through this driver."""

    # --- ThicknessMonitor --------------------------------------------------------------
    def film_parameters(self) -> FilmRecord:
        return self.query_as(f"A{self.film}?", FilmRecord.parse, FilmRecord.WHAT)

    def set_film(self, film: Film) -> None:
        """Write name, density, Z-ratio and tooling into the film slot, then select it.

        The slot's other fields (final thickness, setpoints) are kept; this driver's sensor
        is added to the film's sensor mask. Density is stored to 0.01 g/cm³, Z to 0.001 and
        tooling to whole percent, as the instrument displays them.
        """
        old = self.film_parameters()
        new = FilmRecord(film_name(film.name), round(film.density_g_cm3, 2),
                         round(film.tooling_pct), round(film.z_ratio, 3),
                         old.final_thickness_kA, old.thickness_setpoint_kA,
                         old.time_setpoint_s, old.sensor_mask | 1 << (self.sensor - 1))
        self.query(f"A{self.film}{new.format()}")
        self.query(f"D{self.film}")

    def rate_A_s(self) -> float:
        rate_unit, _ = self._display_units()
        rate = self.query_number(f"L{self.sensor}") * rate_unit
        if rate == 0.0 and self.crystal_failed():
            raise InstrumentError(self._failed_rate())
        return rate

    def _failed_rate(self) -> str:
        return (f"{self.name} has a failed crystal on sensor {self.sensor} ('P{self.sensor}' "
                "reads 0 Hz), so its rate of 0 is no measurement")

    def thickness_nm(self) -> float:
        """Thickness since the last zero; held at its last value if the crystal failed."""
        _, thickness_unit = self._display_units()
        return self.query_number(f"N{self.sensor}") * thickness_unit

    def frequency_Hz(self) -> float:
        """Crystal frequency; 0 when the crystal has failed."""
        return self.query_number(f"P{self.sensor}")

    def crystal_life_pct(self) -> float:
        return self.query_number(f"R{self.sensor}")

    def crystal_failed(self) -> bool:
        return self.frequency_Hz() <= 0.0

    # --- ReadsTogether -------------------------------------------------------------------
    def read_together(self, names: tuple[str, ...]) -> dict[str, float | Exception]:
        """Rate, thickness and frequency from one `W` reply (the manual's "all readings":
        "00.00", then rate, thickness and frequency of each sensor), each as `rate_A_s`,
        `thickness_nm` and `frequency_Hz` give it (a zero rate on a crystal whose frequency
        reads 0 Hz is refused, from that same reply); any other quantity by its own method.
        An instrument that refuses `W` is read quantity by quantity from then on."""
        together = [name for name in names if name in ALL_READINGS] \
            if not self._w_refused else []
        out: dict[str, float | Exception] = {}
        if together:
            try:
                rate, thickness, frequency = self._all_readings(
                    ("rate_A_s" in together) + ("thickness_nm" in together))
            except InstrumentError as exc:
                if getattr(exc, "status", None) != STATUS_INVALID_COMMAND:
                    raise
                self._w_refused = True
                together = []
            else:
                read = {"rate_A_s": rate, "thickness_nm": thickness, "frequency_Hz": frequency}
                if rate == 0.0 and frequency <= 0.0:
                    read["rate_A_s"] = InstrumentError(self._failed_rate())
        for name in names:
            if name in together:
                out[name] = read[name]
                continue
            try:
                out[name] = getattr(self, name)()
            except InstrumentError as exc:
                out[name] = exc
        return out

    def _all_readings(self, unit_readings: int) -> tuple[float, float, float]:
        """(rate Å/s, thickness nm, frequency Hz) of this driver's sensor from `W`."""
        rate_unit, thickness_unit = self._display_units(max(1, unit_readings))
        fields_per_sensor = len(ALL_READINGS)
        numbers = self.query_numbers("W", 1 + fields_per_sensor * self.sensor)
        first = 1 + fields_per_sensor * (self.sensor - 1)
        rate, thickness, frequency = numbers[first:first + fields_per_sensor]
        return rate * rate_unit, thickness * thickness_unit, frequency

    def zero(self) -> None:
        """Zero thickness and rate ('S' zeroes the average and every active sensor), read
        back with `N{s}` before any resend (`zero_once`). Forgets the display units kept."""
        self._units = None
        self.zero_once("S", f"N{self.sensor}")
