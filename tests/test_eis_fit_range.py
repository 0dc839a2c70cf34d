"""The EIS fit across the temperatures a LiPON cell is tested at (issue 9, item 5): the
reported σ is within 5 % of the film's, or it is not reported and the fit says why.

Spectra come from the simulated cells over the conductivity protocol's band
(sequences/lipon_conductivity.yaml: 3 MHz → 100 mHz, 10 per decade) with the
MethodSCRIPT emulator's 0.3 % noise, seeded. Before the fix the fit reported, with no
warning, a blocking cell at −30 °C 200× too conductive on these spectra (19–34 % on other
noise draws: film and interface arcs merge), 13–17 % at 70–80 °C, and an LNMO cell's film
R at 60/70/80 °C as 1018/313/114 Ω against 72/41/24 Ω (the film's apex is above 3 MHz)."""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lipon_hw.analysis import eis
from lipon_hw.analysis.eis import film_conductivity_S_cm, fit_spectrum
from lipon_hw.sim.cells.factories import cell_from_spec
from lipon_hw.sim.emulators.methodscript import EIS_NOISE

TEMPERATURES_C = range(-30, 81, 10)
CASES = [(kind, t) for kind in ("blocking", "lnmo") for t in TEMPERATURES_C]


def protocol_band() -> np.ndarray:
    decades = math.log10(3e6 / 0.1)
    return np.logspace(math.log10(3e6), math.log10(0.1), round(10 * decades) + 1)


def noisy_spectrum(cell, seed: int):
    f = protocol_band()
    z = np.array([cell.impedance_ohm(0.0, x) for x in f])
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, EIS_NOISE * np.abs(z), (2, len(z)))
    return f, z + noise[0] + 1j * noise[1]


def true_sigma(cell) -> float:
    return cell.lipon_thickness_nm * 1e-7 / (cell.film_resistance_ohm() * cell.area_cm2)


@functools.cache  # each spectrum is fitted once per session
def fitted(kind: str, temperature_C: int):
    cell = cell_from_spec({"kind": kind, "temperature_C": temperature_C})
    seed = 1000 + 100 * ("blocking", "lnmo").index(kind) + temperature_C
    fit = fit_spectrum(*noisy_spectrum(cell, seed))
    return cell, fit, film_conductivity_S_cm(fit, cell.lipon_thickness_nm, cell.area_cm2)


@pytest.mark.parametrize(("kind", "temperature_C"), CASES)
def test_sigma_is_right_or_not_reported_with_a_reason(kind, temperature_C):
    cell, fit, sigma = fitted(kind, temperature_C)
    assert len(protocol_band()) == 76
    if sigma is None:
        assert not fit.film_resolved
        assert len(fit.film_note) > 30 and fit.film_note.count(". ") == 0  # one sentence
    else:
        truth = true_sigma(cell)
        assert sigma == pytest.approx(truth, rel=0.05)
        u = fit.film_R_rel_uncertainty
        assert 0 < u <= 0.02
        assert abs(sigma / truth - 1) < 4 * u + 0.005  # the stated uncertainty covers it
        assert fit.film_note == ""


@pytest.mark.parametrize(("kind", "temperatures_C"), [
    ("blocking", range(0, 61, 10)),  # film arc 40 kHz-2.8 MHz, interface ~3 kHz
    ("lnmo", range(-30, 61, 10)),  # 60 °C: apex at 3.4 MHz, above the band, still fitted
])
def test_a_resolvable_film_is_reported(kind, temperatures_C):
    for t in temperatures_C:
        cell, fit, sigma = fitted(kind, t)
        assert sigma is not None, (t, fit.film_note)


def test_merged_arcs_and_an_arc_above_the_band_give_no_number():
    cell, cold, sigma = fitted("blocking", -30)
    assert sigma is None and cold.film_note  # the fit's R is not the film's ...
    assert abs(cold.film_resistance_ohm / cell.film_resistance_ohm() - 1) > 0.05  # ... indeed
    _, hot, sigma = fitted("lnmo", 80)
    assert sigma is None and "uncertain" in hot.film_note
    assert hot.film.f_peak_Hz > 3e6  # the fit places the film's apex above the band


@pytest.mark.parametrize(("kind", "temperature_C", "n_arcs"), [
    ("lnmo", 25, 2),  # diffusion tail
    ("lnmo", 60, 2),  # the film's apex above the band
    ("blocking", 40, 2),  # blocking tail
    ("blocking", 25, 1),
])
def test_the_scouted_fit_finds_what_fitting_every_start_to_the_end_finds(
        monkeypatch, kind, temperature_C, n_arcs):
    """The scouting's shortcuts (scouts stopped at a loose tolerance, only the best few
    fitted to the end) against the plain search: every start fitted to convergence, the
    best kept. Same model, same minimum (the tail's parameters along the directions the
    data leave flat are not compared: a last bit of arithmetic moves them)."""
    cell = cell_from_spec({"kind": kind, "temperature_C": temperature_C})
    f, z = noisy_spectrum(cell, 2000 + temperature_C)
    fit = fit_spectrum(f, z, n_arcs=n_arcs)
    with monkeypatch.context() as plain:
        plain.setattr(eis, "SCOUT_NFEV", 2000)
        plain.setattr(eis, "SCOUT_FTOL", 1e-8)  # scipy's default
        full = fit_spectrum(f, z, n_arcs=n_arcs)
    assert type(fit.tail) is type(full.tail)
    assert (fit.film_resolved, fit.film_note) == (full.film_resolved, full.film_note)
    assert fit.rms_relative == pytest.approx(full.rms_relative, rel=1e-6)
    assert fit.R0_ohm == pytest.approx(full.R0_ohm, rel=1e-3, abs=1e-3 * fit.film.R_ohm)
    for a, b in zip(fit.arcs, full.arcs, strict=True):
        assert (a.R_ohm, a.tau_s) == pytest.approx((b.R_ohm, b.tau_s), rel=1e-4)
        assert a.alpha == pytest.approx(b.alpha, abs=1e-5)
    assert fit.R_rel_uncertainty == pytest.approx(full.R_rel_uncertainty, rel=1e-3)


@pytest.mark.parametrize(("temperature_C", "reported"), [(25, True), (0, True), (-30, False)])
def test_the_conductivity_protocols_summary_carries_sigma_or_the_reason(
        tmp_path, temperature_C, reported):
    """Through `lipon-hw run` on the simulated lab: at 25 °C (and at 0 °C, which is not
    25 °C: issue 9 item 4) σ comes with its relative
    uncertainty, at −30 °C (film and interface arcs merge) no σ but the sentence why, in
    the JSON and the text summary alike."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "sequences" / "lipon_conductivity.yaml").read_text(encoding="utf-8")
    cell = "cell: {kind: blocking, area_cm2: 0.04, lipon_thickness_nm: 3700}"
    assert cell in text
    text = text.replace(cell, cell[:-1] + f", temperature_C: {temperature_C}}}")
    text = text.replace("until: {time_h: 2}", "until: {time_min: 10}")  # σ_e not wanted here
    protocol = tmp_path / "conductivity.yaml"
    protocol.write_text(text, encoding="utf-8")
    run = [sys.executable, "-m", "lipon_hw.cli", "run", protocol]
    proc = subprocess.run([*run, "--json"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    cell = cell_from_spec({"kind": "blocking", "temperature_C": temperature_C})
    if reported:
        assert summary["ionic_conductivity_S_cm"] == pytest.approx(true_sigma(cell), rel=0.05)
        assert 0 < summary["ionic_conductivity_rel_uncertainty"] < 0.02
        assert "ionic_conductivity_note" not in summary
    else:
        assert summary["ionic_conductivity_S_cm"] is None
        assert summary["film_resistance_ohm"] is None
        note = summary["ionic_conductivity_note"]
        assert "overlap" in note or "merged" in note
        proc = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert f"ionic conductivity not reported: {note}" in proc.stdout
