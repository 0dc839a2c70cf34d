"""`lipon-hw sample ID` as text: a sample's genealogy (`genealogy.Lineage`) line by line.

A sample with no links and no cell tests prints as it always did (its film stack only);
one with a genealogy adds, in this order: up (its links to the roll), its films (its own,
or the ancestor's it carries), its screening (a cell's bins and metrics), down (a roll's
sheets, a sheet's cells per bin, or every cell with `--cells`), the cell tests of it and
its descendants, and the runs named above.
"""

from __future__ import annotations

from lipon_hw.genealogy import Lineage, SheetCells
from lipon_hw.store_schema import Layer, ScreenCell
from lipon_hw.store_screening import cell_id

#: metrics printed on a cell's line when `--cells` lists a sheet (all of them for a cell)
LISTED_METRICS = ("ocv_V", "r_bulk_ohm")


def lines(lin: Lineage) -> list[str]:
    s = lin.sample
    out = [f"sample {s.id} on {s.substrate or 'unknown substrate'}"]
    if lin.plain:
        return out + [_layer(la) for la in s.layers]
    if lin.ancestors:
        out.append("up:")
        out += [f"  {lk.child} {lk.relation} {lk.parent}  (run {lk.run_id})"
                for lk in lin.ancestors]
    if lin.stack:
        inherited = "" if lin.stack_of == s.id else f" (of {lin.stack_of})"
        out.append(f"films{inherited}:")
        out += [_layer(la) for la in lin.stack]
    if lin.screening:
        out.append("screening:")
        out += [_screened(c) for c in lin.screening]
    if lin.sheet is not None or lin.descendants:
        out.append("down:")
    if lin.sheet is not None:
        out += _sheet("cells", lin.sheet, "  ")
    if lin.descendants:
        for d in lin.descendants:
            indent = "  " * d.depth
            out.append(f"{indent}{d.id} {d.relation} {d.parent}  (run {d.run_id})")
            if d.sheet is not None:
                out += _sheet("cells", d.sheet, indent + "  ")
    if lin.tests:
        out.append("cell tests:")
        for t in lin.tests:
            bin_ = f" (bin {t.hard_bin} {t.hard_bin_name})" if t.hard_bin is not None else ""
            ce = t.mean_coulombic_efficiency
            out.append(f"  run {t.run_id} ch {t.channel:>2}  {t.sample_id}{bin_}  {t.status},"
                       f" {t.cycles} cycles, last discharge {_fmt(t.last_discharge_uAh, 2)} µAh,"
                       f" mean CE {_fmt(ce * 100 if ce is not None else None, 3)} %"
                       + (f"  {t.message}" if t.message else ""))
    out.append("runs:")
    out += [f"  {r.id:>4}  {r.kind or '-':<11} {r.status:<11} {r.name}"
            for r in lin.runs.values()]
    return out


def _layer(layer: Layer) -> str:
    ended = layer.properties.get("ended")
    partial = f"  PARTIAL: run {ended}" if layer.partial else ""
    return (f"  {layer.seq}. {layer.material:<8} {layer.thickness_nm:9.1f} nm  "
            f"at {_fmt(layer.rate_A_s, 2)} Å/s  ({layer.tool}, run {layer.run_id}){partial}")


def _screened(c: ScreenCell) -> str:
    metrics = ", ".join(f"{k} {_num(v)}" for k, v in c.metrics.items())
    contact = "" if c.contact == "ok" else f", contact {c.contact}"
    return (f"  run {c.run_id}: hard bin {c.hard_bin} {c.hard_bin_name}, soft bin {c.soft_bin}"
            f" {c.soft_bin_name} (rule {c.rule}); site {c.site}, touchdown {c.touchdown},"
            f" {c.attempts} attempt{'s' * (c.attempts != 1)}{contact}; {metrics}")


def _sheet(what: str, sc: SheetCells, indent: str) -> list[str]:
    sh = sc.sheet
    head = (f"{indent}{sc.cells} {what} of {sh.rows}×{sh.cols} at "
            f"{sh.pitch_x_mm:g}×{sh.pitch_y_mm:g} mm")
    if not sc.screenings:
        return [head + ", not screened"]
    out = [head + f", screened by run{'s' * (len(sc.screenings) > 1)} "
                  f"{', '.join(map(str, sc.screenings))}; bins of run {sc.screenings[-1]}:"]
    out += [f"{indent}  bin {b.hard_bin:>3} {b.name:<16} {b.cells:>5}" for b in sc.bins]
    for c in sc.listed or ():
        metrics = ", ".join(f"{k} {_num(c.metrics[k])}" for k in LISTED_METRICS
                            if k in c.metrics)
        out.append(f"{indent}  {cell_id(c.sheet_id, c.row, c.col)}  hard {c.hard_bin:>3}"
                   f" {c.hard_bin_name:<16} soft {c.soft_bin:>3} {c.soft_bin_name:<16}"
                   f" {metrics}")
    return out


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
