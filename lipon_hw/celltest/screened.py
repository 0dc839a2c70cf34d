"""Cells for a cell test picked from a sheet's screening (`from_screening` on a channel
entry of a protocol), so the cycler's channels name the very cells the prober binned and
the genealogy finds their results (`lipon-hw sample CELL`).

    channels:
      "1-8": {from_screening: {sheet: SHEET-0001, hard_bins: [1, 2], seed: 1}}

One cell per channel of the entry, from the sheet's newest screening run (or `run`):

- stratified by bin, evenly: the count is split as evenly as possible over the listed
  bins, the first listed taking the remainder; a bin with fewer cells than its share gives
  them all and the rest is spread the same way over the bins that still have cells
  (water-filling), so a rare bin is not outvoted by a common one;
- within a bin, `numpy.random.default_rng([seed, bin])` draws its share without
  replacement from the bin's cells in row-major order: the same seed, sheet and screening
  give the same cells, and a bin's pick does not depend on the other bins listed;
- the channels of the entry take the picked cells in bin order (as listed), each bin's
  cells by position; a cell already named by an earlier entry is not picked again, nor
  one that a channel of another run in the store has named (on a cycler already, or
  reserved by a run that may yet resume): a second run of the same protocol takes other
  cells. A run read back (`resuming`: to resume it, in its worker processes or its Dask
  shards) takes the cells its own channels name in the store, the picks it stored as it
  started, whatever runs have been started since — if the screening could have drawn them
  (in the listed bins, in the draw's order); otherwise (none stored, or a newer screening
  binned them otherwise) it draws again, counting only the runs before it.

Refused (`PickError`: the field and one sentence) when the sheet has no screening in the
store, the run did not screen it, or the bins hold too few cells. Without a store (`lipon-hw
validate` with no --data) the cells stay unpicked and validation says they are picked
when the run starts.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lipon_hw.store_schema import ScreenCell
from lipon_hw.store_screening import cell_id


class PickError(ValueError):
    """A pick that cannot be made: `field` (under `from_screening`, None for the whole
    of it) and why, in one sentence."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


def shares(available: dict[int, int], count: int) -> dict[int, int]:
    """How many cells each bin gives (bins in the order listed): as even as the bins'
    cells allow, the first bins taking the remainder."""
    taken = dict.fromkeys(available, 0)
    remaining = count
    open_bins = [b for b in available if available[b] > 0]
    while remaining and open_bins:
        share, extra = divmod(remaining, len(open_bins))
        for i, b in enumerate(open_bins):
            give = min(share + (i < extra), available[b] - taken[b])
            taken[b] += give
            remaining -= give
        open_bins = [b for b in open_bins if taken[b] < available[b]]
    return taken


def pick(cells: Iterable[ScreenCell], hard_bins: list[int], count: int, seed: int,
         exclude: set[str] = frozenset()) -> list[ScreenCell]:
    """`count` of `cells` in `hard_bins` (see the module docstring); ValueError (as a
    PickError on `hard_bins`) when they hold fewer."""
    bins = list(dict.fromkeys(hard_bins))
    pools: dict[int, list[ScreenCell]] = {b: [] for b in bins}
    taken = False  # a cell of these bins left out as taken
    for c in sorted(cells, key=lambda c: (c.row, c.col)):
        if c.hard_bin in pools:
            if cell_id(c.sheet_id, c.row, c.col) in exclude:
                taken = True
            else:
                pools[c.hard_bin].append(c)
    have = {b: len(p) for b, p in pools.items()}
    if sum(have.values()) < count:
        found = ", ".join(f"{n} in bin {b}" for b, n in have.items())
        raise PickError("hard_bins", f"the screening has {found}"
                                     f"{' not yet taken by a channel' if taken else ''}: "
                                     "too few for "
                                     f"{count} channel{'s' * (count != 1)}")
    out = []
    for b, n in shares(have, count).items():
        chosen = np.random.default_rng([seed, b]).choice(have[b], size=n, replace=False)
        out += [pools[b][i] for i in sorted(int(i) for i in chosen)]
    return out


def pick_from_store(store, spec, channels: list[int], exclude: set[str],
                    resuming: int | None = None) -> list[str]:
    """The cell ids a `from_screening` spec (`protocol_schema.FromScreening`) picks from
    the store's screening of its sheet for `channels` (in their order), leaving out
    `exclude` and the cells other runs' channels name; for run `resuming` (read back), the
    cells its channels name (see the module docstring)."""
    runs = store.screenings_of(spec.sheet)
    if not runs:
        known = "has no screening in" if store.sheet(spec.sheet) is not None \
            else "is not a sheet in"
        raise PickError("sheet", f"sheet {spec.sheet!r} {known} {store.path}: screen it "
                                 "first (a `kind: screening` run), then pick its cells")
    if spec.run is not None and spec.run not in runs:
        raise PickError("run", f"run {spec.run} did not screen sheet {spec.sheet!r} (its "
                               f"screenings: runs {', '.join(map(str, runs))})")
    run_id = spec.run if spec.run is not None else runs[-1]
    cells = store.sheet_screen(run_id, spec.sheet)
    if resuming is not None:  # its channels' cells, if this screening could have given them
        own = store.channel_samples(resuming)
        stored = [own.get(number) for number in channels]
        if _a_draw_of(stored, cells, spec.hard_bins):
            return stored
    # (its channels name none: it draws as it did, before the runs after it named theirs)
    named = {ch.sample_id for run, ch in store.channels_naming(
        [cell_id(c.sheet_id, c.row, c.col) for c in cells]) if resuming is None or run < resuming}
    try:
        picked = pick(cells, spec.hard_bins, len(channels), spec.seed, set(exclude) | named)
    except PickError as exc:
        raise PickError(exc.field, f"sheet {spec.sheet!r}, screening run {run_id}: "
                                   f"{exc}") from None
    return [cell_id(c.sheet_id, c.row, c.col) for c in picked]


def _a_draw_of(picked: list, cells: list[ScreenCell], hard_bins: list[int]) -> bool:
    """Whether `picked` (cell ids, in channel order) is as `pick` orders a draw from these
    cells: distinct cells of the listed bins, bin by bin as listed, each bin's by position.
    Cells a newer screening binned otherwise are not (a resume then draws again, and is
    refused if that names other cells)."""
    order = {b: k for k, b in enumerate(dict.fromkeys(hard_bins))}
    where = {cell_id(c.sheet_id, c.row, c.col): (order[c.hard_bin], c.row, c.col)
             for c in cells if c.hard_bin in order}
    keys = [where.get(cell) for cell in picked]
    return None not in keys and len(set(keys)) == len(keys) and keys == sorted(keys)


def resolve(doc, entries: list[tuple], picker) -> dict[int, str]:
    """Channel → its picked cell, for the protocol's channel entries (`(loc, channel,
    ChannelSpec)`, in order) that pick from a screening; {} without a picker (a protocol
    read back only for its channels and programs). A refusal names file, line and field."""
    if picker is None:
        return {}
    taken = {spec.sample for _, _, spec in entries if spec.sample}
    wanted: dict[tuple, tuple] = {}
    for loc, number, spec in entries:
        if spec.from_screening is not None:
            wanted.setdefault(loc, (spec.from_screening, []))[1].append(number)
    out: dict[int, str] = {}
    for loc, (spec, numbers) in wanted.items():
        try:
            cells = picker(spec, numbers, taken)
        except PickError as exc:
            field = (exc.field,) if exc.field else ()
            raise doc.error(loc + ("from_screening", *field), str(exc)) from None
        taken.update(cells)
        out.update(zip(numbers, cells, strict=True))
    return out
