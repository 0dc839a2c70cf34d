"""Simulated sheets (issue 13): roll-to-roll sheets of R×C anodeless LCO/LiPON cells.

Seed 004 §8 makes anodeless LCO/LiPON cells roll-to-roll on thin stainless steel and
patterns the web into sheets of cells that a prober tests. This package is that sheet in
the simulated lab:

  geometry   `Coater`: each film's thickness across the sheet, the cosine law
             (`sim.physics.cosine_law_factor`) integrated over a rectangular cathode
             spanning the web and over the web's travel under it; a slow rate drift
             (target wear) down the web
  defects    `DefectRates`: seeded per-cell defects (soft short, hard short,
             high-impedance interface, thin electrolyte) and the class a truth names
  formation  `Formation`, `form_and_dwell`: the formation charge and the dwell,
             integrated by the cell model with its faults acting
  sheet      `SimSheet` (cells on demand, truths, thickness maps), `SheetParams`
  hooks      `SimSheets`: `lab.sheets` of a simulated station (None on hardware)

Where the numbers come from:

- Film stack: the roll sample's true films when the simulated lab deposited it
  (`sim.lab_hooks.true_films`), else the seeds' stack of the cell kind
  (`default_layers`: 10 µm LCO from 004 under 1 µm LiPON, an assumption); a stack
  without a cathode (the sputter tool makes LiPON only) gets the seed's LCO. The stack's
  thicknesses are the sheet centre's (as `SputterTool.thickness_map_nm` takes them);
  cathode and LiPON each follow their own coater's map.
- Uniformity (PHYSICS.md §3: cosine-law fall-off, "±5–10 % centre to edge",
  assumption): the coaters' throws and target lengths (assumptions) are chosen so a
  20×30 sheet at 5 mm pitch (15 cm across the web) falls ≈ 6.5 % (LCO) and ≈ 8 %
  (LiPON) from the centre to the edge columns; down the web 1 %/m of wear drift
  (assumption; PHYSICS.md §3 says wear lowers the rate, not how fast).
- Defects (assumptions, 004 gives no rates): 3 % soft shorts (log-normal, median
  3 MΩ), 1 % hard shorts, 2 % high-impedance interfaces (R_ct × 3–10), 1 % thin
  electrolyte (40–70 % of the local LiPON). Contact misses belong to the prober.
- Formation (assumption, 004 does not say): C/5 of the nominal cell to 4.2 V (top of
  004's 3.0–4.2 V window), 12 h at 4.2 V, then open for the spec's dwell. A soft short
  self-discharges through its leak (OCV low), a hard short reads ~0 V, a good cell
  holds 4.2 V (σ_e of PHYSICS.md §3 drains micro-volts a day). LiPON's σ and Ea
  (PHYSICS.md §3) set the bulk resistance, so a thin electrolyte lowers |Z| at the
  high frequencies.
- Every cell's numbers come from an rng seeded by (seed, sheet id, row, col): the same
  cell whenever and in whatever order it is built. Its cell-to-cell scatter (LCO
  utilisation, R_ct) is `cell_from_films`'.

Ground truth (`SimSheet.truth`) is stored by the hook in the store's `sim_truth` table
(kind "sheet_cell"; the sheet's settings and maps as kind "sheet"), apart from
measurements; nothing that bins reads it.
"""

from lipon_hw.sim.sheet.defects import DEFECT_KINDS, DefectRates
from lipon_hw.sim.sheet.formation import Formation
from lipon_hw.sim.sheet.geometry import Coater
from lipon_hw.sim.sheet.hooks import SHEET, SHEET_CELL, SimSheets
from lipon_hw.sim.sheet.sheet import SheetParams, SimSheet

__all__ = ["DEFECT_KINDS", "SHEET", "SHEET_CELL", "Coater", "DefectRates", "Formation",
           "SheetParams", "SimSheet", "SimSheets"]
