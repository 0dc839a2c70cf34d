"""Building simulated cells: from a sample's film stack (`cell_from_films`; the simulated
lab's truth format: dicts with material and thickness_nm, LiPON layers with sigma_S_cm,
activation_eV, sigma_electronic_S_cm) or from a spec a station declares
(`cell_from_spec`; `cell.spec` turns back into the same cell), with the seeds' stacks and
areas as defaults."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import fields, replace

import numpy as np

from lipon_hw.sim.cells.blocking import BlockingCell
from lipon_hw.sim.cells.faults import as_fault
from lipon_hw.sim.cells.full import FullCell
from lipon_hw.sim.cells.model import CellModel
from lipon_hw.sim.cells.params import (
    BlockingParams,
    LiponLayer,
    PlatingParams,
    lco_params,
    lnmo_params,
)
from lipon_hw.sim.cells.plating import PlatingCell

KINDS = ("blocking", "plating", "lnmo", "lco", "lco_anodeless", "full")
LIPON_MATERIALS = ("LiPON", "Li3PO4")
CATHODES = {"LNMO": "LNMO", "LiNi0.5Mn1.5O4": "LNMO", "LCO": "LCO", "LiCoO2": "LCO"}


def default_layers(kind: str) -> list[dict]:
    """The seeds' stacks: FS-LiPON 3.7 µm at 2.5e-6 S/cm for blocking and plating cells
    (000), 650 nm LNMO / 1 µm LiPON at 3e-6 S/cm / 570 nm Li (002), 10 µm LCO (004) under
    1 µm LiPON (assumption: 004 gives no LiPON thickness), 5 µm Li for LCO/Li (assumption)."""
    fs = {"material": "LiPON", "thickness_nm": 3700.0, "sigma_S_cm": 2.5e-6}
    stacks = {
        "blocking": [{"material": "Cu", "thickness_nm": 200.0}, fs,
                     {"material": "Cu", "thickness_nm": 200.0}],
        "plating": [{"material": "Cu", "thickness_nm": 200.0}, fs,
                    {"material": "Li", "thickness_nm": 1000.0}],
        "lnmo": [{"material": "LNMO", "thickness_nm": 650.0},
                 {"material": "LiPON", "thickness_nm": 1000.0, "sigma_S_cm": 3.0e-6},
                 {"material": "Li", "thickness_nm": 570.0}],
        "lco": [{"material": "LCO", "thickness_nm": 10000.0},
                {"material": "LiPON", "thickness_nm": 1000.0},
                {"material": "Li", "thickness_nm": 5000.0}],
        "lco_anodeless": [{"material": "LCO", "thickness_nm": 10000.0},
                          {"material": "LiPON", "thickness_nm": 1000.0}],
    }
    return [dict(x) for x in stacks[_kind(kind)]]


DEFAULT_AREA_CM2 = {"blocking": 0.04, "plating": 0.04, "lnmo": 0.049, "lco": 1.0,
                    "lco_anodeless": 1.0}  # 2×2 mm plate (000, assumption), 4.9 mm² (002),
#                                           1 cm² (assumption: 004 gives no cell size)


def _kind(kind: str) -> str:
    k = str(kind).lower().replace("-", "_")
    k = {"anodeless": "lco_anodeless", "li_cu": "plating", "cu_cu": "blocking"}.get(k, k)
    if k not in KINDS:
        raise ValueError(f"cell kind {kind!r} is not one of {', '.join(KINDS)}")
    return k


def _lipon_layers(layers: Iterable[dict]) -> list[LiponLayer]:
    out = []
    for layer in layers:
        if layer.get("material") in LIPON_MATERIALS:
            known = {f.name for f in fields(LiponLayer)}
            out.append(LiponLayer(**{k: v for k, v in layer.items() if k in known}))
    return out


def _thickness(layers: Iterable[dict], materials) -> float:
    return sum(float(x.get("thickness_nm", 0.0)) for x in layers
               if x.get("material") in materials)


def _with_overrides(params, overrides: dict | None):
    if not overrides:
        return params
    known = {f.name for f in fields(params)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown cell parameters {sorted(unknown)}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return replace(params, **fixed)


def cell_from_films(kind: str, layers: Sequence[dict], area_cm2: float,
                    temperature_C: float = 25.0, faults=(), rng: np.random.Generator | None = None,
                    *, name: str | None = None, params: dict | None = None) -> CellModel:
    """A cell whose parameters come from a sample's film stack.

    kind: "blocking" (Cu/LiPON/Cu), "plating" (Li/LiPON/Cu), "lnmo", "lco", "lco_anodeless"
    or "full" (cathode from the stack; Li anode if the stack has Li, else anodeless).
    LiPON layers (LiPON or Li3PO4) add in series, each with its own σ, Ea and σ_e. A full
    cell whose stack has no cathode layer (the simulated lab makes none) gets the seed's.
    rng draws the cell-to-cell scatter (utilisation, interface resistance); without it
    the cell is nominal. params overrides any dataclass field.
    """
    k = _kind(kind)
    layers = [dict(x) for x in layers]
    lipon = _lipon_layers(layers)
    faults = [as_fault(f) for f in faults]
    if k == "blocking":
        p = _with_overrides(BlockingParams(), params)
        if rng is not None:
            p = replace(p, interface_ohm_cm2=p.interface_ohm_cm2 * _spread(rng, p.spread_log))
        return BlockingCell(lipon, area_cm2, p, temperature_C, faults, name or "Cu/LiPON/Cu")
    if k == "plating":
        p = _with_overrides(PlatingParams(), params)
        if rng is not None:
            p = replace(p, li_interface_ohm_cm2=p.li_interface_ohm_cm2 *
                        _spread(rng, p.spread_log))
        return PlatingCell(lipon, area_cm2, p, _thickness(layers, ("Au",)), temperature_C,
                           faults, name or "Li/LiPON/Cu")
    cathodes = [x for x in layers if x.get("material") in CATHODES]
    material = CATHODES[cathodes[0]["material"]] if cathodes else \
        ("LNMO" if k in ("lnmo", "full") else "LCO")
    if k == "lnmo" and material != "LNMO" or k.startswith("lco") and material != "LCO":
        raise ValueError(f"a {k} cell needs an {k[:3].upper()} cathode, "
                         f"the film stack has {material}")
    li_nm = _thickness(layers, ("Li",))
    if k == "lco_anodeless":
        li_nm = 0.0
    cathode_nm = _thickness(layers, tuple(m for m, v in CATHODES.items() if v == material))
    if cathode_nm <= 0:
        cathode_nm = _thickness(default_layers("lnmo" if material == "LNMO" else "lco"),
                                (material,))
    base = lnmo_params() if material == "LNMO" else lco_params(anodeless=not li_nm)
    p = _with_overrides(base, params)
    if rng is not None:
        lo, hi = p.utilisation_range
        p = replace(p, utilisation=p.utilisation * float(rng.uniform(lo, hi)) /
                    (0.5 * (lo + hi)) if material == "LNMO" else float(rng.uniform(lo, hi)),
                    charge_transfer_ohm_cm2=p.charge_transfer_ohm_cm2 *
                    _spread(rng, p.spread_log))
    return FullCell(lipon, area_cm2, cathode_nm, p, li_nm or None, temperature_C, faults, name)


def _spread(rng: np.random.Generator, sigma: float) -> float:
    return float(math.exp(rng.normal(0.0, sigma)))


def cell_from_spec(spec: dict) -> CellModel:
    """A cell a station declares: {kind, [name], [area_cm2], [layers], [temperature_C],
    [faults], [params], [seed]}; missing layers and area are the seeds' (`default_layers`,
    DEFAULT_AREA_CM2). `cell.spec` round-trips through this."""
    unknown = set(spec) - {"kind", "name", "area_cm2", "layers", "temperature_C", "faults",
                           "params", "seed"}
    if unknown:
        raise ValueError(f"cell spec has unknown keys {sorted(unknown)}")
    if "kind" not in spec:
        raise ValueError(f"cell spec needs a kind, one of {', '.join(KINDS)}")
    k = _kind(spec["kind"])
    base_kind = k if k != "full" else "lnmo"
    seed = spec.get("seed")
    return cell_from_films(k, spec.get("layers") or default_layers(base_kind),
                           spec.get("area_cm2", DEFAULT_AREA_CM2[base_kind]),
                           spec.get("temperature_C", 25.0), spec.get("faults", ()),
                           None if seed is None else np.random.default_rng(seed),
                           name=spec.get("name"), params=spec.get("params"))
