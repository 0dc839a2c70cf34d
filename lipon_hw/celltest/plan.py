"""A cell-test protocol loaded for a run: checked against the station and, given a store,
against the samples it holds (their films, where the lab builds cells from them; their
cathodes, for a capacity the protocol leaves to the sample), and with the cells of an
entry that takes them from a sheet's screening picked (`screened`)."""

from __future__ import annotations

from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest import screened
from lipon_hw.errors import InputError, LiponError
from lipon_hw.genealogy import nearest_stack
from lipon_hw.station import Station
from lipon_hw.store import Store


def sample_capacity_Ah(store: Store, sample_id: str, area_cm2: float) -> float | None:
    """A sample's capacity from the cathode layers of its film stack (a screened cell's:
    its roll's), if it has any."""
    try:
        _, layers = nearest_stack(store, sample_id)
    except LiponError:
        return None
    uah_cm2 = sum(layer.thickness_nm * 1e-3 * pr.CATHODE_UAH_CM2_PER_UM[layer.material]
                  for layer in layers if layer.material in pr.CATHODE_UAH_CM2_PER_UM)
    return uah_cm2 * area_cm2 * 1e-6 if uah_cm2 > 0 else None


def load(sequence: str, station: Station, store: Store | None, text: str | None = None,
         resuming: int | None = None) -> pr.Protocol:
    """The validated protocol; with a store, its channels' samples must be in it (with films,
    on a simulated station, which builds the cells from them) and cells taken from a
    screening are picked from it (none another run's channel names; `resuming`: the run
    this is read back for, whose own cells stay its picks); without one, those stay
    unpicked (sample None: picked when the run starts, which always has a store)."""
    capacity = (lambda s, a: sample_capacity_Ah(store, s, a)) if store is not None else None
    exists = (lambda s: _sample_known(store, s, station.in_process)) if store is not None \
        else None
    picker = (lambda spec, numbers, taken:
              screened.pick_from_store(store, spec, numbers, taken, resuming)) \
        if store is not None else None
    return pr.load_protocol(sequence, station, text=text, sample_capacity=capacity,
                            sample_exists=exists,
                            cell_check=station.cell_check(), screened_cells=picker)


def _sample_known(store: Store, sample_id: str, needs_films: bool) -> bool:
    try:
        store.sample(sample_id)
    except InputError:
        return False
    return not needs_films or bool(nearest_stack(store, sample_id)[1])
