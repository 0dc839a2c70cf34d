"""The physical range of every number a recipe or a protocol may give, in one place.

"Greater than zero" is not a range: 1e-300 s passes it and a run never finishes. Each
field of the step models is one of the types below, so a value outside its range (NaN
and ±inf included, and strings and booleans where a number is due) is refused when the
file is validated, with the range in the sentence. The station's own limits (max RF
power, a channel's voltage window, ...) narrow these further at validation.

    type             range            unit   where it comes from
    ---------------  ---------------  -----  ------------------------------------------------
    RECORD_S         1e-3 – 86 400    s      below 1 ms is under any instrument's measuring
                                             period; above a day a cell test records nothing
    MEASURE_S        1e-3 – 3 600     s      MethodSCRIPT loops take ms; an hour between
                                             measurements would miss every limit
    POLL_S           0.01 – 3 600     s      faster than 10 ms floods a serial port
    CHECKPOINT_S     1 – 86 400       s      a resume point at least daily
    TECHNIQUE_S      1e-3 – 1e7       s      a technique's run (lipon_hw.techniques): a 1 ms
                                             screening pulse to the instrument's cap
    DEP_RECORD_S     0.05 – 3 600     s      serial links at 9.6–115 kbaud: 50 ms a poll
    STEP_TIME_*      0.01 – 1e7       s      a step's time limit: the instrument's own cap
                                             (protocol_checks.FOREVER_S, 116 days)
    WAIT_MIN         1/60 – 43 200    min    one second to a 30-day campaign horizon
    PROCESS_MIN      0.1 – 1 440      min    presputter, deposit by time: a day at most
    TIMEOUT_MIN      0.1 – 2 880      min    a 2-day pump-down is a leak, not a process
    MAX_H            0.01 – 168       h      3.7 µm LiPON takes ~22 h (PHYSICS.md §1)
    SHORT_S          0 – 3 600        s      settle, soak, stable and ramp times
    IGNITE_S         0.1 – 600        s      a plasma strikes in seconds (PHYSICS.md §3)
    PRESSURE_TORR    1e-11 – 760      Torr   cold-cathode floor (MKS 937B) to atmosphere
    PRESSURE_MTORR   0.1 – 1 000      mTorr  sputter pressures (plasma ≥ 5 mTorr, §3)
    FLOW_SCCM        0 – 10 000       sccm   the largest MFC (10 slm); station limit narrows
    PERCENT          0.1 – 100        %      tolerances, reflected-power fractions
    POWER_W          0 – 10 000       W      the largest RF generators; max_power_W narrows
    RAMP_W_S         0.01 – 1 000     W/s    a 100 W ramp ends within 3 h at the slowest
    THICKNESS_NM     0.1 – 100 000    nm     an atomic layer to 100 µm (10 µm LCO, §6)
    RATE_A_S         0.01 – 1 000     Å/s    QCM rate resolution to the fastest evaporation
    SOURCE_A         0.01 – 1 000     A      boat currents; the station's max_current_A
    GAIN             0 – 1 000        —      PID gains (host loop: kp 1e-3–1 000 A,
                                             ti 0.01–3 600 s, in recipe.PID)
    BOAT             1 – 64           —      selector positions; the station's `boats`
    VOLTS            −10 – 10         V      any cell voltage; the protocol's safety window
                                             and the station's channel window narrow it
    CELL_A           |I| 1e-12 – 1    A      1 pA (resolution of the finest range, 1 nA on
                                             the EmStat4 LR) to 1 A (Keithley 2450); never 0
    C_RATE           |C| 1e-3 – 100   C      C/1000 to 100 C; never 0 (as an end: 1e-4)
    CAPACITY_UAH     1e-3 – 1e7       µAh    1 nAh to 10 Ah (CAPACITY_MAH likewise)
    DVDT_MV_H        1e-3 – 1e6       mV/h   a rest's end on the voltage drift
    RECORD_MV        0.01 – 1 000     mV     a change above the converter's noise
    RECORD_UA        1e-6 – 1e6       µA     a current change from 1 pA to 1 A
    FREQ_HZ          1e-5 – 1e7       Hz     EIS, 10 µHz to 10 MHz (the seeds reach 3 MHz)
    PER_DECADE       1 – 100          —      EIS points per decade (EIS_POINTS: 1–1 000)
    AMPLITUDE_MV     0.1 – 500        mV     EIS excitation
    SWEEP_RATE_MV_S  1e-3 – 10 000    mV/s   scan rates
    SWEEP_STEP_MV    0.1 – 100        mV     the DAC resolves ~0.1 mV
    SCANS            1 – 1 000        —      cyclic sweeps
    LOOP_TIMES       1 – 100 000      —      thin-film cells last 10⁴–10⁵ cycles (CYCLES too)
    RETENTION_PCT    1 – 99.9         %      end of life below this retention
    AREA_CM2         1e-4 – 1 000     cm²    a 0.1 mm pad to a production sheet
    TEMPERATURE_C    −80 – 150        °C     climate chambers; LiPON's Tg is 207 °C (§1)
    SOC              −0.05 – 1.05     —      a cell model's state of charge: the OCV tables
                                             reach past 0 and 1 (LNMO starts at −0.03)

Beyond single values, validation bounds what values make together:
- protocols (`protocol_checks`): a safety window at least 0.1 V wide with the setpoints
  strictly inside it; a sweep of at most MAX_SWEEP_POINTS points lasting at most
  FOREVER_S; a step at least one measurement interval long; |I| at most the driver's
  largest current range and 100 C of a known capacity; cell model parameters finite,
  known to the simulated lab, within six decades of the model's own (efficiencies and
  CPE exponents in 0–1);
- programs (`termination`): no `goto` way back that no loop counts, at most 10⁷ steps;
- channels: ranges checked against the potentiostat's channel count before expansion;
- recipes: boats within the selector's `boats`, an RF ramp over within 4 h;
- interlocks (`interlocks.MAX_*`): 500 characters, 200 nodes, finite number constants,
  a hold of an hour at most.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Strict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError

#: every step model: unknown fields refused, NaN and ±inf refused
MODEL_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

MAX_SWEEP_POINTS = 1_000_000  # a sweep's points over all scans (the store's rows per step)


def _fmt(x: float) -> str:
    return f"{x:g}"


def _checker(lo: float, hi: float, unit: str, why: str, nonzero: bool, signed: bool):
    span = f"{'±' if signed else ''}{_fmt(lo)}–{_fmt(hi)}{' ' + unit if unit else ''}"

    def check(value):
        v = float(value) if not isinstance(value, int) or abs(value) < 1e308 else math.inf
        size = abs(v) if signed else v
        if nonzero and v == 0:
            raise PydanticCustomError("range", "0 is not allowed here: |value| must be within "
                                      "{span} ({why})", {"span": span, "why": why})
        if not (lo <= size <= hi):
            raise PydanticCustomError("range", "{value} is outside {span} ({why})",
                                      {"value": _fmt(v), "span": span, "why": why})
        return value

    return check


def _not_bool(value):
    # YAML 1.1 reads `3.0e6` as a string, so numeric strings stay welcome; `yes` does not
    if isinstance(value, bool):
        raise PydanticCustomError("number", "{value} is a yes/no value, not a number",
                                  {"value": str(value).lower()})
    return value


_NUMBER = BeforeValidator(_not_bool)


class Span:
    """A range as JSON Schema says it (`lipon-hw schema`): bounds, unit and why, so an
    editor shows and checks what validation will (and `span_of` gives it to a check that
    is not a schema's: a technique's values)."""

    def __init__(self, lo: float, hi: float, unit: str, why: str, signed: bool = False):
        self.lo, self.hi, self.unit, self.why, self.signed = lo, hi, unit, why, signed

    def __get_pydantic_json_schema__(self, core_schema, handler) -> JsonSchemaValue:
        schema = handler(core_schema)
        unit = f" [{self.unit}]" if self.unit else ""
        schema["description"] = f"{self.why}{unit}"
        if self.unit:
            schema["x-unit"] = self.unit
        if self.signed:  # either sign, magnitude in [lo, hi]
            schema["anyOf"] = [{"minimum": -self.hi, "maximum": -self.lo},
                               {"minimum": self.lo, "maximum": self.hi}]
        else:
            schema["minimum"], schema["maximum"] = self.lo, self.hi
        return schema


def span_of(kind) -> Span:
    """The Span of one of the types below (its bounds, unit and why)."""
    return next(m for m in kind.__metadata__ if isinstance(m, Span))


def real(lo: float, hi: float, unit: str, why: str):
    """A finite float in [lo, hi]; ints and numeric strings are taken, booleans are not."""
    return Annotated[float, _NUMBER, AfterValidator(_checker(lo, hi, unit, why, False, False)),
                     Span(lo, hi, unit, why)]


def signed(lo: float, hi: float, unit: str, why: str):
    """A non-zero float whose magnitude is in [lo, hi] (a current or a C-rate: the sign is
    its direction)."""
    return Annotated[float, _NUMBER, AfterValidator(_checker(lo, hi, unit, why, True, True)),
                     Span(lo, hi, unit, why, signed=True)]


def whole(lo: int, hi: int, why: str):
    """An int in [lo, hi]."""
    return Annotated[int, _NUMBER, AfterValidator(_checker(lo, hi, "", why, False, False)),
                     Span(lo, hi, "", why)]


# --- time ---------------------------------------------------------------------------------
RECORD_S = real(1e-3, 86_400, "s", "a record interval from 1 ms to a day")
MEASURE_S = real(1e-3, 3_600, "s", "the potentiostat measures from every ms to every hour")
POLL_S = real(0.01, 3_600, "s", "a channel is read from every 10 ms to every hour")
CHECKPOINT_S = real(1, 86_400, "s", "a resume point from every second to every day")
DEP_RECORD_S = real(0.05, 3_600, "s", "instruments on serial links answer in 50 ms at best")
#: a technique's run on the instrument (`lipon_hw.techniques`): one 1 ms measurement (a
#: screening pulse) to the instrument's cap (protocol_checks.FOREVER_S)
TECHNIQUE_S = real(1e-3, 1.0e7, "s", "a technique runs from one 1 ms measurement to the "
                   "instrument's cap, 116 days")
STEP_TIME_S = real(0.01, 1.0e7, "s", "a step's time limit is at most the instrument's cap, "
                                     "116 days")
STEP_TIME_MIN = real(0.01 / 60, 1.0e7 / 60, "min", "a step's time limit is at most the "
                                                   "instrument's cap, 116 days")
STEP_TIME_H = real(0.01 / 3600, 1.0e7 / 3600, "h", "a step's time limit is at most the "
                                                   "instrument's cap, 116 days")
WAIT_MIN = real(1 / 60, 43_200, "min", "one second to a 30-day campaign")
PROCESS_MIN = real(0.1, 1_440, "min", "a process step lasts at most a day")
TIMEOUT_MIN = real(0.1, 2_880, "min", "a pump-down longer than 2 days is a leak")
MAX_H = real(0.01, 168, "h", "a deposition lasts at most a week")
SHORT_S = real(0, 3_600, "s", "settling, soaking and ramping take minutes, at most an hour")
IGNITE_S = real(0.1, 600, "s", "a plasma strikes within seconds")
# --- vacuum, gas, plasma ------------------------------------------------------------------
PRESSURE_TORR = real(1e-11, 760, "Torr", "cold-cathode floor to atmosphere")
PRESSURE_MTORR = real(0.1, 1_000, "mTorr", "sputter process pressures")
FLOW_SCCM = real(0, 10_000, "sccm", "the largest mass-flow controllers")
PERCENT = real(0.1, 100, "%", "a fraction of the setpoint")
POWER_W = real(0, 10_000, "W", "the largest RF generators")
RAMP_W_S = real(0.01, 1_000, "W/s", "a ramp must end within hours")
# --- evaporation --------------------------------------------------------------------------
THICKNESS_NM = real(0.1, 100_000, "nm", "one atomic layer to 100 µm")
RATE_A_S = real(0.01, 1_000, "Å/s", "the monitor's rate resolution to the fastest evaporation")
SOURCE_A = real(0.01, 1_000, "A", "evaporation boat currents")
GAIN = real(0, 1_000, "", "a controller gain")
BOAT = whole(1, 64, "a source selector position")
# --- cells --------------------------------------------------------------------------------
VOLTS = real(-10, 10, "V", "no thin-film cell is tested past ±10 V")
CELL_A = signed(1e-12, 1, "A", "1 pA, the finest current range's resolution, to 1 A")
CELL_A_CUTOFF = real(1e-12, 1, "A", "1 pA, the finest current range's resolution, to 1 A")
C_RATE = signed(1e-3, 100, "C", "C/1000 to 100 C")
C_RATE_CUTOFF = real(1e-4, 100, "C", "C/10000 to 100 C")
CAPACITY_UAH = real(1e-3, 1e7, "µAh", "1 nAh to 10 Ah")
CAPACITY_MAH = real(1e-6, 1e4, "mAh", "1 nAh to 10 Ah")
DVDT_MV_H = real(1e-3, 1e6, "mV/h", "a voltage drift")
RECORD_MV = real(0.01, 1_000, "mV", "a voltage change above the converter's noise")
RECORD_UA = real(1e-6, 1e6, "µA", "a current change from 1 pA to 1 A")
FREQ_HZ = real(1e-5, 1e7, "Hz", "impedance from 10 µHz to 10 MHz")
PER_DECADE = whole(1, 100, "impedance points per decade")
EIS_POINTS = whole(1, 1_000, "impedance points in all")
AMPLITUDE_MV = real(0.1, 500, "mV", "an impedance excitation")
SWEEP_RATE_MV_S = real(1e-3, 10_000, "mV/s", "a scan rate")
SWEEP_STEP_MV = real(0.1, 100, "mV", "the potentiostat's DAC resolves ~0.1 mV")
SCANS = whole(1, 1_000, "cyclic scans")
LOOP_TIMES = whole(1, 100_000, "thin-film cells last 10⁴–10⁵ cycles")
CYCLES = whole(1, 100_000, "thin-film cells last 10⁴–10⁵ cycles")
RETENTION_PCT = real(1, 99.9, "%", "an end of life below this retention")
AREA_CM2 = real(1e-4, 1_000, "cm²", "a 0.1 mm pad to a production sheet")
TEMPERATURE_C = real(-80, 150, "°C", "climate chambers, well below LiPON's 207 °C Tg")
SOC = (-0.05, 1.05)  # a cell model's state of charge (checked in protocol.check_cell_params)

# --- names --------------------------------------------------------------------------------
SAMPLE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
SAMPLE_ID_RULE = "1 to 64 letters, digits and . _ + -, starting with a letter or digit"


def _sample_id(value: str) -> str:
    if not SAMPLE_ID_PATTERN.fullmatch(value):
        raise PydanticCustomError("sample_id", "{value} is not a sample id: " + SAMPLE_ID_RULE,
                                  {"value": repr(value[:70])})
    return value


#: a sample's id: it names files, exports and store rows, so it is short and plain
SAMPLE_ID = Annotated[str, Strict(), AfterValidator(_sample_id)]
MAX_STEPS = 10_000  # steps in one recipe or program
MAX_INTERLOCKS = 100
