"""`SimSheet`: a roll-to-roll sheet of R×C cells, each built on demand from its local films,
defects and the formation the whole sheet went through."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from lipon_hw.sim.cells.factories import (
    CATHODES,
    LIPON_MATERIALS,
    cell_from_films,
    default_layers,
)
from lipon_hw.sim.cells.model import CellModel
from lipon_hw.sim.cells.params import LiponLayer
from lipon_hw.sim.sheet.defects import DefectRates, cell_class, cell_faults
from lipon_hw.sim.sheet.formation import Formation, form_and_dwell, move_clock
from lipon_hw.sim.sheet.geometry import CATHODE_COATER, LIPON_COATER, Coater

CELL_ID = "{sheet}-R{row:02d}C{col:02d}"
SHEET_KINDS = ("lco_anodeless", "lco")  # 004's production cells (formation: LCO window)


@dataclass(frozen=True)
class SheetParams:
    """What the simulator assumes about a sheet (the `sim` mapping of a sheet overrides
    any field, nested: {lipon: {throw_cm: 9}, defects: {soft_short: 0.05}, ...})."""

    cathode: Coater = field(default_factory=lambda: CATHODE_COATER)
    lipon: Coater = field(default_factory=lambda: LIPON_COATER)
    defects: DefectRates = field(default_factory=DefectRates)
    formation: Formation = field(default_factory=Formation)
    fill_factor: float = 0.64  # assumption: cell area / pitch area when none is given
    #                            (4×4 mm pads on a 5 mm pitch)

    def validate(self) -> None:
        self.cathode.validate("cathode")
        self.lipon.validate("lipon")
        self.defects.validate()
        self.formation.validate()
        if not 0 < self.fill_factor <= 1:
            raise ValueError(f"fill_factor must be in (0, 1], not {self.fill_factor!r}")

    @classmethod
    def from_mapping(cls, data: Mapping | None) -> SheetParams:
        """The defaults with `data`'s fields over them; ValueError naming an unknown or
        bad key (`sim.defects.soft_sort`)."""
        params = _merged(cls(), dict(data or {}), "sim")
        params.validate()
        return params


def _merged(obj, data: dict, where: str):
    known = {f.name: f for f in fields(obj)}
    changes = {}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"{where}.{key} is not a sheet setting (known: "
                             f"{', '.join(known)})")
        old = getattr(obj, key)
        if hasattr(old, "__dataclass_fields__"):
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}.{key} must be a mapping of its settings")
            changes[key] = _merged(old, dict(value), f"{where}.{key}")
        elif isinstance(old, tuple):
            if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
                raise ValueError(f"{where}.{key} must be a pair [low, high]")
            changes[key] = tuple(_number(v, f"{where}.{key}") for v in value)
        else:
            changes[key] = _number(value, f"{where}.{key}")
    return replace(obj, **changes)


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, not {value!r}")
    return float(value)


class SimSheet:
    """A formed, dwelled sheet of rows × cols cells on a pitch (x across the web along the
    columns, y down the web along the rows; positions 1-based, cell (1, 1) at the origin).

    layers: the film stack the roll got (a LiPON layer needed; a stack without a cathode,
    as the simulated lab's sputter tool makes, gets the kind's seed cathode). Its
    thicknesses are the sheet centre's; each film follows its coater's map. Cells are
    built on demand from (seed, sheet id, row, col), the same in any order, and kept:
    `cell(row, col)` hands out the same object every time, at `t_ready_s` of the lab's
    clock or later."""

    def __init__(self, sheet_id: str, rows: int, cols: int, pitch_mm=(5.0, 5.0),
                 layers: Sequence[Mapping] | None = None, kind: str = "lco_anodeless",
                 area_cm2: float | None = None, dwell_h: float = 0.0, seed: int | None = 0,
                 params: SheetParams | None = None, t_ready_s: float = 0.0):
        if int(rows) < 1 or int(cols) < 1:
            raise ValueError(f"sheet {sheet_id}: rows and cols must be ≥ 1")
        px, py = (float(p) for p in pitch_mm)
        if px <= 0 or py <= 0:
            raise ValueError(f"sheet {sheet_id}: pitch must be positive, not {pitch_mm!r}")
        if dwell_h < 0:
            raise ValueError(f"sheet {sheet_id}: dwell_h must not be negative")
        if kind not in SHEET_KINDS:
            raise ValueError(f"sheet {sheet_id}: cell kind {kind!r} is not one of a sheet's "
                             f"({', '.join(SHEET_KINDS)})")
        self.id, self.rows, self.cols = str(sheet_id), int(rows), int(cols)
        self.pitch_mm = (px, py)
        self.kind, self.dwell_h, self.t_ready_s = kind, float(dwell_h), float(t_ready_s)
        self.params = params or SheetParams()
        self.params.validate()
        pad = self.params.fill_factor * px * py / 100.0
        self.area_cm2 = pad if area_cm2 is None else float(area_cm2)
        if not 0 < self.area_cm2 <= px * py / 100.0:
            raise ValueError(f"sheet {sheet_id}: a cell of {self.area_cm2} cm² does not fit "
                             f"its {px}×{py} mm pitch")
        self.layers = _with_cathode(layers or default_layers(kind), kind)
        self._seed = [int(seed or 0), zlib.crc32(self.id.encode())]
        shape = (self.rows, self.cols)
        self.cathode_factor = self.params.cathode.factor_map(*shape, self.pitch_mm)
        self.lipon_factor = self.params.lipon.factor_map(*shape, self.pitch_mm)
        self._cells: dict[tuple[int, int], CellModel] = {}
        self._current_A: float | None = None

    # --- positions ------------------------------------------------------------------------
    def _check(self, row: int, col: int) -> None:
        if not (1 <= row <= self.rows and 1 <= col <= self.cols):
            raise IndexError(f"sheet {self.id} has rows 1–{self.rows} and cols 1–{self.cols}, "
                             f"not ({row}, {col})")

    def position(self, row: int, col: int) -> int:
        """The cell's index in the store: (row − 1)·cols + (col − 1)."""
        self._check(row, col)
        return (row - 1) * self.cols + (col - 1)

    def cell_id(self, row: int, col: int) -> str:
        return CELL_ID.format(sheet=self.id, row=row, col=col)

    def xy_mm(self, row: int, col: int) -> tuple[float, float]:
        """The cell centre from cell (1, 1)'s."""
        return ((col - 1) * self.pitch_mm[0], (row - 1) * self.pitch_mm[1])

    # --- films and defects ----------------------------------------------------------------
    def _rng(self, row: int, col: int) -> np.random.Generator:
        return np.random.default_rng([*self._seed, row, col])

    def _draw(self, row: int, col: int) -> tuple[list[dict], list[dict], np.random.Generator]:
        """The cell's defects and local films, and its rng, positioned for the scatter."""
        self._check(row, col)
        rng = self._rng(row, col)
        defects = self.params.defects.draw(rng)
        thin = next((d["fraction"] for d in defects if d["kind"] == "thin_electrolyte"), 1.0)
        fc = float(self.cathode_factor[row - 1, col - 1])
        fl = float(self.lipon_factor[row - 1, col - 1]) * thin
        films = [{**x, "thickness_nm": float(x["thickness_nm"]) * fc}
                 if x.get("material") in CATHODES else
                 {**x, "thickness_nm": float(x["thickness_nm"]) * fl}
                 if x.get("material") in LIPON_MATERIALS else dict(x) for x in self.layers]
        return defects, films, rng

    def films(self, row: int, col: int) -> list[dict]:
        """The cell's local film stack (its thicknesses, a thin electrolyte's included)."""
        return self._draw(row, col)[1]

    def truth(self, row: int, col: int) -> dict:
        """The cell's ground truth (JSON-able): position, local cathode and LiPON thickness,
        area, the true LiPON bulk resistance at the formation temperature, defects, contact
        and class. For the record and tests only: nothing that bins reads it."""
        defects, films, _ = self._draw(row, col)
        lipon = [LiponLayer(**{k: v for k, v in x.items()
                               if k in LiponLayer.__dataclass_fields__})
                 for x in films if x.get("material") in LIPON_MATERIALS]
        temperature = self.params.formation.temperature_C
        x_mm, y_mm = self.xy_mm(row, col)
        return {
            "cell_id": self.cell_id(row, col), "row": row, "col": col,
            "x_mm": x_mm, "y_mm": y_mm,
            "cathode_nm": sum(x["thickness_nm"] for x in films if x.get("material") in CATHODES),
            "lipon_nm": sum(x.thickness_nm for x in lipon),
            "area_cm2": self.area_cm2,
            "r_bulk_ohm": sum(x.area_resistance_ohm_cm2(temperature) for x in lipon) /
            self.area_cm2,
            "defects": defects,
            "contact": "high_impedance" if any(d["kind"] == "high_impedance"
                                               for d in defects) else "ok",
            "class": cell_class(defects),
        }

    def truths(self) -> list[dict]:
        """Every cell's truth, in position order."""
        return [self.truth(r, c) for r in range(1, self.rows + 1)
                for c in range(1, self.cols + 1)]

    # --- cells ----------------------------------------------------------------------------
    def formation_current_A(self) -> float:
        """The one formation current of the sheet: c_rate of the nominal cell (the stack's
        centre films, no scatter)."""
        if self._current_A is None:
            nominal = cell_from_films(self.kind, self.layers, self.area_cm2)
            self._current_A = self.params.formation.c_rate * nominal.nominal_capacity_C / 3600
        return self._current_A

    def cell(self, row: int, col: int) -> CellModel:
        """The cell at (row, col), formed and dwelled, at `t_ready_s` of the lab's clock
        when first handed out (the same object afterwards)."""
        key = (row, col)
        cell = self._cells.get(key)
        if cell is None:
            defects, films, rng = self._draw(row, col)
            formation = self.params.formation
            cell = cell_from_films(self.kind, films, self.area_cm2, formation.temperature_C,
                                   cell_faults(defects), rng, name=self.cell_id(row, col))
            form_and_dwell(cell, formation, self.formation_current_A(), self.dwell_h)
            move_clock(cell, self.t_ready_s)
            self._cells[key] = cell
        return cell

    # --- maps -----------------------------------------------------------------------------
    def thickness_maps_nm(self) -> dict[str, np.ndarray]:
        """rows × cols maps of the cathode and LiPON thickness the coaters laid (before any
        cell's thin-electrolyte defect)."""
        return {"cathode_nm": self.cathode_factor * _total(self.layers, CATHODES),
                "lipon_nm": self.lipon_factor * _total(self.layers, LIPON_MATERIALS)}

    def summary(self) -> dict:
        """{cathode_nm, lipon_nm: {min, max, centre, edge_falloff}} of the coaters' maps:
        centre is the sheet centre's (the stack's) thickness, edge_falloff the thinnest
        cell's shortfall from it."""
        out = {}
        for name, m in self.thickness_maps_nm().items():
            centre = _total(self.layers, CATHODES if name == "cathode_nm" else LIPON_MATERIALS)
            out[name] = {"min": float(m.min()), "max": float(m.max()), "centre": centre,
                         "edge_falloff": 1.0 - float(m.min()) / centre}
        return out


def _total(layers, materials) -> float:
    return float(sum(float(x["thickness_nm"]) for x in layers if x.get("material") in materials))


def _with_cathode(layers: Sequence[Mapping], kind: str) -> list[dict]:
    """The stack, with the kind's seed cathode under it when it has none (the simulated lab
    makes LiPON, not LCO); ValueError for a stack without LiPON."""
    out = [dict(x) for x in layers]
    if not any(x.get("material") in LIPON_MATERIALS for x in out):
        raise ValueError("the sheet's film stack has no LiPON layer")
    if not any(x.get("material") in CATHODES for x in out):
        out = [x for x in default_layers(kind) if x["material"] in CATHODES] + out
    return out
