"""A sample's genealogy, followed both ways: up its links to the roll (and the deposition
runs that laid the films), down to what was made from it (a roll's sheets, a sheet's cells
and their bins), and on to the cell tests that cycled it or any of its descendants.

Every read is a store query (`store_screening`, `store_samples`, `store_cells`); this
module only assembles them:

    roll ──cut from── sheet ──patterned on── cell ── its screening (bins, metrics)
     └ layers (deposition runs)                   └ cycler channels naming it

A cell has no films of its own: its film stack is its nearest ancestor's that has one
(the roll's). A sheet's cells are summarised (cells per hard bin of its newest
screening) unless every cell is asked for. The printed form is `genealogy_view`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from lipon_hw.errors import InputError
from lipon_hw.store_schema import Layer, Sample, SampleLink, ScreenCell, Sheet
from lipon_hw.store_screening import CELL_OF_SHEET


@dataclass(frozen=True)
class RunRef:
    """A run as a genealogy names it (`kind`: deposition, screening, cycling...)."""
    id: int
    name: str
    kind: str
    status: str


@dataclass(frozen=True)
class BinCount:
    hard_bin: int
    name: str
    cells: int


@dataclass(frozen=True)
class SheetCells:
    """A sheet's cells: how many were made (linked), the runs that screened it (oldest
    first), the newest one's cells per hard bin, and, when asked, every cell of it."""
    sheet: Sheet
    cells: int
    screenings: tuple[int, ...]
    bins: tuple[BinCount, ...]
    listed: tuple[ScreenCell, ...] | None = None

    def to_dict(self) -> dict:
        out = {"sheet": asdict(self.sheet), "cells": self.cells,
               "screenings": list(self.screenings),
               "bins": [asdict(b) for b in self.bins]}
        if self.listed is not None:
            out["listed"] = [c.to_dict() for c in self.listed]
        return out


@dataclass(frozen=True)
class Descendant:
    """A sample made from the sample or one of its descendants (`depth` links down)."""
    id: str
    relation: str
    parent: str
    run_id: int
    depth: int
    sheet: SheetCells | None = None

    def to_dict(self) -> dict:
        out = {"id": self.id, "relation": self.relation, "parent": self.parent,
               "run_id": self.run_id, "depth": self.depth}
        if self.sheet is not None:
            out["sheet"] = self.sheet.to_dict()
        return out


@dataclass(frozen=True)
class TestResult:
    """A cell-test channel that tested the sample or a descendant, as far as it went."""
    run_id: int
    channel: int
    sample_id: str
    status: str
    message: str
    cycles: int
    last_discharge_uAh: float | None
    mean_coulombic_efficiency: float | None
    #: the tested cell's hard bin and its name in its sheet's newest screening, if any
    hard_bin: int | None = None
    hard_bin_name: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Lineage:
    sample: Sample
    #: links up, nearest first (a cell: to its sheet, then the sheet's to its roll)
    ancestors: tuple[SampleLink, ...]
    #: the sample whose layers are the film stack: itself, or its nearest ancestor with any
    stack_of: str
    stack: tuple[Layer, ...]
    #: a cell's screenings, oldest first
    screening: tuple[ScreenCell, ...]
    #: the sample is a sheet: its cells
    sheet: SheetCells | None
    #: what was made from it, nearest first (a sheet's own cells are in `sheet`)
    descendants: tuple[Descendant, ...]
    tests: tuple[TestResult, ...]
    #: every run named above, by id
    runs: dict[int, RunRef]

    @property
    def plain(self) -> bool:
        """No links, no cell tests: only a film stack (printed as it always was)."""
        return not (self.ancestors or self.sheet or self.descendants or self.tests
                    or self.screening)

    def to_dict(self) -> dict:
        """The sample's document (`Sample.to_dict`), and, for a sample with a genealogy,
        its keys each where it has any: ancestors, film_stack (inherited from an
        ancestor), screening, sheet, descendants, tests, runs."""
        out = self.sample.to_dict()
        if self.plain:
            return out
        parts = {
            "ancestors": [asdict(lk) for lk in self.ancestors],
            "film_stack": ({"of": self.stack_of, "layers": [la.to_dict() for la in self.stack]}
                           if self.stack_of != self.sample.id else None),
            "screening": [c.to_dict() for c in self.screening],
            "sheet": self.sheet.to_dict() if self.sheet else None,
            "descendants": [d.to_dict() for d in self.descendants],
            "tests": [t.to_dict() for t in self.tests],
            "runs": {str(k): asdict(v) for k, v in sorted(self.runs.items())},
        }
        out.update({k: v for k, v in parts.items() if v})
        return out


def lineage(store, sample_id: str, cells: bool = False) -> Lineage:
    """The sample's genealogy both ways (`cells`: every cell of a sheet listed, not only
    counted per bin). InputError, naming the sample and the store, for one not stored."""
    sample = store.sample(sample_id)
    ancestors = tuple(store.ancestors(sample_id))
    stack_of, stack = nearest_stack(store, sample_id, ancestors)
    screening = tuple(_screenings(store, sample_id, ancestors))
    sheet = _sheet_cells(store, sample_id, cells)
    down = store.descendants(sample_id)
    descendants = tuple(_descendants(store, sample_id, down, cells))
    tests = tuple(_tests(store, {sample_id, *(lk.child for lk in down)}))
    run_ids = {lk.run_id for lk in (*ancestors, *down)} | {la.run_id for la in stack} \
        | {c.run_id for c in screening} | {t.run_id for t in tests}
    for part in (sheet, *(d.sheet for d in descendants)):
        if part is not None:
            run_ids |= set(part.screenings)
    return Lineage(sample, ancestors, stack_of, tuple(stack), screening, sheet, descendants,
                   tests, {i: _run_ref(store, i) for i in sorted(run_ids)})


def nearest_stack(store, sample_id: str, ancestors=None) -> tuple[str, list[Layer]]:
    """(the sample whose films these are, its layers bottom first): the sample's own, else
    its nearest ancestor's with any (a cell carries its roll's films); (sample_id, [])
    when none has films."""
    layers = store.film_stack(sample_id)
    if layers:
        return sample_id, layers
    for link in store.ancestors(sample_id) if ancestors is None else ancestors:
        layers = store.film_stack(link.parent)
        if layers:
            return link.parent, layers
    return sample_id, []


def cell_position(cell_id: str, sheet_id: str) -> tuple[int, int] | None:
    """(row, col) of a cell named `{sheet}-R{row}C{col}` (`store_screening.cell_id`), or
    None for another name."""
    m = re.fullmatch(re.escape(sheet_id) + r"-R(\d+)C(\d+)", cell_id)
    return (int(m.group(1)), int(m.group(2))) if m else None


def sheet_of_cell(store, cell_id: str) -> tuple[str, int, int] | None:
    """(sheet, row, col) of a cell patterned on a sheet, or None for another sample."""
    for link in store.parents(cell_id):
        if link.relation == CELL_OF_SHEET:
            position = cell_position(cell_id, link.parent)
            if position is not None:
                return link.parent, *position
    return None


def _screenings(store, sample_id: str, ancestors) -> list[ScreenCell]:
    for link in ancestors:
        if link.child == sample_id and link.relation == CELL_OF_SHEET:
            position = cell_position(sample_id, link.parent)
            if position is not None:
                return store.screen_results_of(link.parent, *position)
    return []


def _sheet_cells(store, sheet_id: str, listed: bool) -> SheetCells | None:
    sheet = store.sheet(sheet_id)
    if sheet is None:
        return None
    made = sum(lk.relation == CELL_OF_SHEET for lk in store.children(sheet_id))
    screenings = tuple(store.screenings_of(sheet_id))
    newest = screenings[-1] if screenings else None
    bins = tuple(BinCount(*b) for b in store.hard_bin_counts(newest, sheet_id)) \
        if newest is not None else ()
    cells = tuple(store.sheet_screen(newest, sheet_id)) if listed and newest is not None \
        else (() if listed else None)
    return SheetCells(sheet, made, screenings, bins, cells)


def _descendants(store, sample_id: str, down: list[SampleLink], listed: bool):
    depth = {sample_id: 0}
    for link in down:  # nearest first: a parent's depth is known before its children's
        depth.setdefault(link.child, depth.get(link.parent, 0) + 1)
        if link.relation == CELL_OF_SHEET:
            continue  # counted in its sheet's summary
        yield Descendant(link.child, link.relation, link.parent, link.run_id,
                         depth[link.child], _sheet_cells(store, link.child, listed))


def _tests(store, sample_ids: set[str]):
    from lipon_hw.analysis.cycles import CycleStats, summarize

    bins: dict[str, tuple[int, str] | None] = {}
    for run_id, ch in store.channels_naming(sample_ids):
        stats = [CycleStats(**c) for c in store.cycles(run_id, ch.channel)]
        figures = summarize(stats, from_cycle=stats[0].cycle + 1 if stats else None)
        last = figures.last_discharge_Ah
        if ch.sample_id not in bins:
            bins[ch.sample_id] = _newest_bin(store, ch.sample_id)
        hard = bins[ch.sample_id]
        yield TestResult(run_id, ch.channel, ch.sample_id, ch.status, ch.message,
                         max(ch.cycle - 1, 0), None if last is None else last * 1e6,
                         figures.mean_coulombic_efficiency,
                         hard[0] if hard else None, hard[1] if hard else None)


def _newest_bin(store, cell_id: str) -> tuple[int, str] | None:
    where = sheet_of_cell(store, cell_id)
    results = store.screen_results_of(*where) if where else []
    return (results[-1].hard_bin, results[-1].hard_bin_name) if results else None


def _run_ref(store, run_id: int) -> RunRef:
    try:
        run = store.run(run_id)
    except InputError:  # a link or layer of a run no longer stored
        return RunRef(run_id, "", "", "not stored")
    return RunRef(run.id, run.name, run.kind, run.status)
