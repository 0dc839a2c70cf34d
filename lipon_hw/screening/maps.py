"""A screened sheet's maps as PNG files: a heat map per metric and a bin map.

Each map shows the sheet as it lies on the chuck: rows down, columns across, one square
per cell, axes in mm from cell (1, 1)'s centre with the column and row numbers on the
opposite axes. A heat map colours each cell by one metric; its colour limits are the 2nd
and 98th percentiles of the validly tested cells, pulled in to the quartiles ± 1.5 IQR
(`colour_limits`), so shorts (OCV ≈ 0 V), opens or a few per cent of thin cells do not
flatten the gradient of the rest — the colour bar says so and points its ends where
cells lie beyond; cells far beyond it (further than the range is wide) carry a triangle
pointing down or up. Cells without a value are light grey, tester faults (no contact) dark
grey and hatched, each named in the legend with its count. The bin map colours each cell
by its hard bin (passing bins green, tester faults hatched grey) and writes the soft bin
number into every cell not in a passing bin; its legends name each bin with its count.

Figures are drawn on matplotlib's Agg canvas without pyplot, as `analysis.plots` does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from lipon_hw.screening import metrics as metric_names
from lipon_hw.screening.tables import Bin, hard_bins
from lipon_hw.store_schema import ScreenCell, Sheet

DPI = 120
PERCENTILES = (2.0, 98.0)
FENCE = 1.5  # Tukey's fences: quartiles ± 1.5 interquartile ranges
NO_VALUE = "#d9d9d9"
FAULT = "#7f7f7f"
FAULT_HATCH = "xxx"
PASS_COLOURS = ("#2ca02c", "#98df8a", "#1b7a1b")
FAIL_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#1f77b4", "#8c564b", "#e377c2",
                "#bcbd22", "#17becf", "#ff9896", "#c5b0d5", "#c49c94", "#aec7e8")
_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"))


def _map_size_in(sheet: Sheet) -> tuple[float, float]:
    """The map's own width and height in inches: 7.5 wide, or 9 high for a tall sheet."""
    aspect = (sheet.rows * sheet.pitch_y_mm) / (sheet.cols * sheet.pitch_x_mm)
    width = 7.5 if aspect * 7.5 <= 9.0 else max(9.0 / aspect, 2.5)
    return width, float(np.clip(width * aspect, 2.5, 9.0))


def _cell_pt(sheet: Sheet) -> float:
    """About how wide a cell is drawn, in points."""
    width, height = _map_size_in(sheet)
    return 72 * min(width / sheet.cols, height / sheet.rows)


def _figure(sheet: Sheet, extra_width_in: float = 2.2) -> Figure:
    width, height = _map_size_in(sheet)
    fig = Figure(figsize=(max(width + extra_width_in, 7.0), height + 1.6),
                 layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    fig.clear()
    return path


def _extent(sheet: Sheet) -> tuple[float, float, float, float]:
    px, py = sheet.pitch_x_mm, sheet.pitch_y_mm
    return -px / 2, (sheet.cols - 0.5) * px, (sheet.rows - 0.5) * py, -py / 2


def _sheet_axes(fig: Figure, sheet: Sheet):
    ax = fig.add_subplot()
    ax.set_xlabel("x / mm (across the web)")
    ax.set_ylabel("y / mm (down the web)")
    px, py = sheet.pitch_x_mm, sheet.pitch_y_mm
    top = ax.secondary_xaxis("top", functions=(lambda x: x / px + 1, lambda c: (c - 1) * px))
    top.set_xlabel("column")
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    right = ax.secondary_yaxis("right", functions=(lambda y: y / py + 1,
                                                   lambda r: (r - 1) * py))
    right.set_ylabel("row")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    return ax


def _cell_patch(ax, sheet: Sheet, c: ScreenCell, face: str, hatch: str | None) -> None:
    px, py = sheet.pitch_x_mm, sheet.pitch_y_mm
    ax.add_patch(Rectangle(((c.col - 1.5) * px, (c.row - 1.5) * py), px, py, facecolor=face,
                           hatch=hatch, edgecolor="#404040", linewidth=0.0))


def _scale(unit: str, lo: float, hi: float, median: float) -> tuple[float, float, str]:
    """(reference, factor, unit) for the colour bar: values are drawn as (v − reference) /
    factor. A prefix for units that span decades (Ω, A, F, and V), so the bar reads 1.2 kΩ,
    not 1200; a range too narrow for its values' digits (OCVs a few µV apart at 4.2 V) is
    drawn as the difference from a round reference, in the prefix its width needs."""
    if not np.isfinite([lo, hi, median]).all():
        return 0.0, 1.0, unit
    ref = 0.0
    if hi - lo < 1e-4 * max(abs(lo), abs(hi)):
        ref = float(f"{median:.4g}")
    if unit not in ("Ω", "A", "F", "V"):
        return ref, 1.0, unit
    big = max(abs(lo - ref), abs(hi - ref)) if ref == 0.0 else hi - lo
    for factor, prefix in _PREFIXES:
        if big >= factor:
            return ref, factor, prefix + unit
    return ref, 1.0, unit


def _median_text(values: np.ndarray, unit: str) -> str:
    median = float(np.median(values))
    _ref, factor, shown = _scale(unit, 0.0, median, 0.0)  # the prefix of its size
    return f"median {median / factor:.6g} {shown}".rstrip()


def heat_map_figure(sheet: Sheet, cells: Sequence[ScreenCell], name: str,
                    faults: Iterable[int] = (), run_id: int | None = None) -> Figure:
    """The sheet coloured by metric `name`; `faults`: the tester-fault soft bins."""
    metric = metric_names.parse(name)
    faults = set(faults)
    grid = np.full((sheet.rows, sheet.cols), np.nan)
    fault_cells = [c for c in cells if c.soft_bin in faults]
    for c in cells:
        v = c.metrics.get(name)
        if c.soft_bin not in faults and isinstance(v, (int, float)) and np.isfinite(v):
            grid[c.row - 1, c.col - 1] = v
    values = grid[np.isfinite(grid)]
    n_none = sheet.rows * sheet.cols - values.size - len(fault_cells)
    lo, hi = colour_limits(values)
    ref, factor, unit = _scale(metric.unit, lo, hi,
                               float(np.median(values)) if values.size else 0.0)
    below, above = int((values < lo).sum()), int((values > hi).sum())
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max",
              (True, True): "both"}[(below > 0, above > 0)]

    fig = _figure(sheet)
    ax = _sheet_axes(fig, sheet)
    cmap = colormaps["viridis"].with_extremes(bad=NO_VALUE)
    image = ax.imshow(np.ma.masked_invalid((grid - ref) / factor), cmap=cmap,
                      vmin=(lo - ref) / factor, vmax=(hi - ref) / factor,
                      extent=_extent(sheet), origin="upper",
                      interpolation="nearest")
    for c in fault_cells:
        _cell_patch(ax, sheet, c, FAULT, FAULT_HATCH)
    quantity = f"{metric.quantity} − {ref:g} {metric.unit}".rstrip() if ref else \
        metric.quantity
    label = f"{quantity} / {unit}" if unit else quantity
    bar = fig.colorbar(image, ax=ax, extend=extend, shrink=0.9, pad=0.02)
    if hasattr(bar.formatter, "set_useOffset"):
        bar.formatter.set_useOffset(False)  # no "1e−6+4.19999" above the bar
    bar.set_label(f"{label}\ncolours: {_ordinal(PERCENTILES[0])}–{_ordinal(PERCENTILES[1])} "
                  f"percentile, within the quartiles ± {FENCE:g} IQR\n({_cells(below)} below, "
                  f"{above} above)")
    handles = _mark_off_scale(ax, grid, lo, hi, sheet)
    if n_none:
        handles.append(Patch(facecolor=NO_VALUE, label=f"no value ({_cells(n_none)})"))
    if fault_cells:
        handles.append(Patch(facecolor=FAULT, hatch=FAULT_HATCH, edgecolor="#404040",
                             label=f"tester fault: no contact ({_cells(len(fault_cells))})"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles),
                   frameon=False)
    median = _median_text(values, metric.unit) if values.size \
        else "no values"
    run = f"run {run_id}, " if run_id is not None else ""
    fig.suptitle(f"{sheet.id}: {metric.quantity}\n{run}{values.size} cells with a value, "
                 f"{median}", fontsize=11)
    return fig


def colour_limits(values: np.ndarray) -> tuple[float, float]:
    """A heat map's colour range: the 2nd and 98th percentiles, pulled in to Tukey's fences
    (quartiles ± 1.5 IQR) when the defects are more than 2 % on one side (a sheet with 3 %
    thin-electrolyte cells would otherwise spend most of its colours on them)."""
    if not values.size:
        return 0.0, 1.0
    p_lo, q1, q3, p_hi = np.percentile(values, (PERCENTILES[0], 25, 75, PERCENTILES[1]))
    iqr = q3 - q1
    lo, hi = max(p_lo, q1 - FENCE * iqr), min(p_hi, q3 + FENCE * iqr)
    if hi <= lo:
        lo, hi = lo - max(abs(lo) * 1e-3, 1e-12), hi + max(abs(hi) * 1e-3, 1e-12)
    return float(lo), float(hi)


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def _ordinal(p: float) -> str:
    n = f"{p:g}"
    if not n.isdigit():
        return f"{n}th"
    k = int(n)
    return n + ("th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th"))


def _mark_off_scale(ax, grid: np.ndarray, lo: float, hi: float, sheet: Sheet) -> list:
    """Triangles on the cells far beyond the colour range (further than the range is
    wide): a short or an open, which would otherwise look like the range's end colour.
    Returns their legend entries."""
    span = hi - lo
    handles = []
    size = float(np.clip((0.45 * _cell_pt(sheet)) ** 2, 10, 120))
    for sel, marker, words in ((grid < lo - span, "v", "far below"),
                               (grid > hi + span, "^", "far above")):
        rows, cols = np.nonzero(sel)
        if rows.size:
            ax.scatter(cols * sheet.pitch_x_mm, rows * sheet.pitch_y_mm, s=size,
                       marker=marker, facecolor="white", edgecolor="black", linewidth=0.8)
            handles.append(Line2D([], [], linestyle="none", marker=marker,
                                  markerfacecolor="white", markeredgecolor="black",
                                  label=f"{words} the colour range ({_cells(rows.size)})"))
    return handles


def heat_map(sheet: Sheet, cells: Sequence[ScreenCell], name: str, path: Path,
             faults: Iterable[int] = (), run_id: int | None = None) -> Path:
    return _save(heat_map_figure(sheet, cells, name, faults, run_id), path)


def bin_map_figure(sheet: Sheet, cells: Sequence[ScreenCell], defs: Sequence[Bin],
                   run_id: int | None = None) -> Figure:
    """The sheet coloured by hard bin, soft bin numbers in the cells that did not pass."""
    hards = hard_bins(defs, cells)
    colour: dict[int, str] = {}
    passing, failing = iter(PASS_COLOURS * 4), iter(FAIL_COLOURS * 4)
    for h, _name, passed, fault in hards:
        colour[h] = FAULT if fault else next(passing) if passed else next(failing)
    index = {h: i for i, (h, *_rest) in enumerate(hards)}
    grid = np.full((sheet.rows, sheet.cols), np.nan)
    for c in cells:
        grid[c.row - 1, c.col - 1] = index[c.hard_bin]
    cmap = ListedColormap([colour[h] for h, *_ in hards] or ["white"]).with_extremes(
        bad="white")
    norm = BoundaryNorm(np.arange(len(hards) + 1) - 0.5, max(len(hards), 1))

    fig = _figure(sheet, extra_width_in=3.2)
    ax = _sheet_axes(fig, sheet)
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, extent=_extent(sheet),
              origin="upper", interpolation="nearest")
    fault_bins = {b.soft_bin for b in defs if b.tester_fault}
    passing_bins = {h for h, _n, passed, _f in hards if passed}
    size = float(np.clip(0.5 * _cell_pt(sheet), 4.5, 11))
    px, py = sheet.pitch_x_mm, sheet.pitch_y_mm
    for c in cells:
        if c.soft_bin in fault_bins:
            _cell_patch(ax, sheet, c, FAULT, FAULT_HATCH)
        if c.hard_bin not in passing_bins:
            ax.text((c.col - 1) * px, (c.row - 1) * py, str(c.soft_bin), ha="center",
                    va="center", fontsize=size, color="white", fontweight="bold")
    hard_count = Counter(c.hard_bin for c in cells)
    soft_count = Counter(c.soft_bin for c in cells)
    n = max(len(cells), 1)
    hard_handles = [Patch(facecolor=colour[h], hatch=FAULT_HATCH if fault else None,
                          edgecolor="#404040",
                          label=f"{h} {name}: {hard_count[h]} ({100 * hard_count[h] / n:.1f} %)")
                    for h, name, _p, fault in hards]
    missing = sheet.rows * sheet.cols - len(cells)
    if missing:
        hard_handles.append(Patch(facecolor="white", edgecolor="#404040",
                                  label=f"not measured: {missing}"))
    soft_handles = [Patch(facecolor=colour[b.hard_bin], edgecolor="#404040",
                          hatch=FAULT_HATCH if b.soft_bin in fault_bins else None,
                          label=f"{b.soft_bin} {b.name}: {soft_count[b.soft_bin]}")
                    for b in defs]
    blank = Patch(facecolor="none", edgecolor="none")
    legend = fig.legend(handles=[*hard_handles, blank, blank, *soft_handles],
                        labels=[*(h.get_label() for h in hard_handles), "",
                                "soft bin (number in the cell)",
                                *(h.get_label() for h in soft_handles)],
                        title="hard bin", loc="outside right center", frameon=False)
    legend.get_title().set_fontweight("bold")
    legend.get_texts()[len(hard_handles) + 1].set_fontweight("bold")
    passed = sum(1 for c in cells if c.passed)
    valid = sum(1 for c in cells if c.soft_bin not in fault_bins)
    run = f"run {run_id}, " if run_id is not None else ""
    fig.suptitle(f"{sheet.id}: bin map\n{run}yield {100 * passed / n:.1f} % of {len(cells)} "
                 f"measured, {100 * passed / max(valid, 1):.1f} % of {valid} validly tested",
                 fontsize=11)
    return fig


def bin_map(sheet: Sheet, cells: Sequence[ScreenCell], defs: Sequence[Bin], path: Path,
            run_id: int | None = None) -> Path:
    return _save(bin_map_figure(sheet, cells, defs, run_id), path)
