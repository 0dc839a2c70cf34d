"""Scoring a screening against the simulated sheet's ground truth.

The truth (`sim_truth` kind "sheet_cell", written by `SimSheets.load`) never reaches the
binning; this reads it back beside the stored results to say how well the recipe's bins
found each kind of defect: the shorts found, the good cells binned out. A tool of the
simulated lab, for tests and the benchmark, never for a run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lipon_hw.sim.sheet.hooks import SHEET_CELL

#: the truth classes that are shorts
SHORTS = ("soft_short", "hard_short")


@dataclass
class Score:
    #: (truth class, soft bin name) → cells
    confusion: Counter = field(default_factory=Counter)
    shorts: int = 0
    shorts_binned_as_shorts: int = 0
    good: int = 0
    good_binned_out: int = 0  # measured, failed a rule
    good_tester_faults: int = 0  # not measured (no contact): not binned out, not passed
    unscored: int = 0  # cells with a result and no truth (another run's sheet)

    @property
    def short_detection(self) -> float | None:
        return self.shorts_binned_as_shorts / self.shorts if self.shorts else None

    @property
    def good_loss(self) -> float | None:
        return self.good_binned_out / self.good if self.good else None

    def to_dict(self) -> dict:
        return {"shorts": self.shorts, "shorts_binned_as_shorts": self.shorts_binned_as_shorts,
                "short_detection": self.short_detection, "good": self.good,
                "good_binned_out": self.good_binned_out, "good_loss": self.good_loss,
                "good_tester_faults": self.good_tester_faults,
                "confusion": {f"{k[0]} -> {k[1]}": v for k, v in sorted(self.confusion.items())}}


def score(store, run_id: int, short_bins: tuple[str, ...] = ("hard_short", "soft_short")
          ) -> Score:
    """How the run's bins match the truth of the sheet it screened. `short_bins`: the
    soft bin names that mean "short"."""
    cells = store.screen_cells(run_id)
    out = Score()
    if not cells:
        return out
    sheet = store.sheet(cells[0].sheet_id)
    truths = {pos: t for (rid, pos), t in store.sim_truths(SHEET_CELL, sheet.id).items()}
    for c in cells:
        truth = truths.get((c.row - 1) * sheet.cols + (c.col - 1))
        if truth is None:
            out.unscored += 1
            continue
        klass = truth["class"]
        out.confusion[(klass, c.soft_bin_name)] += 1
        if klass in SHORTS:
            out.shorts += 1
            out.shorts_binned_as_shorts += c.soft_bin_name in short_bins
        elif klass == "good":
            out.good += 1
            if c.contact != "ok":
                out.good_tester_faults += 1
            elif not c.passed:
                out.good_binned_out += 1
    return out
