"""Simulated cells on the potentiostat channels (PHYSICS.md §6).

- `BlockingCell`  Cu/LiPON/Cu: (R1‖CPE1) film + (R2‖CPE2) interface + blocking double layer,
  electronic leakage through σ_e across it (DC polarization settles to picoamps).
- `PlatingCell`   Li/LiPON/Cu: galvanostatic plating on Cu with the ~−1 V nucleation dip,
  stripping, coulombic efficiency that depends on stack pressure.
- `FullCell`      LNMO/LiPON/Li and LCO/LiPON/(Li or anodeless): OCV(SOC) tables, R_LiPON
  from thickness and σ(T), (R_ct‖CPE), a finite-length diffusion term, capacity fade and
  coulombic efficiency per cycle, Li plating on the first charge of an anodeless cell.

Every cell follows the contract of `model.Cell` (set_control, voltage_V, current_A,
impedance_ohm, next_crossing, snapshot/restore) and is integrated exactly, segment by
segment, by `model.CellModel`. Numbers come from the seeds; every number no source gives
is a dataclass field marked "assumption" (`params`).

The modules, from the numbers up:

  tables       piecewise-linear tables (OCV curves, resistance profiles)
  expsums      sums of exponentials, one evaluation path for single and bulk readings
  roots        first crossings of those sums with a limit
  circuit      the cell's linear circuit and its linearisation on one table segment
  faults       shorts, opens, a high interface: parsing and seeded draws
  tracks       the exact trajectory on one segment under one control
  model        `CellModel`, the base cell: lazy evolution, limits, snapshots
  impedance    (R ‖ CPE), CPE, parallel, the finite-length Warburg
  params       the seeds' numbers and the assumptions, per cell kind
  li_profiles  Li nucleation and stripping resistance profiles
  film         `FilmCell`, the base of cells with a LiPON separator
  blocking     `BlockingCell`;  plating  `PlatingCell`;  full  `FullCell`
  factories    `cell_from_films`, `cell_from_spec`, `default_layers`: cells from films or
               a station's spec
"""
