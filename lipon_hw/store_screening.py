"""Sheets, their screened cells and the samples' genealogy in the store.

A mixin of `store.Store`, kept in a module of its own for size only: a touchdown's
results are written through the store's buffered writes, so they are committed in the
same transaction as the checkpoint that follows them (a killed screening run never holds
a checkpoint past a cell whose result is missing, nor a result twice: `(run_id, row,
col)` is the table's key).

Genealogy is one table of links, child → parent, each with its relation and the run that
made it: a sheet is `cut from` its roll, a cell `patterned on` its sheet. The roll's own
history is its layers (the deposition runs that laid them down); a cell's later history
is the cell-test channels that name it as their sample.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from lipon_hw.errors import InputError
from lipon_hw.store_schema import SampleLink, ScreenCell, Sheet

SHEET_OF_ROLL = "cut from"
CELL_OF_SHEET = "patterned on"

SQL = """
CREATE TABLE sheets (
    id TEXT PRIMARY KEY REFERENCES samples(id),
    roll_id TEXT,
    rows INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    pitch_x_mm REAL NOT NULL,
    pitch_y_mm REAL NOT NULL,
    run_id INTEGER NOT NULL
);
CREATE TABLE screen_cells (
    run_id INTEGER NOT NULL,
    sheet_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    col INTEGER NOT NULL,
    site INTEGER NOT NULL,
    touchdown INTEGER NOT NULL,
    t_s REAL NOT NULL,
    attempts INTEGER NOT NULL,
    contact TEXT NOT NULL,
    metrics TEXT NOT NULL,
    soft_bin INTEGER NOT NULL,
    soft_bin_name TEXT NOT NULL,
    hard_bin INTEGER NOT NULL,
    hard_bin_name TEXT NOT NULL,
    passed INTEGER NOT NULL,
    rule TEXT NOT NULL,
    PRIMARY KEY (run_id, row, col)
);
CREATE INDEX screen_cells_by_sheet ON screen_cells(sheet_id, row, col);
CREATE TABLE sample_links (
    child TEXT NOT NULL,
    parent TEXT NOT NULL,
    relation TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    PRIMARY KEY (child, parent)
);
CREATE INDEX sample_links_by_parent ON sample_links(parent)"""

_CELL_COLUMNS = ("run_id, sheet_id, row, col, site, touchdown, t_s, attempts, contact, metrics,"
                 " soft_bin, soft_bin_name, hard_bin, hard_bin_name, passed, rule")


_LINK_COLUMNS = "(child, parent, relation, run_id)"


def cell_id(sheet_id: str, row: int, col: int) -> str:
    """The sample id of the cell at (row, col) of a sheet, both from 1."""
    return f"{sheet_id}-R{row:02d}C{col:02d}"


class ScreeningRecords:
    # --- sheets and links ---------------------------------------------------------------
    def add_sheet(self, sheet: Sheet) -> None:
        """The sheet as a sample (and its roll, if named, with the link between them).
        A sheet already stored must have the same geometry: InputError otherwise."""
        known = self.sheet(sheet.id)
        if known is not None:
            if (known.rows, known.cols, known.pitch_x_mm, known.pitch_y_mm) != \
                    (sheet.rows, sheet.cols, sheet.pitch_x_mm, sheet.pitch_y_mm):
                raise InputError(f"sheet {sheet.id!r} is stored as {known.rows}×{known.cols} "
                                 f"cells at {known.pitch_x_mm:g}×{known.pitch_y_mm:g} mm "
                                 f"(run {known.run_id}), not {sheet.rows}×{sheet.cols} at "
                                 f"{sheet.pitch_x_mm:g}×{sheet.pitch_y_mm:g} mm")
            return
        self.ensure_sample(sheet.id, "sheet")
        row = (sheet.id, sheet.roll_id, sheet.rows, sheet.cols, sheet.pitch_x_mm,
               sheet.pitch_y_mm, sheet.run_id)
        self._write_soon(lambda db: db.execute(
            "INSERT INTO sheets (id, roll_id, rows, cols, pitch_x_mm, pitch_y_mm, run_id)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", row))
        if sheet.roll_id:
            self.ensure_sample(sheet.roll_id, "roll")
            self.link_samples(sheet.id, sheet.roll_id, SHEET_OF_ROLL, sheet.run_id)
        self.flush()

    def sheet(self, sheet_id: str) -> Sheet | None:
        if self.layout < 6:
            return None
        self.try_flush()
        row = self._db.execute("SELECT id, roll_id, rows, cols, pitch_x_mm, pitch_y_mm, run_id"
                               " FROM sheets WHERE id=?", (sheet_id,)).fetchone()
        return None if row is None else Sheet(*row)

    def link_samples(self, child: str, parent: str, relation: str, run_id: int) -> None:
        row = (child, parent, relation, run_id)
        self._write_soon(lambda db: db.execute(
            f"INSERT INTO sample_links {_LINK_COLUMNS} VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
            row))

    def parents(self, sample_id: str) -> list[SampleLink]:
        """What the sample was made from (a cell: its sheet; a sheet: its roll)."""
        return self._links("child", sample_id)

    def children(self, sample_id: str) -> list[SampleLink]:
        """What was made from the sample (a roll: its sheets; a sheet: its cells)."""
        return self._links("parent", sample_id)

    def ancestors(self, sample_id: str) -> list[SampleLink]:
        """Every link up from the sample (a cell: to its sheet, then the sheet's to its
        roll...), nearest first; a loop of links is followed once round."""
        return self._walk(sample_id, "child", "parent")

    def descendants(self, sample_id: str) -> list[SampleLink]:
        """Every link down from the sample (a roll: its sheets, then their cells...),
        nearest first."""
        return self._walk(sample_id, "parent", "child")

    def _walk(self, sample_id: str, here: str, there: str) -> list[SampleLink]:
        if self.layout < 6:
            return []
        self.try_flush()
        rows = self._db.execute(
            f"WITH RECURSIVE walk(child, parent, relation, run_id, depth) AS ("
            f" SELECT child, parent, relation, run_id, 1 FROM sample_links WHERE {here}=?"
            f" UNION SELECT l.child, l.parent, l.relation, l.run_id, w.depth + 1"
            f" FROM sample_links l JOIN walk w ON l.{here} = w.{there} WHERE w.depth < 64)"
            f" SELECT child, parent, relation, run_id, MIN(depth) AS d FROM walk"
            f" GROUP BY child, parent, relation, run_id ORDER BY d, child, parent",
            (sample_id,)).fetchall()
        return [SampleLink(*r[:4]) for r in rows]

    def _links(self, column: str, sample_id: str) -> list[SampleLink]:
        if self.layout < 6:
            return []
        self.try_flush()
        rows = self._db.execute(f"SELECT child, parent, relation, run_id FROM sample_links"
                                f" WHERE {column}=? ORDER BY child, parent",
                                (sample_id,)).fetchall()
        return [SampleLink(*r) for r in rows]

    # --- screened cells -----------------------------------------------------------------
    def add_screen_cells(self, cells: Iterable[ScreenCell]) -> None:
        """A touchdown's results: each cell becomes a sample linked to its sheet. Buffered:
        committed with the next checkpoint (or flush); the store's taps are told of them
        as given (`screen_cells(run_id, cells)`)."""
        cells = list(cells)
        rows = [(c.run_id, c.sheet_id, c.row, c.col, c.site, c.touchdown, c.t_s, c.attempts,
                 c.contact, json.dumps(c.metrics, allow_nan=False), c.soft_bin,
                 c.soft_bin_name, c.hard_bin, c.hard_bin_name, int(c.passed), c.rule)
                for c in cells]

        def write(db) -> None:
            now = time.time()
            db.executemany(f"INSERT INTO screen_cells ({_CELL_COLUMNS}) VALUES "
                           f"({','.join('?' * 16)})", rows)
            for r in rows:
                cid = cell_id(r[1], r[2], r[3])
                db.execute("INSERT INTO samples (id, substrate, created_at) "
                           "VALUES (?, 'cell', ?) ON CONFLICT DO NOTHING", (cid, now))
                db.execute(f"INSERT INTO sample_links {_LINK_COLUMNS} VALUES (?,?,?,?)"
                           " ON CONFLICT DO NOTHING", (cid, r[1], CELL_OF_SHEET, r[0]))

        self._write_soon(write)
        if self.taps and cells:
            from lipon_hw.store_plumbing import tell  # store_plumbing imports the layouts

            tell(self.taps, "screen_cells", cells[0].run_id, cells)

    def screen_cells(self, run_id: int) -> list[ScreenCell]:
        """Every cell a screening run measured, row by row."""
        return self._screen_cells("run_id=?", (run_id,))

    def screen_results_of(self, sheet_id: str, row: int, col: int) -> list[ScreenCell]:
        """Every screening of the cell at (row, col) of a sheet, oldest first."""
        return self._screen_cells("sheet_id=? AND row=? AND col=?", (sheet_id, row, col))

    def screenings_of(self, sheet_id: str) -> list[int]:
        """The runs that screened cells of the sheet, oldest first."""
        if self.layout < 6:
            return []
        self.try_flush()
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT run_id FROM screen_cells WHERE sheet_id=? ORDER BY run_id",
            (sheet_id,))]

    def sheet_screen(self, run_id: int, sheet_id: str) -> list[ScreenCell]:
        """The cells of one sheet a screening run measured, row by row."""
        return self._screen_cells("run_id=? AND sheet_id=?", (run_id, sheet_id))

    def screen_cells_after(self, run_id: int, cursor: int, limit: int
                           ) -> list[tuple[int, ScreenCell]]:
        """(cursor, cell) of the cells a screening run stored after `cursor` (0: from the
        first), in the order they were stored, at most `limit`. A cursor is the row's
        rowid: rows are never deleted (nor the file VACUUMed, which could renumber them)
        and each commit's rowids follow the last one's, so a later read from the last
        cursor seen gets exactly the cells stored since."""
        if self.layout < 6:
            return []
        self.try_flush()
        rows = self._db.execute(f"SELECT rowid, {_CELL_COLUMNS} FROM screen_cells WHERE "
                                "run_id=? AND rowid > ? ORDER BY rowid LIMIT ?",
                                (run_id, cursor, limit)).fetchall()
        return [(r[0], self._screen_cell(r[1:])) for r in rows]

    def hard_bin_counts(self, run_id: int, sheet_id: str) -> list[tuple[int, str, int]]:
        """(hard bin, its name, cells) of one sheet in a screening run, by bin."""
        if self.layout < 6:
            return []
        self.try_flush()
        return self._db.execute(
            "SELECT hard_bin, MIN(hard_bin_name), COUNT(*) FROM screen_cells WHERE run_id=?"
            " AND sheet_id=? GROUP BY hard_bin ORDER BY hard_bin", (run_id, sheet_id)).fetchall()

    def screened_positions(self, run_id: int) -> set[tuple[int, int]]:
        if self.layout < 6:
            return set()
        self.try_flush()
        return set(self._db.execute("SELECT row, col FROM screen_cells WHERE run_id=?",
                                    (run_id,)).fetchall())

    def _screen_cells(self, where: str, args: tuple) -> list[ScreenCell]:
        if self.layout < 6:
            return []
        self.try_flush()
        rows = self._db.execute(f"SELECT {_CELL_COLUMNS} FROM screen_cells WHERE {where}"
                                " ORDER BY run_id, row, col", args).fetchall()
        return [self._screen_cell(r) for r in rows]

    def _screen_cell(self, r: tuple) -> ScreenCell:
        return ScreenCell(*r[:9], metrics=self._json(r[9]), soft_bin=r[10],
                          soft_bin_name=r[11], hard_bin=r[12], hard_bin_name=r[13],
                          passed=bool(r[14]), rule=r[15])
