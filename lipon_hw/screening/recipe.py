"""The screening recipe (`kind: screening`): the YAML a production engineer writes, as
pydantic models with every number's physical range, and its check against the station.

    name: Sheet screening, anodeless LCO/LiPON
    kind: screening
    sheet: {id: SHEET-0001, roll: ROLL-0001, rows: 20, cols: 30, pitch_mm: [5, 5]}
    prober: {sites: [4, 8], settle_s: 0.2, retouch: 1}
    tests:
      ocv: {settle_s: 1, measure_s: 0.5}
      eis: {frequencies_Hz: [10000, 1000, 100, 10], amplitude_mV: 10, mode: multisine}
      pulse: {current_uA: -20, duration_s: 0.2}
    bins:
      fail:   [{name: hard_short, soft_bin: 10, hard_bin: 5, when: "ocv_V < 1"}, ...]
      grades: [{name: A, soft_bin: 1, hard_bin: 1}, {name: B, soft_bin: 2, hard_bin: 2,
               when: "z_1000Hz_ohm > 250"}]
      tester_fault: {name: no_contact, soft_bin: 98, hard_bin: 8}

The metrics a bin rule may name follow from the tests: `ocv_V`; per impedance frequency f
`z_<f>Hz_ohm` (|Z|) and `phase_<f>Hz_deg`; `r_hf_ohm` (Re Z at the highest frequency: the
electrolyte's bulk resistance and the contacts) and `r_arc_ohm` (Re Z at the lowest less
that: the interface arcs) with two frequencies or more; `r_dc_ohm` from the pulse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError

from lipon_hw import ranges as r
from lipon_hw.errors import InputError
from lipon_hw.screening.bins import BinRules, compile_rules
from lipon_hw.screening.layout import CardSpec, SheetSpec
from lipon_hw.station import Station
from lipon_hw.yamlfile import Doc, load, loads, pydantic_error

SHEET_CELLS = r.whole(1, 1_000, "cells along a sheet's side (a metre of web at 1 mm pitch)")
PITCH_MM = r.real(0.1, 1_000, "mm", "a cell pitch from 0.1 mm to a metre")
DWELL_H = r.real(0, 8_760, "h", "from formation to screening within a year")
SITES = r.whole(1, 1_024, "probe sites along a side of the card")
SETTLE_S = r.real(0, 600, "s", "a settling time of at most ten minutes")
MEASURE_S = r.real(0.01, 600, "s", "an open-circuit reading from 10 ms to ten minutes")
PULSE_S = r.real(0.001, 600, "s", "a current pulse from 1 ms to ten minutes")
PULSE_UA = r.signed(1e-6, 1e6, "µA", "1 pA to 1 A")
RETOUCH = r.whole(0, 5, "re-touches of a site that made no contact")
CONTACT_OHM = r.real(1e2, 1e13, "Ω", "an open contact reads from 100 Ω up")
BIN = r.whole(0, 32_767, "a bin number (STDF keeps bins in 0–32767)")
MAX_TONES = 30


class _Model(BaseModel):
    model_config = r.MODEL_CONFIG


class SheetModel(_Model):
    id: r.SAMPLE_ID
    roll: r.SAMPLE_ID | None = None
    rows: SHEET_CELLS
    cols: SHEET_CELLS
    pitch_mm: Annotated[tuple[PITCH_MM, PITCH_MM], Field(
        description="[x, y]: across the web (columns) and down it (rows), mm, each 0.1 … 1000")]
    cell_kind: Literal["lco_anodeless", "lco", "lnmo"] = "lco_anodeless"
    area_cm2: r.AREA_CM2 = 0.16
    dwell_h: DWELL_H = 12.0
    sim: Annotated[dict | None, Field(description=(
        "simulator-only settings (defect rates, coater geometry), checked when the "
        "simulated lab builds the sheet"))] = None


class ProberModel(_Model):
    tool: str = "prober"
    sites: Annotated[tuple[SITES, SITES], Field(
        description="[rows, cols]: the block of the station's probe card in use, each 1 … 1024")]
    settle_s: SETTLE_S = 0.2
    retouch: RETOUCH = 1
    contact_max_ohm: CONTACT_OHM = 1.0e6


class OcvTest(_Model):
    settle_s: SETTLE_S = 1.0
    measure_s: MEASURE_S = 0.5


class EisTest(_Model):
    frequencies_Hz: Annotated[list[r.FREQ_HZ], Field(min_length=1, max_length=MAX_TONES)]
    amplitude_mV: r.AMPLITUDE_MV = 10.0
    mode: Literal["multisine", "sweep"] = "multisine"


class PulseTest(_Model):
    current_uA: PULSE_UA
    duration_s: PULSE_S = 0.2
    min_V: r.VOLTS = 0.0
    max_V: r.VOLTS = 4.4


class TestsModel(_Model):
    ocv: OcvTest | None = None
    eis: EisTest | None = None
    pulse: PulseTest | None = None


class BinModel(_Model):
    name: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_ .+-]+$")]
    soft_bin: BIN
    hard_bin: BIN
    hard_name: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    when: str | None = None


class BinsModel(_Model):
    fail: Annotated[list[BinModel], Field(max_length=200)] = []
    grades: Annotated[list[BinModel], Field(min_length=1, max_length=20)]
    tester_fault: BinModel = BinModel(name="tester_fault", soft_bin=98, hard_bin=98)


class ScreeningModel(_Model):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    kind: Literal["screening"]
    sheet: SheetModel
    prober: ProberModel
    tests: TestsModel
    bins: BinsModel


@dataclass(frozen=True)
class ScreeningPlan:
    name: str
    text: str
    path: str
    sheet: SheetSpec
    card: CardSpec
    stage: str  # the prober's stage instrument
    potentiostat: str  # the potentiostat whose channels the sites are
    settle_s: float
    retouch: int
    contact_max_ohm: float
    ocv: OcvTest | None
    eis: EisTest | None
    pulse: PulseTest | None
    bins: BinRules
    metrics: tuple[str, ...]
    tool: str = "prober"  # the station's prober tool (stage and potentiostat)


def freq_label(f_Hz: float) -> str:
    """A frequency as a metric name writes it: 1000 → '1000', 0.5 → '0p5'."""
    text = f"{f_Hz:.6g}"
    return text.replace(".", "p").replace("+", "").replace("-", "m")


def metric_names(tests: TestsModel) -> list[str]:
    names = []
    if tests.ocv is not None:
        names.append("ocv_V")
    if tests.eis is not None:
        for f in tests.eis.frequencies_Hz:
            names += [f"z_{freq_label(f)}Hz_ohm", f"phase_{freq_label(f)}Hz_deg"]
        names.append("r_hf_ohm")
        if len(tests.eis.frequencies_Hz) > 1:
            names.append("r_arc_ohm")
    if tests.pulse is not None:
        names.append("r_dc_ohm")
    return names


def load_screening(path: str, station: Station, text: str | None = None) -> ScreeningPlan:
    """The validated recipe; InputError naming file, line and field."""
    doc = load(path) if text is None else loads(text, path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a screening recipe must be a mapping with name, kind, sheet, "
                            "prober, tests and bins")
    try:
        m = ScreeningModel.model_validate(doc.data)
    except ValidationError as exc:
        raise pydantic_error(doc, exc) from None
    if m.tests.eis is None and m.tests.pulse is None:  # a floating probe reads some volts
        raise doc.error(("tests",), "needs eis or pulse: an open-circuit voltage alone "
                                    "cannot tell a probe that missed its pad from a cell")
    if m.tests.eis is not None:
        freqs = m.tests.eis.frequencies_Hz
        labels = [freq_label(f) for f in freqs]
        if len(set(labels)) != len(labels):
            raise doc.error(("tests", "eis", "frequencies_Hz"), "names a frequency twice")
    metrics = metric_names(m.tests)
    try:
        rules = compile_rules([b.model_dump() for b in m.bins.fail],
                              [b.model_dump() for b in m.bins.grades],
                              m.bins.tester_fault.model_dump(), metrics)
    except ValueError as exc:
        message, where = exc.args
        raise doc.error(("bins", *where), message) from None
    stage, pstat, card_rows, card_cols = _prober(doc, m, station)
    rows, cols = m.prober.sites
    if rows > card_rows or cols > card_cols:
        raise doc.error(("prober", "sites"), f"{rows}×{cols} sites do not fit the probe card "
                                             f"of {stage} ({card_rows}×{card_cols} sites)")
    s = m.sheet
    sheet = SheetSpec(s.id, s.roll, s.rows, s.cols, s.pitch_mm[0], s.pitch_mm[1], s.cell_kind,
                      s.area_cm2, s.dwell_h, s.sim)
    return ScreeningPlan(m.name, doc.text, path, sheet, CardSpec(rows, cols, card_cols), stage,
                         pstat, m.prober.settle_s, m.prober.retouch, m.prober.contact_max_ohm,
                         m.tests.ocv, m.tests.eis, m.tests.pulse, rules, tuple(metrics),
                         m.prober.tool)


def _prober(doc: Doc, m: ScreeningModel, station: Station) -> tuple[str, str, int, int]:
    """The prober tool's stage and potentiostat, and its card's rows and columns."""
    tool = station.spec.tools.get(m.prober.tool)
    if tool is None:
        raise doc.error(("prober", "tool"), f"station {station.spec.name!r} has no tool "
                                            f"{m.prober.tool!r} (it has "
                                            f"{', '.join(station.spec.tools) or 'none'})")
    stage, pstat = tool.get("stage"), tool.get("potentiostat")
    if stage is None or pstat is None:
        raise doc.error(("prober", "tool"), f"tool {m.prober.tool!r} of station "
                                            f"{station.spec.name!r} needs a stage and a "
                                            "potentiostat")
    card = station.spec.instruments[stage].settings.get("card") or {}
    try:
        card_rows, card_cols = int(card["rows"]), int(card["cols"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"instrument {stage} of station {station.spec.name!r} declares no "
                         "probe card (settings: card: {rows, cols})") from None
    channels = len(getattr(station.instrument(pstat), "addresses", None) or [1])
    if card_rows * card_cols > channels:
        raise InputError(f"the probe card of {stage} has {card_rows * card_cols} sites but "
                         f"{pstat} only {channels} channels")
    return stage, pstat, card_rows, card_cols
