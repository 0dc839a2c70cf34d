"""EIS fit benchmark and validation: about 100 impedance spectra of the simulated cells
fitted by `lipon_hw.analysis.eis.fit_spectrum`, their CPU time, and how far the film's
resistance is from the simulated cell's; with `--against OLD.json` (this script's JSON line
from another checkout) what changed: the tail kind, the film verdict, the film's and every
arc's R, the misfit.

The spectra (all seeded: the same every run), on the EIS technique's grid (3 MHz → 0.1 Hz,
10 a decade, 76 points):
- the cycling bench's LNMO channels, first spectrum, through the full path (1 cycle; the
  MethodSCRIPT emulator's own noise);
- LNMO and Cu/LiPON/Cu cells every 10 °C from −30 to 80 °C with the emulator's 0.3 % noise
  (the draws of tests/test_eis_fit_range.py), clean at five temperatures, and with 1 %
  multiplicative complex noise (three draws) at those five;
- Li/LiPON/Cu at −20, 25 and 60 °C (0.3 % and 1 %); LCO/LiPON/Li and anodeless LCO at 0,
  25 and 60 °C;
- one arc (n_arcs=1: three cells and a ZARC + CPE circuit), no tail (blocking=False: the
  blocking cell's arcs alone, a two-arc circuit), three arcs (n_arcs=3: four cells and a
  three-arc circuit with a CPE tail).

Use it when the fit changes: run it in both checkouts (`python bench/eis_fits.py >
old.log`, keep the last line as old.json), then `python bench/eis_fits.py --against
old.json`. The fit on the project's Levenberg–Marquardt (`lipon_hw/analysis/lsq.py`)
against scipy's least_squares before it (b4c5ff1): 18.2 → 4.4 s of CPU; 4 tail kinds
changed, where both tails fit alike; the films resolved by both within 0.17 %; one verdict
changed (a three-arc Li/LiPON/Cu spectrum now resolved, with a lower misfit); no misfit
worse by more than 5.7e-6.

    python bench/eis_fits.py [--against OLD.json] [--no-bench-channels]

Prints a row per spectrum, the totals, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lipon_hw.analysis.eis import fit_spectrum
from lipon_hw.errors import InputError
from lipon_hw.sim.cells.factories import cell_from_spec
from lipon_hw.sim.cells.impedance import cpe, zarc
from lipon_hw.sim.emulators.methodscript import EIS_NOISE
from lipon_hw.techniques import EIS

GRID = np.array(EIS.per_decade(3.0e6, 0.1, 10).frequencies_Hz, dtype=float)
TEMPERATURES_C = range(-30, 81, 10)
FIVE_C = (-30, 0, 25, 50, 80)


class Corpus:
    """The spectra, in order: (name, f_Hz, z_ohm, n_arcs, blocking, true film R or None)."""

    def __init__(self) -> None:
        self.spectra: list[tuple] = []

    def add(self, name: str, z, n_arcs: int = 2, blocking: bool = True, truth=None,
            f=GRID) -> None:
        self.spectra.append((name, np.asarray(f, dtype=float), np.asarray(z, dtype=complex),
                             n_arcs, blocking, truth))


def cell(kind: str, temperature_C: int):
    return cell_from_spec({"kind": kind, "temperature_C": temperature_C})


def impedance(c) -> np.ndarray:
    return np.array([c.impedance_ohm(0.0, float(f)) for f in GRID])


def emulator_noise(z: np.ndarray, seed: int) -> np.ndarray:
    """The MethodSCRIPT emulator's: Gaussian on each part, 0.3 % of |Z|."""
    draw = np.random.default_rng(seed).normal(0.0, EIS_NOISE * np.abs(z), (2, len(z)))
    return z + draw[0] + 1j * draw[1]


def percent_noise(z: np.ndarray, seed: int) -> np.ndarray:
    """1 % multiplicative complex noise."""
    rng = np.random.default_rng(seed)
    return z * (1 + 0.01 * (rng.standard_normal(len(z)) + 1j * rng.standard_normal(len(z))))


def bench_channels(corpus: Corpus, channels: int = 8) -> None:
    """The first spectrum of each channel of a 1-cycle run of the cycling bench's
    protocol, through the full path."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cycling

    from lipon_hw.celltest.results import first_spectrum
    from lipon_hw.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        run = cycling.start_cycling(str(cycling.protocol(1, channels, Path(tmp))),
                                    Path(tmp) / "data", workers=1)
        store = Store(Path(tmp) / "data", read_only=True)
        try:
            for ch in range(1, channels + 1):
                f, z = first_spectrum(store, run.run_id, ch)
                corpus.add(f"bench_lnmo_ch{ch}", z, f=f)
        finally:
            store.close()


def build(with_bench: bool) -> Corpus:
    corpus = Corpus()
    if with_bench:
        bench_channels(corpus)
    for kind in ("lnmo", "blocking"):
        for t in TEMPERATURES_C:
            c = cell(kind, t)
            seed = 1000 + 100 * ("blocking", "lnmo").index(kind) + t
            corpus.add(f"{kind}_{t:+d}C_0.3pct", emulator_noise(impedance(c), seed),
                       truth=c.film_resistance_ohm())
        for t in FIVE_C:
            c = cell(kind, t)
            z = impedance(c)
            corpus.add(f"{kind}_{t:+d}C_clean", z, truth=c.film_resistance_ohm())
            for seed in (11, 12, 13):
                s = seed + 100 * (kind == "blocking") + 1000 * (t + 30)
                corpus.add(f"{kind}_{t:+d}C_1pct_s{seed}", percent_noise(z, s),
                           truth=c.film_resistance_ohm())
    for t in (-20, 25, 60):
        c = cell("plating", t)
        z = impedance(c)
        corpus.add(f"plating_{t:+d}C_0.3pct", emulator_noise(z, 3000 + t),
                   truth=c.film_resistance_ohm())
        corpus.add(f"plating_{t:+d}C_1pct", percent_noise(z, 3100 + t),
                   truth=c.film_resistance_ohm())
    for kind in ("lco", "lco_anodeless"):
        for t in (0, 25, 60):
            c = cell(kind, t)
            seed = 4000 + 100 * (kind == "lco_anodeless") + t
            corpus.add(f"{kind}_{t:+d}C_0.3pct", emulator_noise(impedance(c), seed),
                       truth=c.film_resistance_ohm())
    w = 2 * np.pi * GRID
    for kind, seed in (("blocking", 5001), ("lnmo", 5002), ("plating", 5003)):
        c = cell(kind, 25)
        corpus.add(f"{kind}_+25C_0.3pct_1arc", emulator_noise(impedance(c), seed), n_arcs=1,
                   truth=c.film_resistance_ohm())
    one = np.array([20.0 + zarc(2000.0, 1e-5, 0.9, x) + cpe(2e-6, 0.88, x) for x in w])
    corpus.add("circuit_1arc_cpe_clean", one, n_arcs=1, truth=2000.0)
    corpus.add("circuit_1arc_cpe_1pct", percent_noise(one, 31), n_arcs=1, truth=2000.0)
    for t in (-10, 25, 60):  # the blocking cell's own arcs, without the double layer
        c = cell("blocking", t)
        circuit = c._circuit(-1, frozenset())
        film, interface, _ = circuit.branches
        z = np.array([circuit.r_series_ohm + zarc(film.R_ohm, film.tau_s, film.alpha, x) +
                      zarc(interface.R_ohm, interface.tau_s, interface.alpha, x) for x in w])
        corpus.add(f"blocking_{t:+d}C_0.3pct_notail", emulator_noise(z, 6000 + t),
                   blocking=False, truth=c.film_resistance_ohm())
    two = np.array([20.0 + zarc(1000.0, 1e-6, 0.95, x) + zarc(2000.0, 1e-2, 0.8, x)
                    for x in w])
    corpus.add("circuit_2arc_clean_notail", two, blocking=False, truth=1000.0)
    for seed in (41, 42):
        corpus.add(f"circuit_2arc_1pct_s{seed}_notail", percent_noise(two, seed),
                   blocking=False, truth=1000.0)
    three = np.array([20.0 + zarc(1000.0, 1e-6, 0.95, x) + zarc(300.0, 1e-4, 0.85, x) +
                      zarc(2000.0, 1e-2, 0.8, x) + cpe(1e-5, 0.9, x) for x in w])
    corpus.add("circuit_3arc_cpe_clean", three, n_arcs=3, truth=1000.0)
    for seed in (51, 52):
        corpus.add(f"circuit_3arc_cpe_1pct_s{seed}", percent_noise(three, seed), n_arcs=3,
                   truth=1000.0)
    for kind, t, seed in (("lnmo", 25, 7001), ("lnmo", 0, 7002), ("blocking", 25, 7003),
                          ("plating", 25, 7004)):
        c = cell(kind, t)
        corpus.add(f"{kind}_{t:+d}C_0.3pct_3arc", emulator_noise(impedance(c), seed),
                   n_arcs=3, truth=c.film_resistance_ohm())
    return corpus


def fit_all(corpus: Corpus) -> list[dict]:
    fit_spectrum(*corpus.spectra[0][1:3])  # the first fit's imports are not counted
    out = []
    for name, f, z, n_arcs, blocking, truth in corpus.spectra:
        start = time.process_time()
        try:
            fit = fit_spectrum(f, z, n_arcs=n_arcs, blocking=blocking)
        except InputError as exc:
            out.append({"name": name, "error": str(exc),
                        "cpu_s": time.process_time() - start})
            continue
        cpu = time.process_time() - start
        out.append({
            "name": name, "cpu_s": cpu, "tail": type(fit.tail).__name__ if fit.tail else None,
            "film_resolved": fit.film_resolved, "film_R_ohm": fit.film.R_ohm,
            "true_film_R_ohm": truth, "arcs_R_ohm": [a.R_ohm for a in fit.arcs],
            "rms_relative": fit.rms_relative, "converged": fit.success,
            "film_R_rel_uncertainty": fit.film_R_rel_uncertainty})
    return out


def changes(old: list[dict], new: list[dict]) -> dict:
    """What differs between two runs' fits, spectrum by spectrum, and in sum."""
    before = {r["name"]: r for r in old}
    rows, tails, verdicts, worst_film, worst_rms = [], 0, 0, 0.0, 0.0
    for r in new:
        o = before.get(r["name"])
        if o is None or "error" in o or "error" in r:
            if o is None or ("error" in o) != ("error" in r):
                rows.append(f"{r['name']}: {'new' if o is None else 'error changed'}")
            continue
        said = []
        if o["tail"] != r["tail"]:
            tails += 1
            said.append(f"tail {o['tail']} -> {r['tail']}")
        if o["film_resolved"] != r["film_resolved"]:
            verdicts += 1
            said.append(f"resolved {o['film_resolved']} -> {r['film_resolved']}")
        film = abs(r["film_R_ohm"] / o["film_R_ohm"] - 1)
        if o["film_resolved"] and r["film_resolved"]:
            worst_film = max(worst_film, film)
        rms = r["rms_relative"] - o["rms_relative"]
        worst_rms = max(worst_rms, rms)
        if film > 1e-4:
            said.append(f"film R {o['film_R_ohm']:.6g} -> {r['film_R_ohm']:.6g} ({film:.1e})")
        if rms > 1e-6:
            said.append(f"misfit {o['rms_relative']:.5%} -> {r['rms_relative']:.5%}")
        if said:
            rows.append(f"{r['name']}: " + "; ".join(said))
    return {"rows": rows, "tail_changes": tails, "verdict_changes": verdicts,
            "worst_resolved_film_R_change": worst_film, "worst_misfit_increase": worst_rms,
            "cpu_s_before": sum(r["cpu_s"] for r in old)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", type=Path, help="the JSON line of an earlier run")
    ap.add_argument("--no-bench-channels", action="store_true",
                    help="leave out the cycling bench's spectra (no full-path run)")
    args = ap.parse_args()
    corpus = build(not args.no_bench_channels)
    fits = fit_all(corpus)
    for r in fits:
        if "error" in r:
            print(f"{r['name']:<34} error: {r['error']}")
            continue
        off = "" if not r["true_film_R_ohm"] or not r["film_resolved"] else \
            f"{r['film_R_ohm'] / r['true_film_R_ohm'] - 1:+8.2%}"
        print(f"{r['name']:<34} {r['cpu_s']:6.3f} s  {str(r['tail']):<14} "
              f"{'resolved' if r['film_resolved'] else 'not resolved':<12} "
              f"film {r['film_R_ohm']:10.4g} Ω {off:>9}  misfit {r['rms_relative']:.3%}")
    resolved = [r for r in fits if r.get("film_resolved")]
    known = [abs(r["film_R_ohm"] / r["true_film_R_ohm"] - 1) for r in resolved
             if r["true_film_R_ohm"]]
    report = {"bench": "eis_fits", "spectra": len(fits),
              "resolved": len(resolved), "errors": sum("error" in r for r in fits),
              "converged": sum(bool(r.get("converged")) for r in fits),
              "cpu_s": sum(r["cpu_s"] for r in fits),
              "worst_resolved_film_error": max(known, default=math.nan), "fits": fits}
    print(f"{report['spectra']} spectra in {report['cpu_s']:.2f} s of CPU: "
          f"{report['resolved']} films resolved (worst {report['worst_resolved_film_error']:.2%} "
          f"from the simulated cell's), {report['converged']} converged, "
          f"{report['errors']} refused")
    if args.against is not None:
        old = json.loads(args.against.read_text(encoding="utf-8").strip().splitlines()[-1])
        diff = changes(old["fits"], fits)
        for row in diff["rows"]:
            print("  " + row)
        print(f"against {args.against}: {diff['tail_changes']} tail kinds and "
              f"{diff['verdict_changes']} verdicts changed; films resolved by both within "
              f"{diff['worst_resolved_film_R_change']:.1e}; misfit at most "
              f"{diff['worst_misfit_increase']:+.1e} worse; CPU {diff['cpu_s_before']:.2f} -> "
              f"{report['cpu_s']:.2f} s")
        report["against"] = {k: v for k, v in diff.items() if k != "rows"}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
