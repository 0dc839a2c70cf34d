"""Multisine impedance: the design of the excitation (which tones, which phases, how large).

All frequencies at once. A multisine sums N sines on harmonics of one fundamental f0:

    v(t) = dc + a · Σ_i cos(2π k_i f0 t + φ_i),      k_1 < k_2 < … integers

Over one period T0 = 1/f0 every tone runs a whole number of periods, so the discrete
Fourier transform of one period of the voltage and of the current puts each tone in its
own bin (k_i) with no leakage into the others: Z(k_i f0) = V[k_i] / I[k_i] from a single
window of T0. Nothing shorter can resolve the lowest tone, so one period of the lowest
frequency is the physical floor of a spectrum; a sweep pays (at least) one period of
every frequency, one after the other.

Tones. The lowest requested frequency is f0; every other one is moved to the nearest
integer multiple k·f0 (at least 1). Two requests on the same harmonic are refused; the
frequency measured, and reported, is k·f0.

Phases. The amplitude limit that keeps a cell linear (a few mV) applies to the peak of the
sum, so a tone gets a = A / peak(Σ cos): the lower the crest factor (peak / rms), the
larger each tone and the better its signal-to-noise ratio. All phases 0 makes the tones
add up at t = 0 (crest factor √(2N)). Schroeder's phases (M. R. Schroeder, IEEE Trans.
Inf. Theory 16, 85 (1970)), φ_i = −π i (i − 1) / N over the tone index i = 1…N, spread the
tones' peaks over the period: for N consecutive harmonics the crest factor falls to ≈ 1.7
whatever N. Sparse (log-spaced) tones gain less: 28 tones at 10 a decade over three
decades, 4.2 against 7.5 with zero phases; a clipping optimiser (tried) gained < 10 % more.
Tones a decade apart are nearly independent, the fast one reaches its peak near any instant
the slow one does (four decade-spaced tones: 2.8 with any phases). The crest factor reported
is the sampled waveform's own (16 samples per period of the top tone, the largest sample
then refined on a fine grid around it), not a formula.

Settle. The excitation plays SETTLE_PERIODS (¼ of T0) before the window opens. Under
potentiostatic control the start-up transient decays with the zeros of Z (the series,
high-frequency resistance times the cell's capacitance), not with its arcs' time
constants: where the lowest tone's |Z| is ten times that resistance or more, τ ≤ T0/60,
so ¼ T0 is ≥ 15 τ (e^−15 ≈ 3e-7). The DC point is settled before (the open-circuit
potential measured just before, as in a sweep). A diffusion (Warburg) tail decays as
t^−½ and is not covered by this: measure it with a sweep. Test time: 1.25 T0.

Limits: at most MAX_TONES tones (30), harmonic numbers up to MAX_HARMONIC (1e5: the
waveform of one T0 at 16 samples per period of the top tone is 1.6 M points, the size of a
generator's waveform memory, an assumption), frequencies in FREQUENCY_RANGE_HZ (the
project's EIS range, 10 µHz–10 MHz), amplitude (peak of the sum) in AMPLITUDE_RANGE_V.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MAX_TONES = 30
MAX_HARMONIC = 100_000
FREQUENCY_RANGE_HZ = (1e-5, 1e7)
AMPLITUDE_RANGE_V = (1e-3, 50e-3)
SETTLE_PERIODS = 0.25
SAMPLES_PER_TOP_PERIOD = 16


@dataclass(frozen=True)
class MultisineDesign:
    """The excitation: f0, the tones' harmonic numbers and phases, the crest factor of
    the sampled sum, and the amplitude of each tone given `amplitude_V` for the peak."""

    f0_Hz: float
    harmonics: tuple[int, ...]
    phases_rad: tuple[float, ...]
    crest_factor: float
    amplitude_V: float
    tone_amplitude_V: float

    @property
    def frequencies_Hz(self) -> tuple[float, ...]:
        return tuple(k * self.f0_Hz for k in self.harmonics)

    @property
    def window_s(self) -> float:
        return 1.0 / self.f0_Hz

    @property
    def settle_s(self) -> float:
        return SETTLE_PERIODS / self.f0_Hz

    @property
    def duration_s(self) -> float:
        """What one spectrum takes: the settle and one period of f0."""
        return self.settle_s + self.window_s


def harmonics_of(frequencies_Hz) -> tuple[float, tuple[int, ...]]:
    """(f0, the harmonic number of each frequency, in the order given): f0 the lowest, each
    frequency on its nearest multiple of it (at least 1)."""
    f0 = min(frequencies_Hz)
    return f0, tuple(max(1, round(f / f0)) for f in frequencies_Hz)


def schroeder_phases(n: int) -> tuple[float, ...]:
    """φ_i = −π i (i − 1) / n for i = 1…n, wrapped into (−π, π]."""
    return tuple(math.remainder(-math.pi * i * (i - 1) / n, 2 * math.pi)
                 for i in range(1, n + 1))


def unit_waveform(harmonics, phases, samples: int) -> np.ndarray:
    """Σ cos(2π k t / T0 + φ) at `samples` instants evenly over one period (t = j T0 / n)."""
    spectrum = np.zeros(samples // 2 + 1, complex)
    spectrum[np.asarray(harmonics)] = np.exp(1j * np.asarray(phases, float)) * samples / 2
    return np.fft.irfft(spectrum, samples)


def samples_for(harmonics) -> int:
    """A power of two with at least SAMPLES_PER_TOP_PERIOD samples per period of the top
    tone (and at least 256)."""
    return 1 << max(8, math.ceil(math.log2(SAMPLES_PER_TOP_PERIOD * max(harmonics))))


def peak_of(harmonics, phases) -> float:
    """max |Σ cos(2π k t / T0 + φ)| over one period: the largest sample of the sampled
    waveform, refined by evaluating the sum on a fine grid one sample either side of it."""
    n = samples_for(harmonics)
    wave = unit_waveform(harmonics, phases, n)
    j = int(np.argmax(np.abs(wave)))
    fine = (j + np.linspace(-1.0, 1.0, 201)) / n  # in periods
    k, phi = np.asarray(harmonics, float), np.asarray(phases, float)
    local = np.cos(2 * np.pi * np.outer(fine, k) + phi).sum(axis=1)
    return float(max(np.abs(wave[j]), np.abs(local).max()))


def crest_factor(harmonics, phases) -> float:
    """Peak over rms of the equal-amplitude sum (rms = √(N/2) per unit amplitude)."""
    return peak_of(harmonics, phases) / math.sqrt(len(harmonics) / 2)


@lru_cache(maxsize=64)
def schroeder_peak(harmonics: tuple[int, ...]) -> float:
    """peak_of the unit sum of these harmonics (ascending) with Schroeder's phases."""
    return peak_of(harmonics, schroeder_phases(len(harmonics)))


@lru_cache(maxsize=64)
def _design(frequencies_Hz: tuple[float, ...], amplitude_V: float) -> MultisineDesign:
    f0, harmonics = harmonics_of(frequencies_Hz)
    ks = tuple(sorted(harmonics))
    peak = schroeder_peak(ks)
    return MultisineDesign(f0, ks, schroeder_phases(len(ks)), peak / math.sqrt(len(ks) / 2),
                           amplitude_V, amplitude_V / peak)


def design(frequencies_Hz, amplitude_V: float) -> MultisineDesign:
    """The excitation for these frequencies with `amplitude_V` as the peak of the sum
    (the values are assumed checked: see `problems`)."""
    return _design(tuple(float(f) for f in frequencies_Hz), float(amplitude_V))


def problems(frequencies_Hz, amplitude_V: float) -> str | None:
    """What is wrong with a multisine's frequencies and amplitude, or None."""
    freqs = tuple(frequencies_Hz)
    low, high = FREQUENCY_RANGE_HZ
    if not 1 <= len(freqs) <= MAX_TONES:
        return f"takes 1 to {MAX_TONES} frequencies, not {len(freqs)}"
    for f in freqs:
        if isinstance(f, bool) or not isinstance(f, numbers.Real):
            return f"frequency {f!r} is not a number of Hz"
        if not low <= f <= high:
            return f"frequency {f!r} is outside {low:g}–{high:g} Hz"
    a_low, a_high = AMPLITUDE_RANGE_V
    if isinstance(amplitude_V, bool) or not isinstance(amplitude_V, numbers.Real) or \
            not a_low <= amplitude_V <= a_high:
        return (f"amplitude_V {amplitude_V!r} is outside {a_low * 1e3:g}–{a_high * 1e3:g} mV "
                "(the peak of the sum)")
    f0, harmonics = harmonics_of(freqs)
    if max(harmonics) > MAX_HARMONIC:
        return (f"{max(freqs):g} Hz is harmonic {max(harmonics)} of the lowest frequency "
                f"{f0:g} Hz; at most {MAX_HARMONIC} (five decades in one period)")
    seen: dict[int, float] = {}
    for f, k in zip(freqs, harmonics, strict=True):
        if k in seen:
            return (f"{seen[k]:g} Hz and {f:g} Hz both fall on harmonic {k} of the lowest "
                    f"frequency {f0:g} Hz ({k * f0:g} Hz); give distinct tones")
        seen[k] = f
    return None
