"""The measurement loops of each technique (`_m_<name>`), as a mixin of the channel: a
sampled loop (OCP, CA, CP) runs in bulk, event-driven or sample by sample; a stepped loop
(EIS, LSV, CV) takes its points one by one.

Multisine EIS (`meas_loop_eis … multisine(k1,k2,…)`) is a lipon-hw extension, not in the
MethodSCRIPT manual v1.8: every tone k·f_start at once (lipon_hw.multisine: Schroeder
phases, the amplitude argument the peak of the sum), a quarter period of f_start to settle
and one period measured; then one P line per tone, lowest first, in the sweep's variables.
Each tone's Z is the cell's impedance at k·f_start plus Gaussian noise on each part of
eis_noise·|Z| scaled honestly from the sweep's single sine over EIS_PERIODS periods: by
A/a (the tone's amplitude a is the full amplitude A over the sum's peak factor) and by
√(EIS_PERIODS/k) (the tone runs k periods in the window). Refused while running, as the
manual's codes go: tones ≠ points, harmonics not ascending from 1 up to MAX_HARMONIC or
more than MAX_TONES (`!4205`), f_end ≠ k_last·f_start or a frequency out of range
(`!0011`); a malformed option at load (`!4004`)."""

from __future__ import annotations

import math
from collections.abc import Generator

from lipon_hw import multisine
from lipon_hw.drivers.methodscript import TECHNIQUE_IDS, parse_literal
from lipon_hw.sim.emulators.methodscript.interpreter import (
    GALVANOSTAT_MODE,
    LoopBroken,
    RunTimeFault,
    ScriptAborted,
)
from lipon_hw.sim.emulators.methodscript.parser import Block

EIS_PERIODS = 3
EIS_SETTLE_S = 0.05
EIS_MODE = 3


class MeasurementLoops:
    """One generator per measurement loop command."""

    # --- measurement loops (one generator per technique: _m_<name>) ----------------------
    def _need(self, condition: bool, code: int, st: Block) -> None:
        if not condition:
            raise RunTimeFault(code, st.line)

    def _m_ocp(self, st: Block):
        self._need(not self.cell_is_on, 0x0014, st)
        yield from self._sampled(st, "ocp", None, st.args[1], st.args[2])

    def _m_ca(self, st: Block):
        self._need(self.cell_is_on, 0x4027, st)
        self._need(self.mode != GALVANOSTAT_MODE, 0x0023, st)
        self.e_set = self._value(st.args[2])
        self.cell.set_control(self.t, "voltage", self.e_set)
        yield from self._sampled(st, "ca", st.args[1], st.args[3], st.args[4])

    def _m_cp(self, st: Block):
        self._need(self.cell_is_on, 0x4027, st)
        self._need(self.mode == GALVANOSTAT_MODE, 0x0023, st)
        self.i_set = self._value(st.args[2])
        self.cell.set_control(self.t, "current", self.i_set)
        yield from self._sampled(st, "cp", st.args[1], st.args[3], st.args[4])

    def _sampled(self, st: Block, technique: str, i_name: str | None, interval: str,
                 run_time: str):
        """A loop sampling every `interval` for `run_time`: event-driven when it can be."""
        dt, span = self._value(interval), self._value(run_time)
        self._need(dt > 0, 0x4205, st)
        n = int(span / dt + 1e-9)
        self._need(n >= 1, 0x4029, st)
        e_name = st.args[0]
        e_type = "da" if technique == "ca" else "ab"
        watch = self._watch(st, e_name, i_name) if self.event_driven else None
        recorded = self._recorded_body(st, e_name, i_name) \
            if self.event_driven and self.bulk_loops else None
        self.loops_served["bulk" if recorded is not None else "event" if watch is not None
                          else "sample"] += 1
        yield from self._marked(technique, self._samples(st, recorded, watch, e_name, i_name,
                                                          e_type, dt, n))

    def _samples(self, st: Block, recorded, watch, e_name: str, i_name: str | None,
                 e_type: str, dt: float, n: int):
        """A sampled loop's samples: in bulk, or each one (or each one an event may need)
        measured and given to the body."""
        t0, k = self.t, 0
        if recorded is not None:
            yield from self._bulk(recorded, e_name, i_name, e_type, t0, dt, n)
        while recorded is None:
            k = k + 1 if watch is None else self._next_sample(watch, t0, dt, k)
            if k > n:
                yield t0 + n * dt
                break
            yield t0 + k * dt
            self._set(e_name, self.cell.voltage_V(self.t), e_type)
            if i_name is not None:
                self._set(i_name, *self._measure("ba"))
            try:
                yield from self._block(st.body)
            except LoopBroken:
                break

    def _marked(self, technique: str, samples):
        """A measurement loop between its `M<technique>` and `*` lines (`*` on an abort too)."""
        self._emit(f"M{TECHNIQUE_IDS[technique]:04X}")
        try:
            yield from samples
        except ScriptAborted:
            self._emit("*")
            raise
        self._emit("*")

    def _m_eis(self, st: Block):
        f_name, re_name, im_name, amplitude, f_start, f_end, points, dc = st.args
        self._need(self.cell_is_on, 0x4027, st)
        self._need(self.mode == EIS_MODE, 0x0023, st)
        count = int(self._value(points))
        self._need(count >= 1 and self._value(amplitude) > 0, 0x4205, st)
        first, last = self._value(f_start), self._value(f_end)
        self._need(first > 0 and last > 0, 0x0011, st)
        if "multisine" in st.option:
            yield from self._multisine(st, first, last, count, self._value(dc))
            return
        self.e_set = self._value(dc)
        self.cell.set_control(self.t, "voltage", self.e_set)
        ratio = (last / first) ** (1 / (count - 1)) if count > 1 else 1.0

        def point(k: int) -> Generator[float, None, None]:
            f = first * ratio**k
            yield self.t + EIS_PERIODS / f + EIS_SETTLE_S
            z = self.cell.impedance_ohm(self.t, f)
            if self.eis_noise:  # Gaussian on each part, a fraction of |Z| (PHYSICS.md §6)
                re_noise, im_noise = self.rng.normal(0.0, self.eis_noise * abs(z), 2)
                z += complex(re_noise, im_noise)
            self._set(f_name, f, "dc")
            self._set(re_name, z.real, "cc")
            self._set(im_name, z.imag, "cd")

        yield from self._stepped(st, "eis", (point(k) for k in range(count)))

    def _multisine(self, st: Block, f0: float, top: float, count: int, dc: float):
        """All tones at once: the window's time, then one P line per tone."""
        harmonics = tuple(int(k) for k in st.option["multisine"].split(","))
        self._need(len(harmonics) == count <= multisine.MAX_TONES and harmonics[0] >= 1
                   and harmonics[-1] <= multisine.MAX_HARMONIC
                   and all(a < b for a, b in zip(harmonics, harmonics[1:], strict=False)),
                   0x4205, st)
        low, high = multisine.FREQUENCY_RANGE_HZ
        self._need(math.isclose(top, harmonics[-1] * f0, rel_tol=1e-6)
                   and low <= f0 and top <= high, 0x0011, st)
        self.e_set = dc
        self.cell.set_control(self.t, "voltage", dc)
        peak = multisine.schroeder_peak(harmonics)  # full amplitude / a tone's amplitude
        f_name, re_name, im_name = st.args[:3]
        spectrum: list[tuple[float, complex]] = []

        def window() -> Generator[float, None, None]:
            yield self.t + (multisine.SETTLE_PERIODS + 1) / f0
            for k in harmonics:
                z = self.cell.impedance_ohm(self.t, k * f0)
                if self.eis_noise:
                    sigma = self.eis_noise * abs(z) * peak * math.sqrt(EIS_PERIODS / k)
                    z += complex(*self.rng.normal(0.0, sigma, 2))
                spectrum.append((k * f0, z))

        def tone(i: int) -> Generator[float, None, None]:
            if i == 0:
                yield from window()
            f, z = spectrum[i]
            self._set(f_name, f, "dc")
            self._set(re_name, z.real, "cc")
            self._set(im_name, z.imag, "cd")

        yield from self._stepped(st, "eis", (tone(i) for i in range(count)))

    def _m_lsv(self, st: Block):
        begin, end, step, rate = (self._value(a) for a in st.args[2:6])
        yield from self._sweep(st, "lsv", [(begin, end)], step, rate)

    def _m_cv(self, st: Block):
        begin, vertex1, vertex2, step, rate = (self._value(a) for a in st.args[2:7])
        scans = int(parse_literal(st.option.get("nscans", "1i").rstrip("i") + "i")[0])
        legs = [(begin, vertex1), (vertex1, vertex2), (vertex2, begin)] * scans
        yield from self._sweep(st, "cv", legs, step, rate)

    def _sweep(self, st: Block, technique: str, legs, step: float, rate: float):
        self._need(self.cell_is_on, 0x4027, st)
        self._need(self.mode != GALVANOSTAT_MODE, 0x0023, st)
        self._need(step > 0 and rate > 0, 0x4205, st)
        e_name, i_name = st.args[0], st.args[1]
        potentials = _staircase(legs, step)

        def point(k: int) -> Generator[float, None, None]:
            self.e_set = potentials[k]
            self.cell.set_control(self.t, "voltage", self.e_set)
            yield self.t + step / rate
            self._set(e_name, self.e_set, "da")
            self._set(i_name, *self._measure("ba"))

        yield from self._stepped(st, technique, (point(k) for k in range(len(potentials))))

    def _stepped(self, st: Block, technique: str, points):
        """A loop whose samples are given by `points`, each a generator taking its time."""
        self.loops_served["stepped"] += 1
        yield from self._marked(technique, self._points(st, points))

    def _points(self, st: Block, points):
        for point in points:
            yield from point
            try:
                yield from self._block(st.body)
            except LoopBroken:
                break


def _staircase(legs, step: float) -> list[float]:
    potentials: list[float] = []
    for start, end in legs:
        steps = max(1, round(abs(end - start) / step))
        first = 0 if not potentials else 1
        potentials += [start + (end - start) * k / steps for k in range(first, steps + 1)]
    return potentials

