"""The cell-test protocol's schema: the YAML a user writes, as pydantic models.

Every number is typed with its physical range from `ranges`; the compiler that turns a
validated document into channel programs, and the checks of what values make together,
are `protocol` and `protocol_checks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, ValidationError, model_validator

from lipon_hw import ranges as r
from lipon_hw import techniques as tq
from lipon_hw.engine import interlocks as il

CELL_KINDS = ("blocking", "plating", "lnmo", "lco", "lco_anodeless")
#: areal capacity per µm of cathode, µAh/cm² (PHYSICS.md §6: LCO 69; LNMO 30 per 650 nm)
CATHODE_UAH_CM2_PER_UM = {"LCO": 69.0, "LiCoO2": 69.0, "LNMO": 30.0 / 0.65}


class _Model(BaseModel):
    model_config = r.MODEL_CONFIG


class Record(_Model):
    every_s: r.RECORD_S | None = None
    every_mV: r.RECORD_MV | None = None
    every_uA: r.RECORD_UA | None = None
    interval_s: r.MEASURE_S = 1.0  # how often the instrument measures


class Safety(_Model):
    min_V: r.VOLTS | None = None
    max_V: r.VOLTS | None = None
    max_current_A: r.CELL_A_CUTOFF | None = None

    def window(self) -> tq.Window:
        """The limits as the technique's window, judged by host and instrument alike."""
        return tq.Window(self.min_V, self.max_V, self.max_current_A)


class Until(_Model):
    """Any-of end conditions; each is checked on every measurement."""

    voltage_V: r.VOLTS | None = None  # reached (rising on charge, falling on discharge)
    current_A: r.CELL_A_CUTOFF | None = None  # |I| fell below (cv)
    rate_C: r.C_RATE_CUTOFF | None = None     # |I| fell below this C-rate (cv)
    time_s: r.STEP_TIME_S | None = None
    time_min: r.STEP_TIME_MIN | None = None
    time_h: r.STEP_TIME_H | None = None
    capacity_uAh: r.CAPACITY_UAH | None = None  # passed in this step
    capacity_mAh: r.CAPACITY_MAH | None = None
    dVdt_mV_h: r.DVDT_MV_H | None = None  # |dV/dt| fell below (rest)

    @property
    def duration_s(self) -> float | None:
        times = [v * k for v, k in ((self.time_s, 1), (self.time_min, 60), (self.time_h, 3600))
                 if v is not None]
        return min(times) if times else None

    @property
    def capacity_Ah(self) -> float | None:
        caps = [v * k for v, k in ((self.capacity_uAh, 1e-6), (self.capacity_mAh, 1e-3))
                if v is not None]
        return min(caps) if caps else None


CONDITIONS = tuple(Until.model_fields) + ("time", "capacity")


@dataclass(frozen=True)
class Setting:
    """What a step needs, besides its own fields, to become the technique a channel runs:
    the recording in force, the run time (FOREVER_S when no time ends it) and the channel's
    capacity for C-rates (None when unknown: validation refused C-rates then)."""

    record: tq.Recording
    interval_s: float
    duration_s: float
    capacity_Ah: float | None

    def amps(self, current_A: float | None, rate_C: float | None) -> float:
        return current_A if current_A is not None else rate_C * self.capacity_Ah

    def cutoff_A(self, until: Until) -> float | None:
        """|I| that ends a potentiostatic hold: current_A, or rate_C of the capacity."""
        return until.current_A or (until.rate_C * self.capacity_Ah if until.rate_C else None)


def _exactly_one(model, first: str, second: str):
    """A step that takes its setpoint (or its density) one way or the other, not both."""
    if (getattr(model, first) is None) == (getattr(model, second) is None):
        raise ValueError(f"give exactly one of {first} and {second}")
    return model


class _Step(_Model):
    TECHNIQUE: ClassVar[type | None] = None
    TYPE: ClassVar[str] = ""  # the Battery Data Format's step type
    until: Until = Until()
    goto: dict[str, str] = Field(default={}, max_length=len(Until.model_fields))
    record: Record | None = None
    safety: Safety | None = None

    def allowed_ends(self) -> tuple[str, ...]:
        return ("time", "capacity")

    def missing_end(self) -> str | None:
        """What the step lacks to be sure to end (None: it ends by itself or on a time)."""
        return None

    def technique(self, s: Setting) -> tq.Technique:
        raise NotImplementedError


class Rest(_Step):
    TECHNIQUE = tq.OCV
    TYPE = "REST"

    def allowed_ends(self):
        return ("time", "dVdt_mV_h")

    def technique(self, s: Setting) -> tq.Technique:
        return tq.OCV(s.duration_s, s.interval_s, s.record)


class CC(_Step):
    TECHNIQUE = tq.ConstantCurrent
    current_A: r.CELL_A | None = None  # never 0: a current of 0 is a `rest`
    rate_C: r.C_RATE | None = None

    _one_setpoint = model_validator(mode="after")(
        lambda self: _exactly_one(self, "current_A", "rate_C"))

    @property
    def charging(self) -> bool:
        return (self.current_A if self.current_A is not None else self.rate_C) > 0

    @property
    def step_type(self) -> str:
        return "CC_CHG" if self.charging else "CC_DCHG"

    def allowed_ends(self):
        return ("time", "capacity", "voltage_V")

    def missing_end(self) -> str | None:
        u = self.until
        if u.voltage_V is None and u.duration_s is None and u.capacity_Ah is None:
            return "a constant current needs an end: voltage_V, a time or a capacity"
        return None

    def technique(self, s: Setting) -> tq.Technique:
        current = s.amps(self.current_A, self.rate_C)
        v_end = self.until.voltage_V
        return tq.ConstantCurrent(current, s.duration_s,
                                  v_max_V=v_end if current > 0 else None,
                                  v_min_V=v_end if current < 0 else None,
                                  interval_s=s.interval_s, record=s.record)


class CV(_Step):
    TECHNIQUE = tq.ConstantVoltage
    voltage_V: r.VOLTS

    def allowed_ends(self):
        return ("time", "capacity", "current_A", "rate_C")

    def technique(self, s: Setting) -> tq.Technique:
        return tq.ConstantVoltage(self.voltage_V, s.duration_s, s.cutoff_A(self.until),
                                  s.interval_s, s.record)


class CCCV(CC):
    TECHNIQUE = tq.CCCV
    voltage_V: r.VOLTS

    @property
    def step_type(self) -> str:
        return "CCCV_CHG" if self.charging else "CCCV_DCHG"

    def allowed_ends(self):
        return ("time", "capacity", "current_A", "rate_C")

    def missing_end(self) -> str | None:
        return None  # the hold's current or its time ends it

    def technique(self, s: Setting) -> tq.Technique:
        return tq.CCCV(s.amps(self.current_A, self.rate_C), self.voltage_V,
                       s.cutoff_A(self.until) or 0.0, s.duration_s, s.interval_s, s.record)


class EISStep(_Step):
    TECHNIQUE = tq.EIS
    TYPE = "EIS"
    from_Hz: r.FREQ_HZ
    to_Hz: r.FREQ_HZ
    per_decade: r.PER_DECADE | None = None
    points: r.EIS_POINTS | None = None
    amplitude_mV: r.AMPLITUDE_MV = 10
    dc_V: r.VOLTS | None = None

    _one_density = model_validator(mode="after")(
        lambda self: _exactly_one(self, "per_decade", "points"))

    def allowed_ends(self):
        return ()

    def technique(self, s: Setting) -> tq.Technique:
        amplitude = self.amplitude_mV * 1e-3
        if self.per_decade is not None:
            return tq.EIS.per_decade(self.from_Hz, self.to_Hz, self.per_decade,
                                     amplitude_V=amplitude, dc_V=self.dc_V)
        return tq.EIS(self.from_Hz, self.to_Hz, self.points, amplitude, self.dc_V)


class DCPolarizationStep(_Step):
    TECHNIQUE = tq.DCPolarization
    TYPE = "CV"
    voltage_V: r.VOLTS

    def allowed_ends(self):
        return ("time",)

    def technique(self, s: Setting) -> tq.Technique:
        return tq.DCPolarization(self.voltage_V, s.duration_s, s.interval_s, s.record)


class Sweep(_Step):
    TECHNIQUE = tq.LinearSweep
    TYPE = "LSV"
    from_V: r.VOLTS
    to_V: r.VOLTS
    rate_mV_s: r.SWEEP_RATE_MV_S
    step_mV: r.SWEEP_STEP_MV = 1.0

    def path_V(self) -> float:
        return abs(self.to_V - self.from_V)

    def allowed_ends(self):
        return ()

    def technique(self, s: Setting) -> tq.Technique:
        return tq.LinearSweep(self.from_V, self.to_V, self.step_mV * 1e-3,
                              self.rate_mV_s * 1e-3)


class CyclicSweepStep(_Step):
    TECHNIQUE = tq.CyclicSweep
    TYPE = "CV_SWEEP"
    from_V: r.VOLTS
    vertex1_V: r.VOLTS
    vertex2_V: r.VOLTS
    rate_mV_s: r.SWEEP_RATE_MV_S
    step_mV: r.SWEEP_STEP_MV = 1.0
    scans: r.SCANS = 1

    def path_V(self) -> float:
        one = (abs(self.vertex1_V - self.from_V) + abs(self.vertex2_V - self.vertex1_V)
               + abs(self.from_V - self.vertex2_V))
        return one * self.scans

    def allowed_ends(self):
        return ()

    def technique(self, s: Setting) -> tq.Technique:
        return tq.CyclicSweep(self.from_V, self.vertex1_V, self.vertex2_V, self.step_mV * 1e-3,
                              self.rate_mV_s * 1e-3, self.scans)


class Loop(_Model):
    to: str
    times: r.LOOP_TIMES


STEP_KINDS: dict[str, type[_Step]] = {
    "rest": Rest, "cc": CC, "cv": CV, "cccv": CCCV, "eis": EISStep,
    "dc_polarization": DCPolarizationStep, "sweep": Sweep, "cyclic_sweep": CyclicSweepStep,
}


class CellSpec(_Model):
    """What sits on the channels: kind and area for the record (and for the simulated
    lab, which mounts such cells), capacity for C-rates."""

    kind: Literal["blocking", "plating", "lnmo", "lco", "lco_anodeless"] | None = None
    area_cm2: r.AREA_CM2 | None = None
    capacity_uAh: r.CAPACITY_UAH | None = None
    temperature_C: r.TEMPERATURE_C | None = None
    lipon_thickness_nm: r.THICKNESS_NM | None = None  # for σ = t/(R·A)
    faults: list = Field(default=[], max_length=100)  # simulated lab only: faults of these cells
    params: dict[str, object] = Field(default={}, max_length=100)  # simulated lab only: model
    #                                     parameters (e.g. initial_soc), see check_cell_params


class FromScreening(_Model):
    """The channels' cells picked from a sheet's screening, one per channel of the entry:
    a seeded random sample of the cells in `hard_bins`, spread as evenly over those bins
    as their cells allow (`celltest.screened`), from run `run` (default: the sheet's
    newest screening); a cell a channel of another run names (cycled already, or held by
    a run that may resume) is not picked again."""

    sheet: r.SAMPLE_ID
    hard_bins: list[r.whole(0, 32_767, "a hard bin number")] = Field(min_length=1,
                                                                       max_length=100)
    seed: r.whole(0, 2**32 - 1, "a random generator's seed") = 0
    run: r.whole(1, 2**62, "a screening run's id") | None = None


class ChannelSpec(_Model):
    sample: r.SAMPLE_ID | None = None
    from_screening: FromScreening | None = None
    protocol: str | None = None
    cell: CellSpec | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if self.sample is not None and self.from_screening is not None:
            raise ValueError("give a sample or from_screening, not both")
        return self


class Termination(_Model):
    cycles: r.CYCLES | None = None
    retention_below_pct: r.RETENTION_PCT | None = None
    reference_cycle: r.CYCLES = 1  # retention is relative to this cycle


class ProtocolSpec(_Model):
    """A named step list with its own recording, safety and termination."""

    steps: list = Field(min_length=1, max_length=r.MAX_STEPS)
    record: Record = Record()
    safety: Safety = Safety()
    termination: Termination = Termination()
    #: rules on each channel's voltage_V and current_A, or on the potentiostat as a whole
    #: (`celltest.rules`, `engine.interlocks`)
    interlocks: list[il.RuleSpec] = Field(default=[], max_length=r.MAX_INTERLOCKS)


def _channels_shape(value) -> str:
    return {str: "range", dict: "map", list: "list"}.get(type(value), "number")


#: `1-16`, `3`, `[1, 2]` or a mapping of ranges to channel specs; the shape picks the type,
#: so an error names the field, not every shape it is not (tags are dropped from the path)
_CHANNELS = Annotated[
    Annotated[Annotated[str, Field(max_length=1000)], Tag("range")]
    | Annotated[r.whole(1, 10_000, "a channel number"), Tag("number")]
    | Annotated[Annotated[list[r.whole(1, 10_000, "a channel number")],
                          Field(max_length=10_000)], Tag("list")]
    | Annotated[Annotated[dict[str, ChannelSpec], Field(max_length=1000)], Tag("map")],
    Discriminator(_channels_shape)]
_CHANNEL_TAGS = ("range", "number", "list", "map")


class _Untagged:
    """A ValidationError's errors with the channel shapes' tags taken out of their paths."""

    def __init__(self, exc: ValidationError):
        self._errors = exc.errors()

    def errors(self) -> list[dict]:
        return [{**e, "loc": tuple(p for i, p in enumerate(e["loc"])
                                   if not (i == 1 and e["loc"][0] == "channels"
                                           and p in _CHANNEL_TAGS))}
                for e in self._errors]


class _Head(ProtocolSpec):
    name: str = Field(max_length=200)
    kind: Literal["cycling"]
    potentiostat: str | None = None
    channels: _CHANNELS
    cell: CellSpec = CellSpec()
    protocols: dict[str, ProtocolSpec] = Field(default={}, max_length=100)
    poll_every_s: r.POLL_S | None = None
    checkpoint_every_s: r.CHECKPOINT_S = 60
