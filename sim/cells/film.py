"""`FilmCell`, the base of every simulated cell with a LiPON separator: film resistance
from thickness and σ(T), geometric capacitance, σ_e leak, the fault hooks, and the spec a
cell is rebuilt from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

from lipon_hw.sim.cells.circuit import Branch, Circuit
from lipon_hw.sim.cells.model import CellModel
from lipon_hw.sim.cells.params import REFERENCE_C, CellParams, LiponLayer
from lipon_hw.sim.physics import arrhenius

EPS0_F_CM = 8.8541878128e-14


def _lipon_R(layers: Sequence[LiponLayer], area_cm2: float, temperature_C: float) -> float:
    return sum(x.area_resistance_ohm_cm2(temperature_C) for x in layers) / area_cm2


def _electronic_R(layers: Sequence[LiponLayer], area_cm2: float) -> float:
    """σ_e is taken as temperature-independent (assumption: no source gives its Ea)."""
    return sum(x.thickness_nm * 1e-7 / x.sigma_electronic_S_cm for x in layers) / area_cm2


def resistance_at(value: float, ea_eV: float, temperature_C: float) -> float:
    """A resistance at temperature_C from its 25 °C value (activation ea_eV)."""
    return value / arrhenius(1.0, ea_eV, temperature_C, REFERENCE_C)


class FilmCell(CellModel):
    """A cell with a LiPON separator: film resistance, geometric capacitance, σ_e leak.

    The cell kinds (`blocking`, `plating`, `full`) build their circuits from the helpers
    below that start with an underscore (film branch, series, shunt, short, interface
    factor, source slope, common spec): they are this class's API to its subclasses."""

    def __init__(self, lipon: Sequence[LiponLayer], area_cm2: float, params: CellParams,
                 name: str, faults, temperature_C: float):
        if area_cm2 <= 0:
            raise ValueError(f"cell {name}: area must be positive, not {area_cm2!r} cm²")
        if not lipon or sum(x.thickness_nm for x in lipon) <= 0:
            raise ValueError(f"cell {name}: the film stack has no LiPON layer")
        self.lipon = [x if isinstance(x, LiponLayer) else LiponLayer(**x) for x in lipon]
        self.area_cm2 = float(area_cm2)
        self.params = params
        super().__init__(name, faults, temperature_C)

    @property
    def lipon_thickness_nm(self) -> float:
        return sum(x.thickness_nm for x in self.lipon)

    def film_resistance_ohm(self) -> float:
        """R_LiPON = Σ t/(σ(T)·A): what the high-frequency arc of the spectrum measures."""
        return _lipon_R(self.lipon, self.area_cm2, self.temperature_C)

    def electronic_resistance_ohm(self) -> float:
        return _electronic_R(self.lipon, self.area_cm2)

    def _film_branch(self) -> Branch:
        R = self.film_resistance_ohm()
        c_geo = EPS0_F_CM * self.params.lipon_permittivity * self.area_cm2 / \
            (self.lipon_thickness_nm * 1e-7)
        return Branch(R, R * c_geo, self.params.film_alpha)

    def _series(self, active) -> float:
        extra = self._fault_param(active, "open", "ohm", self.params.open_ohm)
        return self.params.contact_ohm + (extra or 0.0)

    def _shunt_ohm(self, active, soft_default: float) -> float:
        soft = self._fault_param(active, "soft_short", "ohm", soft_default)
        return math.inf if soft is None else soft

    def _interface_factor(self, active) -> float:
        return self._fault_param(active, "high_interface", "factor",
                                 self.params.high_interface_factor) or 1.0

    def _short(self, active) -> float | None:
        return self._fault_param(active, "hard_short", "ohm", self.params.hard_short_ohm)

    def _source_slope(self, st, c: Circuit) -> float:
        """|dE/ds| at the state: the inverse of the source's differential capacitance."""
        b = abs(c.pos.slope(c.pos.locate(st.p, False)))
        if c.neg is not None:
            b += abs(c.neg.slope(c.neg.locate(st.n, False)))
        return b

    def _spec_common(self, kind: str) -> dict:
        return {"kind": kind, "name": self.name, "area_cm2": self.area_cm2,
                "temperature_C": self.temperature_C,
                "faults": [f.to_dict() for f in self.faults],
                "params": _jsonable(asdict(self.params))}


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
