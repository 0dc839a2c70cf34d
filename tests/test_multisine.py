"""Multisine EIS (all frequencies at once): the design (harmonics, Schroeder phases, crest
factor), the driver ↔ emulator over the MethodSCRIPT framing (the lipon-hw `multisine(…)`
option of meas_loop_eis), its time against the physical limit, the refusals, and a check
from first principles: one period of the synthesised waveform separates the tones."""

import math

import numpy as np
import pytest
from conftest import ManualClock, sim_link
from test_methodscript import RCCell

from lipon_hw import multisine
from lipon_hw.drivers.keithley2450 import Keithley2450
from lipon_hw.drivers.methodscript import (
    EIS,
    MethodScriptPotentiostat,
    MultisineEIS,
    build_script,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.cells.factories import cell_from_spec
from lipon_hw.sim.emulators.keithley2450 import Keithley2450Emulator
from lipon_hw.sim.emulators.methodscript import MethodScriptEmulator
from lipon_hw.sim.emulators.methodscript.loops import EIS_PERIODS
from lipon_hw.techniques import check_technique, eis_physical_limit_s

SPECTRUM = (1e4, 1e3, 100.0, 10.0)


def _rc():
    return RCCell(C=1e-6, Rs=10.0, V0=2.0, Rp=1e3)  # its arc's apex at 159 Hz


def _rig(cell=None, multisine_on=True, **emulator_kwargs):
    clock = ManualClock()
    cell = cell if cell is not None else _rc()
    emulator = MethodScriptEmulator("p", {1: cell}, clock, **emulator_kwargs)
    pstat = MethodScriptPotentiostat("p", sim_link(emulator), multisine=multisine_on)
    return clock, cell, emulator, pstat


def _measure(pstat, clock, technique, wait_s):
    run = pstat.start(1, technique)
    clock.advance(wait_s)
    samples = run.poll()
    assert run.finished and run.end_reason == "done"
    return samples


# --- the design ----------------------------------------------------------------------------
def test_frequencies_move_to_harmonics_of_the_lowest_and_are_reported_so():
    tq = MultisineEIS((1e4, 1e3, 33.0, 10.0, 330.0), dc_V=2.0)
    design = tq.design
    assert design.f0_Hz == 10.0 and design.harmonics == (1, 3, 33, 100, 1000)
    clock, _, _, pstat = _rig(eis_noise=0)
    samples = _measure(pstat, clock, tq, 1.0)
    assert [s.f_Hz for s in samples] == pytest.approx([10.0, 30.0, 330.0, 1e3, 1e4], rel=1e-6)
    assert "  meas_loop_eis f zr zi 10m 10 10k 5i e multisine(1,3,33,100,1000)" not in \
        build_script(tq)  # the loop is not indented: it is the script's own line
    assert "meas_loop_eis f zr zi 10m 10 10k 5i e multisine(1,3,33,100,1000)" in build_script(tq)


def test_schroeder_phases_keep_the_crest_factor_well_below_zero_phases():
    """Zero phases: the tones add up at t = 0, crest factor √(2N). Schroeder's: 1.7 for
    30 consecutive harmonics (4.5× lower), 4.2 for 28 tones log-spaced 10 a decade
    (1.8× lower); four decade-spaced tones cannot do better than ≈ √8 with any phases."""
    dense = tuple(range(1, 31))
    log = multisine.harmonics_of([10 * 10 ** (i / 10) for i in range(31)])[1]
    log = tuple(sorted(set(log)))
    for ks, ratio in ((dense, 0.25), (log, 0.6)):
        n = len(ks)
        zero = multisine.crest_factor(ks, [0.0] * n)
        schroeder = multisine.crest_factor(ks, multisine.schroeder_phases(n))
        assert zero == pytest.approx(math.sqrt(2 * n), rel=1e-6)
        assert schroeder < ratio * zero, (n, schroeder, zero)
    assert multisine.crest_factor(dense, multisine.schroeder_phases(30)) == pytest.approx(
        1.71, abs=0.02)
    design = MultisineEIS(SPECTRUM).design
    assert design.crest_factor == pytest.approx(2.80, abs=0.02)  # √8 = 2.83


def test_reported_crest_factor_and_tone_amplitude_are_the_sampled_waveforms():
    """An independent dense evaluation (64 samples per period of the top tone, by the sum
    of cosines, not the FFT) finds the same peak: amplitude_V is the peak of the sum."""
    design = MultisineEIS((5e3, 1e3, 470.0, 220.0, 100.0, 47.0, 22.0, 10.0),
                          amplitude_V=0.02).design
    t = np.arange(64 * max(design.harmonics)) / (64 * max(design.harmonics))
    wave = design.tone_amplitude_V * sum(
        np.cos(2 * np.pi * k * t + phi) for k, phi in zip(design.harmonics, design.phases_rad,
                                                          strict=True))
    assert np.abs(wave).max() == pytest.approx(0.02, rel=2e-3)
    rms = design.tone_amplitude_V * math.sqrt(len(design.harmonics) / 2)
    assert np.abs(wave).max() / rms == pytest.approx(design.crest_factor, rel=2e-3)


# --- through the emulator ------------------------------------------------------------------
def test_each_tone_is_the_cells_impedance_within_the_honest_noise():
    tq = MultisineEIS(SPECTRUM, dc_V=2.0)
    design = tq.design
    peak = design.amplitude_V / design.tone_amplitude_V
    for cell in (_rc(), cell_from_spec({"kind": "lco_anodeless"})):
        clock, cell, _, pstat = _rig(cell, seed=3)
        samples = _measure(pstat, clock, tq, 1.0)
        for s, k in zip(samples, design.harmonics, strict=True):
            exact = cell.impedance_ohm(clock(), s.f_Hz)
            sigma = 0.003 * peak * math.sqrt(EIS_PERIODS / k)  # of |Z|, on each part
            error = complex(s.z_re_ohm, s.z_im_ohm) - exact
            assert abs(error) / abs(exact) < 5 * sigma, (k, error, exact)


def test_the_noise_scales_with_the_tone_amplitude_and_its_periods_in_the_window():
    """σ of each part of a tone = 0.3 % |Z| (a sweep's single sine of the full amplitude
    over 3 periods) × peak factor (A over a tone's amplitude) × √(3 / periods in window),
    estimated over 300 spectra: within ±20 % (the estimate's own spread is ±6 %)."""
    tq = MultisineEIS(SPECTRUM, dc_V=2.0)
    design = tq.design
    peak = design.amplitude_V / design.tone_amplitude_V
    clock, cell, _, pstat = _rig(seed=11)
    errors = []
    for _ in range(300):
        samples = _measure(pstat, clock, tq, 1.0)
        errors.append([(complex(s.z_re_ohm, s.z_im_ohm) - cell.impedance_ohm(clock(), s.f_Hz))
                       / abs(cell.impedance_ohm(clock(), s.f_Hz)) for s in samples])
    errors = np.array(errors)
    parts = np.concatenate([errors.real, errors.imag])
    measured = np.sqrt((parts**2).mean(axis=0))
    predicted = [0.003 * peak * math.sqrt(EIS_PERIODS / k) for k in design.harmonics]
    assert measured == pytest.approx(predicted, rel=0.2)
    assert measured[0] > 5 * 0.003  # the lowest tone pays for the speed


def test_one_spectrum_takes_a_period_and_a_quarter_of_the_lowest_frequency():
    """10 kHz, 1 kHz, 100 Hz, 10 Hz: a multisine 0.125 s (limit 0.1 s: one period of
    10 Hz), the emulated sweep 0.533 s (3 periods and 50 ms a point; its limit, one period
    a point, 0.111 s)."""
    multi = MultisineEIS(SPECTRUM, dc_V=2.0)
    sweep = EIS(1e4, 10.0, 4, dc_V=2.0)
    assert eis_physical_limit_s(multi) == pytest.approx(0.1)
    assert eis_physical_limit_s(sweep) == pytest.approx(0.1111)
    clock, _, emulator, pstat = _rig()
    run = pstat.start(1, multi)
    clock.advance(0.1249)
    assert run.poll() == [] and not run.finished
    clock.advance(0.0002)
    samples = run.poll()
    assert run.finished and len(samples) == 4
    assert samples[-1].t_s == pytest.approx(0.125) and samples[-1].t_s <= 1.5 * 0.1
    swept = _measure(pstat, clock, sweep, 2.0)
    assert swept[-1].t_s == pytest.approx(3 * 0.1111 + 4 * 0.05)
    assert [s.f_Hz for s in swept] == pytest.approx([s.f_Hz for s in samples][::-1])
    for lowest in (1.0, 0.1):  # the time is the lowest tone's, whatever the top
        tq = MultisineEIS((lowest, 10 * lowest, 1e3 * lowest), dc_V=2.0)
        t = _measure(pstat, clock, tq, 20 / lowest)[-1].t_s
        assert t == pytest.approx(1.25 / lowest) and t <= 1.5 * eis_physical_limit_s(tq)


# --- refusals --------------------------------------------------------------------------------
def test_without_the_station_setting_the_driver_refuses_before_sending_anything():
    clock, _, emulator, pstat = _rig(multisine_on=False)
    with pytest.raises(InputError) as refused:
        pstat.start(1, MultisineEIS(SPECTRUM))
    text = str(refused.value)
    assert "p (MethodSCRIPT) cannot run MultisineEIS" in text and "multisine: true" in text
    assert "\n" not in text and emulator.scripts_started == 0 and pstat.runs[1] is None
    with pytest.raises(InputError, match="multisine is true or false, not 'yes'"):
        MethodScriptPotentiostat("p", sim_link(emulator), multisine="yes")


def test_the_keithley_2450_refuses_it_in_one_sentence_before_sending_anything():
    class Heard(Keithley2450Emulator):
        heard = b""

        def handle(self, data, *args, **kwargs):
            self.heard += data
            return super().handle(data, *args, **kwargs)

    smu = Heard("smu", cell_from_spec({"kind": "lco_anodeless"}), ManualClock())
    pstat = Keithley2450("k", sim_link(smu))
    with pytest.raises(InputError) as refused:
        pstat.start(1, MultisineEIS(SPECTRUM))
    assert str(refused.value).startswith("k (Keithley 2450) cannot run MultisineEIS; it runs ")
    assert "\n" not in str(refused.value) and smu.heard == b""
    assert MultisineEIS not in Keithley2450.TECHNIQUES  # the 2450 has no impedance at all


def test_a_stop_in_the_window_aborts_it_and_switches_the_cell_off():
    clock, cell, emulator, pstat = _rig()
    run = pstat.start(1, MultisineEIS((0.01, 0.1, 1.0), dc_V=2.0))  # 125 s
    clock.advance(60)
    assert run.poll() == [] and not run.finished and cell.mode == "voltage"
    pstat.stop(1)
    assert run.finished and run.end_reason == "aborted" and run.poll() == []
    assert cell.mode == "open" and not emulator.running


@pytest.mark.parametrize("technique, words", [
    (MultisineEIS(tuple(10.0 * k for k in range(1, 32))), "1 to 30 frequencies, not 31"),
    (MultisineEIS(()), "1 to 30 frequencies, not 0"),
    (MultisineEIS((10.0, 0.0)), "frequency 0.0 is outside 1e-05–1e+07 Hz"),
    (MultisineEIS((10.0, 2e7)), "frequency 20000000.0 is outside"),
    (MultisineEIS((10.0, math.nan)), "frequency nan is outside"),
    (MultisineEIS((10.0, "1k")), "frequency '1k' is not a number of Hz"),
    (MultisineEIS(SPECTRUM, amplitude_V=5e-4), "amplitude_V 0.0005 is outside 1–50 mV"),
    (MultisineEIS(SPECTRUM, amplitude_V=0.06), "amplitude_V 0.06 is outside 1–50 mV"),
    (MultisineEIS((10.0, 100.0, 104.0)), "100 Hz and 104 Hz both fall on harmonic 10"),
    (MultisineEIS((1.0, 2e5)), "200000 Hz is harmonic 200000 of the lowest frequency 1 Hz"),
    (MultisineEIS(SPECTRUM, dc_V=math.nan), "dc_V nan is outside -10–10 V"),
    (MultisineEIS(SPECTRUM, dc_V=50.0), "dc_V 50.0 is outside -10–10 V"),
    (MultisineEIS(SPECTRUM, dc_V="2"), "dc_V '2' is not a number"),
    (MultisineEIS(1e3), "frequencies_Hz is a list of frequencies, not 1000.0"),
])
def test_bad_values_are_refused_in_one_sentence(technique, words):
    with pytest.raises(InputError) as refused:
        check_technique(technique)
    text = str(refused.value)
    assert text.startswith("MultisineEIS: ") and words in text and "\n" not in text
    with pytest.raises(InputError):
        build_script(technique)


PRELUDE = ["var f", "var r", "var j", "set_pgstat_mode 3", "cell_on"]


def _script(emulator, clock, loop: str) -> str:
    lines = ["e", *PRELUDE, loop, "  pck_start", "  pck_add f", "  pck_end", "endloop", ""]
    answer = emulator.handle(("\n".join(lines) + "\n").encode("ascii")).decode("ascii")
    clock.advance(100)
    return answer + emulator.handle(b"\n").decode("ascii")


@pytest.mark.parametrize("loop, error", [
    ("meas_loop_eis f r j 10m 10 1k 3i 0 multisine(1,10,1k)", "e!4004: Line 6, Col 46"),
    ("meas_loop_eis f r j 10m 10 1k 3i 0 multisine()", "e!4004: Line 6, Col 46"),
    ("meas_loop_eis f r j 10m 10 1k 3i 0 sines(1,10,100)", "e!4008: Line 6, Col 36"),
    ("meas_loop_eis f r j 10m 10 1k 2i 0 multisine(1,10,100)", "!4205: Line 6"),
    ("meas_loop_eis f r j 10m 10 1k 3i 0 multisine(1,100,10)", "!4205: Line 6"),
    ("meas_loop_eis f r j 10m 10 1k 3i 0 multisine(0,10,100)", "!4205: Line 6"),
    ("meas_loop_eis f r j 10m 1 200k 2i 0 multisine(1,200000)", "!4205: Line 6"),
    ("meas_loop_eis f r j 10m 10 2k 3i 0 multisine(1,10,100)", "!0011: Line 6"),
])
def test_the_emulator_refuses_a_bad_multisine_with_the_manuals_codes(loop, error):
    clock, _, emulator, _ = _rig()
    answer = _script(emulator, clock, loop)
    assert error in answer and "\nP" not in answer


def test_the_emulator_runs_a_good_one_sent_by_hand():
    clock, _, emulator, _ = _rig(eis_noise=0)
    answer = _script(emulator, clock, "meas_loop_eis f r j 10m 10 1k 3i 0 multisine(1,10,100)")
    assert answer.startswith("e\nM000D\n") and answer.count("\nP") == 3


# --- from first principles ------------------------------------------------------------------
def _dft_impedance(design, z_of, start_periods=0.0, window_periods=1.0, transient=None):
    """Synthesise v(t) from the design's phases and tone amplitude, the current of a cell
    of impedance z_of(f) tone by tone (plus `transient(t)` if given), sample a window and
    take Z = V[k]/I[k] at each tone's bin (a window of 1 period: bin k is tone k)."""
    n = 64 * max(design.harmonics)
    t = (start_periods + window_periods * np.arange(n) / n) / design.f0_Hz
    v = np.zeros(n)
    i = np.zeros(n)
    for k, phi in zip(design.harmonics, design.phases_rad, strict=True):
        w = 2 * np.pi * k * design.f0_Hz
        z = z_of(k * design.f0_Hz)
        v += design.tone_amplitude_V * np.cos(w * t + phi)
        i += design.tone_amplitude_V / abs(z) * np.cos(w * t + phi - np.angle(z))
    if transient is not None:
        i += transient(t)
    spectrum_v, spectrum_i = np.fft.rfft(v), np.fft.rfft(i)
    bins = np.round(np.array(design.harmonics) * window_periods).astype(int)
    return spectrum_v[bins] / spectrum_i[bins], v


def test_one_period_of_the_synthesised_waveform_separates_the_tones():
    """A DFT over one period of f0 recovers every tone's Z exactly (no leakage: each tone
    runs a whole number of periods) and agrees with what the emulator reports; a window
    of 0.9 period leaks the tones into each other's bins (errors of a few %)."""
    tq = MultisineEIS((1e3, 470.0, 220.0, 100.0, 47.0, 22.0, 10.0), dc_V=2.0)
    design = tq.design
    clock, cell, _, pstat = _rig(eis_noise=0)
    reported = _measure(pstat, clock, tq, 1.0)
    z_dft, v = _dft_impedance(design, lambda f: cell.impedance_ohm(clock(), f))
    assert np.abs(v).max() == pytest.approx(tq.amplitude_V, rel=2e-3)
    for s, z in zip(reported, z_dft, strict=True):
        assert complex(s.z_re_ohm, s.z_im_ohm) == pytest.approx(complex(z), rel=1e-5)
        assert complex(s.z_re_ohm, s.z_im_ohm) == pytest.approx(
            cell.impedance_ohm(clock(), s.f_Hz), rel=1e-5)
    leaky, _ = _dft_impedance(design, lambda f: cell.impedance_ohm(clock(), f),
                              window_periods=0.9)
    exact = np.array([cell.impedance_ohm(clock(), f) for f in design.frequencies_Hz])
    assert np.max(np.abs(leaky - exact) / np.abs(exact)) > 0.01


def test_a_quarter_period_settles_the_start_of_the_excitation():
    """Rs + Rp‖C switched on to the multisine at t = 0 (capacitor at the DC point): under
    potentiostatic control the transient decays as e^(−t/τ), τ = C·Rs‖Rp, however low the
    arc's apex (here at 0.3 f0; τ = T0/190). Measured from t = 0 the tones are up to 15 %
    off; after the quarter-period settle, less than 1e-6."""
    tq = MultisineEIS((1e3, 470.0, 220.0, 100.0, 47.0, 22.0, 10.0), dc_V=2.0)
    design = tq.design
    rs, rp = 10.0, 1e3
    c = 1 / (2 * np.pi * 0.3 * design.f0_Hz * rp)
    tau = c * rs * rp / (rs + rp)

    def z_of(f):
        return rs + rp / (1 + 2j * np.pi * f * rp * c)

    # the capacitor's steady voltage at t = 0 (it starts at 0): its excess decays with τ
    a, f0 = design.tone_amplitude_V, design.f0_Hz
    vc0 = sum(a * np.real(np.exp(1j * phi) * (1 - rs / z_of(k * f0)))
              for k, phi in zip(design.harmonics, design.phases_rad, strict=True))

    def transient(t):
        return vc0 / rs * np.exp(-t / tau)  # i = (v − vc)/Rs: the capacitor's lag

    exact = np.array([z_of(f) for f in design.frequencies_Hz])
    cold, _ = _dft_impedance(design, z_of, transient=transient)
    settled, _ = _dft_impedance(design, z_of, start_periods=multisine.SETTLE_PERIODS,
                                transient=transient)
    assert np.max(np.abs(cold - exact) / np.abs(exact)) > 0.01
    assert np.max(np.abs(settled - exact) / np.abs(exact)) < 1e-6
    assert design.duration_s == pytest.approx(1.25 / design.f0_Hz)
