"""What a cell-test run leaves behind: conductivities, exports and plots.

- `film_figures`: the film's ionic conductivity from the first impedance spectrum of a
  channel (σ = t/(R·A), R the fastest (R‖CPE) arc) with its relative uncertainty — or
  None and `ionic_conductivity_note` saying why the spectrum cannot resolve the film's
  arc — and its electronic conductivity from
  a DC polarization hold, with the thickness and area they were computed with.
- `export_cell_run`: one file per channel (the Battery Data Format holds one cell per
  file): BDF CSV or Parquet, or plain CSV/Parquet of the samples; impedance spectra as
  CSV with frequency, real and imaginary impedance; and each channel's cycles as the store
  keeps them (capacities, energies, coulombic efficiency, retention).
- `write_cell_plots`: per channel, voltage vs capacity for a few cycles, capacity and
  coulombic efficiency per cycle, Nyquist with its fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lipon_hw.analysis.bdf import BdfMetadata, write_bdf, write_spectrum_csv
from lipon_hw.analysis.cycles import CycleStats
from lipon_hw.analysis.dcpol import analyze_dc_polarization
from lipon_hw.analysis.eis import film_conductivity_S_cm, fit_spectrum
from lipon_hw.errors import InputError, LiponError, OutputError
from lipon_hw.safe_output import atomic_file, check_not_store, check_outputs, protected_paths
from lipon_hw.store import Store

FORMATS = ("bdf", "bdf-parquet", "csv", "parquet")


def film_geometry(store: Store, plan) -> tuple[float | None, float | None]:
    """(LiPON thickness nm, area cm²) as the host knows them: the protocol's cell, else
    the sample's LiPON layers."""
    thickness = plan.cell.lipon_thickness_nm
    if thickness is None and plan.sample:
        try:
            layers = store.film_stack(plan.sample)
        except LiponError:
            layers = []
        total = sum(x.thickness_nm for x in layers if x.material in ("LiPON", "Li3PO4"))
        thickness = total or None
    return thickness, plan.cell.area_cm2


def film_figures(store: Store, run_id: int, plan) -> dict:
    """Conductivities of one channel's film from what the run recorded (empty if none)."""
    thickness, area = film_geometry(store, plan)
    out: dict = {}
    spectrum = first_spectrum(store, run_id, plan.channel)
    if spectrum is not None:
        fit = spectrum_fit(*spectrum)
        if fit is not None:
            # an arc the spectrum does not resolve gives no number, but a reason
            resolved = fit.film_resolved
            out["film_resistance_ohm"] = fit.film_resistance_ohm if resolved else None
            out["ionic_conductivity_rel_uncertainty"] = \
                fit.film_R_rel_uncertainty if resolved else None
            if not resolved:
                out["ionic_conductivity_note"] = fit.film_note
            if thickness and area:
                out["ionic_conductivity_S_cm"] = film_conductivity_S_cm(fit, thickness, area)
    hold = _dc_polarization(store, run_id, plan)
    if hold is not None and thickness and area:
        t, i, v = hold
        out["electronic_conductivity_S_cm"] = analyze_dc_polarization(
            t - t[0], i, v, thickness, area).sigma_e_S_cm
    if out:
        out.update(film_thickness_nm=thickness, area_cm2=area)
    return out


def first_spectrum(store: Store, run_id: int, channel: int):
    """(f_Hz, Z) of the channel's first impedance step, or None."""
    rows = store.spectra(run_id, channel)
    if not rows:
        return None
    first = [r for r in rows if r[2] == rows[0][2]]
    return np.array([r[3] for r in first]), np.array([complex(r[4], r[5]) for r in first])


def spectrum_fit(f_Hz, z_ohm):
    """The (R‖CPE) fit of a spectrum, or None if it cannot be fitted. The fits of the
    last few spectra are kept: a run's summary and its plots fit the same first spectra."""
    f, z = np.asarray(f_Hz), np.asarray(z_ohm)
    key = (f.dtype.str, f.tobytes(), z.dtype.str, z.tobytes())
    if key in _FITS:
        return _FITS[key]
    try:
        fit = fit_spectrum(f_Hz, z_ohm)
    except InputError:
        fit = None
    keep_fits([(key, fit)])
    return fit


FITS_KEPT = 32
_FITS: dict[tuple, object] = {}


def kept_fits() -> list[tuple]:
    """The fits kept in this process (`spectrum_fit`), for another to keep (`keep_fits`):
    a worker process sends those of its channels to the run's, which plots them."""
    return list(_FITS.items())


def keep_fits(items) -> None:
    """Fits (`kept_fits`' items) kept as `spectrum_fit` keeps its own, the oldest let go."""
    for key, fit in items:
        _FITS.pop(key, None)
        if len(_FITS) >= FITS_KEPT:
            del _FITS[next(iter(_FITS))]
        _FITS[key] = fit


def _dc_polarization(store: Store, run_id: int, plan):
    steps = {i for i, s in enumerate(plan.program.steps) if s.kind == "dc_polarization"}
    if not steps:
        return None
    rows = [r for r in store.cell_samples(run_id, plan.channel) if r[5] in steps]
    if len(rows) < 10:
        return None
    first = rows[0][4]
    rows = [r for r in rows if r[4] == first]
    t, v, i = (np.array(c) for c in zip(*[(r[0], r[1], r[2]) for r in rows], strict=True))
    return t, i, float(np.median(v))


# --- exports -------------------------------------------------------------------------------
def export_cell_run(store: Store, run_id: int, fmt: str, out_dir: Path | str,
                    force: bool = False) -> list[Path]:
    """Every channel's samples (and spectra) under `out_dir`; returns the files. Every file
    is checked before the first is written: none may be a file of the store or anything but
    a regular file, nor exist unless `force`; each is written whole or not at all."""
    if fmt not in FORMATS:
        raise InputError(f"format {fmt} is unknown for a cell test (use {', '.join(FORMATS)})")
    run = store.run(run_id)
    out = Path(out_dir).expanduser()
    protected = protected_paths(store.data_dir, store.path)
    check_not_store(out, protected)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: a cell test exports one file per channel, so --out "
                         "must be a directory")
    ext = "parquet" if fmt == "bdf-parquet" else "csv"
    leads = channel_leads(run)
    plan = []
    for ch in store.channels(run_id):
        n = ch.channel
        data = out / (f"run{run_id}-ch{n}.bdf.{ext}" if fmt.startswith("bdf")
                      else f"run{run_id}-ch{n}.{fmt}")
        spectrum = store.spectra(run_id, n)
        cycles = store.cycles(run_id, n)
        plan.append((ch, data, spectrum, out / f"run{run_id}-ch{n}-eis.csv", cycles,
                     out / f"run{run_id}-ch{n}-cycles.csv"))
    outputs = [p[1] for p in plan]
    if fmt.startswith("bdf"):
        outputs += [Path(f"{data}.json") for data in outputs]
    outputs += [p[3] for p in plan if p[2]] + [p[5] for p in plan if p[4]]
    check_outputs(outputs, protected, force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {out} cannot be created ({exc.strerror})") from None
    files = []
    for ch, data, spectrum, eis, cycles, cycles_csv in plan:
        n = ch.channel
        rows = store.cell_samples(run_id, n)
        if fmt.startswith("bdf"):
            meta = BdfMetadata(cell_name=f"{ch.sample_id or run.name} channel {n}",
                               unix_start_s=run.started_at, run_id=run_id,
                               extra={"instrument": ch.instrument, "channel": n,
                                      "protocol": run.sequence_path, "status": ch.status})
            steps = leads.get(n)
            files.append(_written(data, lambda d=data, r=rows, m=meta, k=steps:
                                  write_bdf(r, d, m, fmt=ext, leads=k)))
        else:
            with atomic_file(data) as tmp:
                _plain(rows, tmp, fmt)
            files.append(data)
        if spectrum:
            files.append(_written(eis, lambda e=eis, s=spectrum: write_spectrum_csv(
                [(r[0], r[3], r[4], r[5], r[1], r[2]) for r in s], e)))
        if cycles:
            files.append(_written(cycles_csv, lambda p=cycles_csv, c=cycles:
                                  _cycles_csv(c, p)))
    return files


CYCLE_COLUMNS = ("cycle", "charge_Ah", "discharge_Ah", "charge_Wh", "discharge_Wh",
                 "coulombic_efficiency", "retention", "t_end_s")


def _cycles_csv(cycles: list[dict], path: Path) -> Path:
    """The store's per-cycle figures, as they are (an empty cell for None)."""
    import csv

    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CYCLE_COLUMNS)
        writer.writerows([("" if c.get(k) is None else c[k]) for k in CYCLE_COLUMNS]
                         for c in cycles)
    return path


def channel_leads(run) -> dict[int, dict[int, float]]:
    """Channel → (step id → measurement interval) from the run's stored protocol, so that
    exports and plots count the open circuit between steps as the engine did; {} when
    the protocol no longer loads (an older run): then every interval is a trapezoid."""
    from lipon_hw.celltest import protocol as pr
    from lipon_hw.station import load_station

    try:
        proto = pr.load_protocol(run.sequence_path, load_station(text=run.station_text),
                                 text=run.sequence_text)
    except LiponError:
        return {}
    return {plan.channel: pr.leads(plan.program) for plan in proto.channels}


def _written(path: Path, write) -> Path:
    """`write()` (which writes `path` whole, through a temporary file), its OSError one
    sentence."""
    try:
        return write()
    except OSError as exc:
        raise OutputError(f"{path} could not be written ({exc.strerror or exc}); nothing "
                          "was left under that name") from None


def _plain(rows, path: Path, fmt: str) -> Path:
    from lipon_hw.store import CELL_SAMPLE_COLUMNS

    if fmt == "csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(CELL_SAMPLE_COLUMNS)
            writer.writerows(rows)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(zip(*rows, strict=True)) or [[] for _ in CELL_SAMPLE_COLUMNS]
    pq.write_table(pa.table(dict(zip(CELL_SAMPLE_COLUMNS, cols, strict=True))), path)
    return path


# --- plots ---------------------------------------------------------------------------------
def write_cell_plots(store: Store, run_id: int, out_dir: Path | str,
                     max_channels: int | None = 16) -> list[Path]:
    from lipon_hw.analysis.plots import plot_capacity_ce, plot_nyquist, plot_voltage_capacity

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    leads = channel_leads(store.run(run_id))
    for ch in store.channels(run_id)[:max_channels]:
        n = ch.channel
        stats = [CycleStats(**s) for s in store.cycles(run_id, n)]
        if stats:
            files.append(plot_capacity_ce(stats, out / f"ch{n}-capacity-ce.png",
                                          title=f"run {run_id} channel {n}"))
            picked = _spread([s.cycle for s in stats])
            rows = store.cell_samples_of_cycles(run_id, n, picked)
            if rows:
                t, v, i, c, step, step_id = (np.array(x) for x in zip(
                    *[r[:6] for r in rows], strict=True))
                files.append(plot_voltage_capacity(
                    t, v, i, c, out / f"ch{n}-voltage-capacity.png", step=step,
                    lead_s=leads.get(n), step_id=step_id))
        spectrum = first_spectrum(store, run_id, n)
        if spectrum is not None:
            files.append(plot_nyquist(*spectrum, out / f"ch{n}-nyquist.png",
                                      fit=spectrum_fit(*spectrum)))
    return files


def _spread(cycles: list[int], k: int = 6) -> list[int]:
    if len(cycles) <= k:
        return cycles
    idx = np.unique(np.linspace(0, len(cycles) - 1, k).round().astype(int))
    return [cycles[i] for i in idx]
