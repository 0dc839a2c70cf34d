"""The hooks a simulated lab offers the engine: what only a simulation can do.

A connected `Lab` (`lipon_hw.station`) holds three capabilities that are None on
hardware; on a simulated station they are these classes, built around the `SimLab`:

- `SimCells` (`lab.cells`): put a cell on a potentiostat channel, built from a
  sample's true films (or a protocol's declared cell kind), as an operator loads
  a cell into a holder; hand out each channel's cell physics for checkpoints.
- `SimPhysics` (`lab.physics`): snapshot and restore the whole World and every
  emulator's memory, so a resumed run continues from its checkpoint.
- `SimFilmTruth` (`lab.film_truth`): record the true film a step laid down, and
  measure a film's true thickness (the simulated profilometer).

Ground truth goes to the store's `sim_truth` table, apart from measurements, and only
this module reads it back (to build cells from a sample's true films). A layer whose
truth was never recorded (grown on hardware, or stored by lipon-hw 0.1.0, which kept it
in the layer's properties) is taken as measured, or from that old property.
"""

from __future__ import annotations

import numpy as np

from lipon_hw.errors import InputError
from lipon_hw.genealogy import nearest_stack
from lipon_hw.sim.cells.factories import DEFAULT_AREA_CM2, cell_from_films, default_layers

#: the store's `sim_truth` kinds
FILM, CELL = "film", "cell"


class SimCells:
    """`lab.cells`: cells built from films, mounted on the simulated potentiostats."""

    def __init__(self, sim_lab):
        self._lab = sim_lab

    def mount(self, store, run_id: int, instrument: str, channel: int, spec,
              sample_id: str | None, seed: int | None) -> None:
        """Build the cell `spec` (a protocol's CellSpec: kind, area, temperature, faults,
        params, LiPON thickness) from the sample's true films, or from the seeds' stack of
        its kind, seeded per channel; mount it and record its true parameters. ValueError
        for a cell that cannot be built, InputError for a sample without films."""
        kind = spec.kind or "full"
        picked = _sheet_cell(store, sample_id, self._lab.world.clock()) if sample_id else None
        if picked is not None:  # a cell picked from a screened sheet: that very cell
            self._lab.mount_cell(instrument, channel, picked)
            store.put_sim_truth(CELL, run_id, sample_id, channel, picked.spec)
            return
        if sample_id is not None:
            layers = true_films(store, sample_id)
        else:
            layers = default_layers(kind)
            if spec.lipon_thickness_nm is not None:
                layers = [{**x, "thickness_nm": spec.lipon_thickness_nm}
                          if x["material"] in ("LiPON", "Li3PO4") else x for x in layers]
        temperature_C = 25.0 if spec.temperature_C is None else spec.temperature_C
        cell = cell_from_films(kind, layers, spec.area_cm2 or DEFAULT_AREA_CM2.get(kind, 0.049),
                               temperature_C, spec.faults,
                               np.random.default_rng([seed or 0, channel]),
                               name=f"channel {channel}", params=spec.params or None)
        self._lab.mount_cell(instrument, channel, cell)
        store.put_sim_truth(CELL, run_id, sample_id or "", channel, cell.spec)

    def channel(self, instrument: str, channel: int):
        """The physics of the cell on the channel: `snapshot()` → dict, `restore(dict)`."""
        return self._lab.cell(instrument, channel)


def _sheet_cell(store, sample_id: str, now: float):
    from lipon_hw.genealogy import sheet_of_cell
    from lipon_hw.sim.sheet.hooks import sheet_cell

    where = sheet_of_cell(store, sample_id)
    return None if where is None else sheet_cell(store, *where, now)


class SimPhysics:
    """`lab.physics`: the World and the emulators' memories, for checkpoints."""

    def __init__(self, sim_lab):
        self._lab = sim_lab

    def snapshot(self) -> dict:
        return self._lab.snapshot()

    def restore(self, state: dict) -> None:
        self._lab.restore(state)


class SimFilmTruth:
    """`lab.film_truth`: the World's true films, recorded and measured."""

    def __init__(self, sim_lab):
        self._world = sim_lab.world

    def record_film(self, store, run_id: int, sample_id: str, step: int, material: str) -> None:
        """The true film on top of the World's stack, as the layer the step just recorded
        (nothing if the World's top film is another material)."""
        stack = self._world.film_stack()
        if stack and stack[-1]["material"] == material:
            store.put_sim_truth(FILM, run_id, sample_id, step, stack[-1])

    def thickness_nm(self, material: str) -> float | None:
        """The true thickness of the newest `material` film in the World (a profilometer
        that never errs), or None without one."""
        films = [la for la in self._world.film_stack() if la["material"] == material]
        return films[-1]["thickness_nm"] if films else None


def true_films(store, sample_id: str) -> list[dict]:
    """The sample's film stack as the World made it: each stored layer's recorded truth,
    else the measured material and thickness. A sample with no layers of its own (a cell
    of a sheet) has its nearest ancestor's (the roll's, as deposited: uniform)."""
    owner, layers = nearest_stack(store, sample_id)
    if not layers:
        raise InputError(f"sample {sample_id!r} has no layers in {store.path}")
    truths = store.sim_truths(FILM, owner)
    films = []
    for layer in layers:
        props = layer.properties
        truth = truths.get((layer.run_id, props.get("step"))) or props.get("sim_truth")
        films.append(truth or {"material": layer.material, "thickness_nm": layer.thickness_nm})
    return films
