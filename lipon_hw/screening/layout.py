"""Where the prober's sites land on a sheet: the sheet's and the probe card's geometry, and
the touchdowns that cover the sheet block by block.

A sheet is `rows` × `cols` cells on a pitch; cell (1, 1) sits at the stage's origin, x
runs along the columns, y along the rows. The probe card holds `rows` × `cols` sites at
the same pitch; a recipe uses a block of them from the card's first site (`sites`), each
wired to one potentiostat channel (card site (i, j), from 0, is channel
i·card_cols + j + 1). A touchdown puts the used block's first site on one cell; its sites
touch the cells of the block below it, and the sites that fall off the sheet idle. The
blocks go row by row, each row of blocks the other way from the one before (serpentine),
so the stage never travels back across the sheet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SheetSpec:
    """A patterned sheet as the recipe declares it (a sample of its own, cut from a roll)."""

    id: str
    roll: str | None
    rows: int
    cols: int
    pitch_x_mm: float
    pitch_y_mm: float
    cell_kind: str = "lco_anodeless"
    area_cm2: float = 0.16
    #: hours between the sheet's formation charge and its screening
    dwell_h: float = 12.0
    #: simulator-only settings (defect rates, geometry) handed to a simulated lab's hook
    sim: dict | None = None

    def cell_xy_mm(self, row: int, col: int) -> tuple[float, float]:
        return ((col - 1) * self.pitch_x_mm, (row - 1) * self.pitch_y_mm)


@dataclass(frozen=True)
class CardSpec:
    """The probe card's sites in use: a `rows` × `cols` block of a card `card_cols` wide."""

    rows: int
    cols: int
    card_cols: int

    @property
    def sites(self) -> int:
        return self.rows * self.cols

    def channel(self, i: int, j: int) -> int:
        return i * self.card_cols + j + 1


@dataclass(frozen=True)
class Touch:
    """One site of a touchdown on one cell."""

    site: int  # from 1, row-major over the block in use
    channel: int
    row: int
    col: int


@dataclass(frozen=True)
class Touchdown:
    index: int  # from 1, in the order the prober steps
    row: int  # the cell under the block's first site
    col: int
    x_mm: float
    y_mm: float
    touches: tuple[Touch, ...]

    def positions(self) -> set[tuple[int, int]]:
        return {(t.row, t.col) for t in self.touches}


def touchdowns(sheet: SheetSpec, card: CardSpec) -> list[Touchdown]:
    """Every touchdown that covers the sheet, in stepping order."""
    out: list[Touchdown] = []
    block_rows = range(1, sheet.rows + 1, card.rows)
    for n, row in enumerate(block_rows):
        cols = list(range(1, sheet.cols + 1, card.cols))
        for col in cols if n % 2 == 0 else reversed(cols):
            touches = tuple(
                Touch(i * card.cols + j + 1, card.channel(i, j), row + i, col + j)
                for i in range(card.rows) for j in range(card.cols)
                if row + i <= sheet.rows and col + j <= sheet.cols)
            x, y = sheet.cell_xy_mm(row, col)
            out.append(Touchdown(len(out) + 1, row, col, x, y, touches))
    return out
