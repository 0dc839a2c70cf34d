"""The base simulated cell, `CellModel`: lazy, exact time evolution behind the cell
contract (`Cell`) that the instrument emulators call.

Every cell is one linear circuit around a nonlinear source:

  ┌ terminal ── R_series ── (R_k ‖ C_k) … ──┬── source E = E_pos(p) − E_neg(n)
  │                                            └── leak R_leak (σ_e)
  └ shunt R_shunt (soft short) ── other terminal        (a hard short replaces it all)

p and n are the states (charges, C) of the positive and negative electrode. The source
takes the current s' = I − E/R_leak and the electrodes follow it, p' = κ_p·s' and
n' = κ_n·s', where κ carries the coulombic efficiency of the present direction. (The σ_e
leak sits across the source rather than the terminals; the error is R_series/R_leak,
below 1e-6.) E_pos and E_neg are piecewise linear in their states, so between two table
breakpoints the circuit is linear with constant input and its exact solution is a sum of
exponentials in time; a current source with a shunt is handled as its Thevenin
equivalent, a voltage source I·R_shunt behind R_shunt. Cells therefore advance lazily,
one table segment at a time (`tracks.Track`), with no time step, and limit crossings are
roots of those sums (`roots`), bracketed with bounds that are exact for sums of monotone
terms.

RC branches faster than `circuit.FAST_BRANCH_TAU_S` are quasi-static in the time domain (their
arcs still appear in the impedance). Parameters that age (capacity, efficiency, R_ct) and
the direction of the current are frozen at each `set_control`, so a trajectory does not
depend on how often it is looked at. Faults switch on at a time or at a cycle.

Current sign: positive charges the cell (Battery Data Format).
"""

from __future__ import annotations

import bisect
import math
from typing import Protocol

import numpy as np

from lipon_hw.sim.cells.circuit import Circuit, Segment, linearise
from lipon_hw.sim.cells.faults import as_fault
from lipon_hw.sim.cells.impedance import parallel
from lipon_hw.sim.cells.tracks import (
    HORIZON_S,
    CellState,
    CurrentTrack,
    NetworkTrack,
    Track,
    current_tracks_many,
)

INF = math.inf
MODES = ("open", "current", "voltage")


class Cell(Protocol):
    """What an instrument emulator may call (the cell contract of issue 4)."""

    name: str

    def set_control(self, t: float, mode: str, value: float) -> None: ...
    def voltage_V(self, t: float) -> float: ...
    def current_A(self, t: float) -> float: ...
    def impedance_ohm(self, t: float, f_Hz: float) -> complex: ...
    def next_crossing(self, t: float, v_min: float | None, v_max: float | None,
                      i_min_abs: float | None) -> float | None: ...
    def snapshot(self) -> dict: ...
    def restore(self, state: dict) -> None: ...


class CellModel:
    """Lazy, exact time evolution of a cell; subclasses supply the circuit.

    Subclasses implement `_circuit(direction, active)`, `_impedance(f_Hz, st, circuit)`,
    `nominal_capacity_C`, `spec` and set `self._st` (initial state) before use.
    """

    kind = "cell"

    def __init__(self, name: str, faults=(), temperature_C: float = 25.0, t0: float = 0.0):
        self.name = name
        self.faults = [as_fault(f) for f in faults]
        self.temperature_C = float(temperature_C)
        self.mode, self.value, self._dir = "open", 0.0, -1
        self.age_cycles = 0.0
        self._cache: dict = {}
        self._cache_epoch = 0
        self._lookahead = None
        self._track: Track | None = None  # the current-mode segment the state is on
        self._plan: dict[float, Track] = {}  # segments look-aheads walked, by entry time
        self._hit_track: Track | None = None  # the segment the last crossing was found on
        self._st = CellState(t0, 0.0, 0.0, [], active=self._faults_due(t0, 0.0, frozenset()))

    # --- the contract -------------------------------------------------------------------
    def set_control(self, t: float, mode: str, value: float) -> None:
        if mode not in MODES:
            raise ValueError(f"cell {self.name}: control mode {mode!r} is not one of "
                             f"{', '.join(MODES)}")
        self._advance(t)
        self.mode, self.value = mode, 0.0 if mode == "open" else float(value)
        st = self._st
        self.age_cycles = st.thr_dis / self.nominal_capacity_C
        st.active = self._faults_due(st.t, self.age_cycles, st.active)
        self._on_control()
        self._invalidate()
        if mode == "current":
            self._dir = 1 if self.value > 0 else -1
        elif mode == "voltage":
            self._dir = 1
            c = self._circuit_for(st)
            seg = linearise(c, st.p, st.n, True)
            i0 = (self.value - seg.E0 - sum(st.v[i] for i in seg.slow)) / seg.rs
            self._dir = 1 if i0 - self._leak(c, seg) > 0 else -1
            self._invalidate()
        else:
            self._dir = -1
        self._invalidate()

    def voltage_V(self, t: float) -> float:
        self._advance(t)
        return self._terminal()[0]

    def current_A(self, t: float) -> float:
        self._advance(t)
        return self._terminal()[1]

    def impedance_ohm(self, t: float, f_Hz: float) -> complex:
        self._advance(t)
        if f_Hz <= 0:
            raise ValueError(f"cell {self.name}: impedance needs a positive frequency, "
                             f"not {f_Hz!r} Hz")
        st = self._st
        c = self._circuit_for(st, direction=-1)
        if c.short_ohm is not None:
            return complex(c.short_ohm, 0.0)
        z = self._impedance(f_Hz, st, c)
        return z if c.r_shunt_ohm == INF else parallel(z, c.r_shunt_ohm)

    def next_crossing(self, t: float, v_min: float | None, v_max: float | None,
                      i_min_abs: float | None) -> float | None:
        """Earliest time ≥ t at which, under the present control, the voltage reaches
        v_min or v_max or |current| falls to i_min_abs; t itself when already there;
        None when nothing happens within HORIZON_S. Never early: at the returned time the
        limit is passed by 1e-9 (relative), so voltage_V/current_A there agree."""
        self._advance(t)
        if v_min is None and v_max is None and i_min_abs is None:
            return None
        st = self._st.copy()
        hit = self._evolve(st, st.t + HORIZON_S, (v_min, v_max, i_min_abs))
        if hit is not None:
            # an emulator usually jumps straight there: keep the state (and the segment it
            # is on, so readings there repeat the crossing's own numbers) to hand
            self._lookahead = (self._st.t, self._cache_epoch, st, self._hit_track)
        return hit

    def snapshot(self) -> dict:
        st = self._st
        return {"kind": self.kind, "name": self.name, "t": st.t, "p": st.p, "n": st.n,
                "v": list(st.v), "thr_ch": st.thr_ch, "thr_dis": st.thr_dis,
                "active": sorted(st.active), "faults": [f.to_dict() for f in self.faults],
                "mode": self.mode, "value": self.value,
                "dir": self._dir, "age_cycles": self.age_cycles,
                "temperature_C": self.temperature_C, "extra": self._extra_state(),
                "anchor": self._track.anchor() if self._track is not None else None}

    def restore(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"cell {self.name}: snapshot of a {state.get('kind')!r} cell "
                             f"cannot restore a {self.kind!r} cell")
        if "faults" in state:  # the faults `active` counts in (an older snapshot has none)
            self.faults = [as_fault(f) for f in state["faults"]]
        self._st = CellState(state["t"], state["p"], state["n"], list(state["v"]),
                             state["thr_ch"], state["thr_dis"], frozenset(state["active"]))
        self.mode, self.value, self._dir = state["mode"], state["value"], state["dir"]
        self.age_cycles = state["age_cycles"]
        self.temperature_C = state["temperature_C"]
        self._restore_extra(state.get("extra", {}))
        self._invalidate()
        anchor = state.get("anchor")
        if anchor is not None:  # rebuild the segment track so the trajectory is bit-identical
            a = CellState(anchor["t"], anchor["p"], anchor["n"], list(anchor["v"]),
                          anchor["thr_ch"], anchor["thr_dis"], self._st.active)
            self._track = self._new_track(self._circuit_for(a), a)

    # --- extras -----------------------------------------------------------------------------
    def readings_on_grid(self, t0: float, step: float, k_first: int,
                         k_last: int) -> tuple[np.ndarray, np.ndarray]:
        """Terminal voltage and current at t0 + k·step for k = k_first … k_last, or fewer
        (a fault onset, or a segment that is not a plain current track, ends the stretch;
        at least one comes back). These are the numbers voltage_V and current_A give one
        by one: the segments are walked as _run walks them and each track is evaluated
        with the same operations, all segments in one pass of array arithmetic. The cell
        moves to the first time only; read it at the last one used to move on."""
        self._advance(t0 + k_first * step)
        self._terminal()  # makes or checks the track of the present segment
        st = self._st
        t_end = self._next_onset(st) if self.faults else INF
        c = self._circuit_for(st)
        k_end = k_last if t_end == INF else min(k_last, int((t_end - t0) / step) + 1)
        times = t0 + np.arange(k_first, max(k_end, k_first) + 1, dtype=float) * step
        count = max(1, int(np.searchsorted(times, t_end, "left")))
        if c.short_ohm is not None:  # a hard short: the terminals do not move
            v, i = self._terminal()
            return np.full(count, v), np.full(count, i)
        track, walk, pieces, j = self._track, None, [], 0
        grid = times[:count].tolist()
        for _ in range(1_000_000):
            m = bisect.bisect_left(grid, track.t0 + track.t_bd, j)
            if m > j:
                pieces.append((track, m - j))
                j = m
            if j >= count or not isinstance(track, CurrentTrack):
                break
            walk = walk or st.copy()  # the next segment, entered exactly as _run enters it
            track.place(walk, track.t_bd, track.side)
            track = self._new_track(c, walk)
            if len(self._plan) > 512:
                self._plan.clear()
            self._plan[track.t0] = track
            if not isinstance(track, CurrentTrack):
                break
        if len(pieces) == 1:
            return pieces[0][0].terminal_many(times[:j] - pieces[0][0].t0)
        return current_tracks_many(pieces, times[:j])

    @property
    def t(self) -> float:
        return self._st.t

    @property
    def trajectory_epoch(self) -> int:
        """Changes whenever what lies ahead may have changed (a control, a temperature, a
        restore): readings taken ahead before then no longer hold."""
        return self._cache_epoch

    def set_temperature(self, t: float, temperature_C: float) -> None:
        """Change the cell's temperature at t (Arrhenius terms follow from then on)."""
        self._advance(t)
        self.temperature_C = float(temperature_C)
        self._invalidate()

    def ocv_V(self, t: float) -> float:
        """The source voltage E_pos − E_neg at t (what the cell relaxes towards)."""
        self._advance(t)
        c = self._circuit_for(self._st, direction=-1)
        return linearise(c, self._st.p, self._st.n, False).E0

    def state_C(self, t: float) -> tuple[float, float]:
        """The electrode states (p, n) at t, in coulombs (see the module docstring)."""
        self._advance(t)
        return self._st.p, self._st.n

    @property
    def active_faults(self) -> list[str]:
        return [self.faults[i].kind for i in sorted(self._st.active)]

    @property
    def capacity_Ah(self) -> float | None:
        """Capacity for C-rates (None: a cell without one, e.g. a blocking cell)."""
        return None

    # --- hooks --------------------------------------------------------------------------------
    @property
    def nominal_capacity_C(self) -> float:
        """The charge one equivalent full cycle passes (ageing and at_cycle faults)."""
        return 1.0

    def _circuit(self, direction: int, active: frozenset) -> Circuit:
        raise NotImplementedError

    def _impedance(self, f_Hz: float, st: CellState, c: Circuit) -> complex:
        raise NotImplementedError

    def _on_control(self) -> None:
        """Called at each set_control after ageing is updated (e.g. a nucleation flag)."""

    def _extra_state(self) -> dict:
        return {}

    def _restore_extra(self, extra: dict) -> None:
        pass

    def add_faults(self, faults) -> None:
        """Faults the lab schedules onto the cell already built (onsets at or after its
        present time, or at a cycle count): they act as those given at construction. One
        the cell has already (restored from its snapshot) is not added twice."""
        for fault in map(as_fault, faults):
            if fault not in self.faults:
                self.faults.append(fault)
        self._invalidate()

    # --- machinery ----------------------------------------------------------------------------
    def _fault_param(self, active: frozenset, kind: str, attr: str, default: float):
        """The parameter of the first active fault of a kind, or None if none is active."""
        for i in sorted(active):
            f = self.faults[i]
            if f.kind == kind:
                value = getattr(f, attr)
                return default if value is None else value
        return None

    def _faults_due(self, t: float, cycles: float, active: frozenset) -> frozenset:
        if not self.faults:
            return active
        due = {i for i, f in enumerate(self.faults)
               if (f.at_s is None and f.at_cycle is None)
               or (f.at_s is not None and f.at_s <= t)
               or (f.at_cycle is not None and f.at_cycle <= cycles)}
        return frozenset(active | due)

    def _next_onset(self, st: CellState) -> float:
        times = [f.at_s for i, f in enumerate(self.faults)
                 if i not in st.active and f.at_s is not None and f.at_s > st.t]
        return min(times, default=INF)

    def _circuit_for(self, st: CellState, direction: int | None = None) -> Circuit:
        key = (self._dir if direction is None else direction, st.active)
        c = self._cache.get(key)
        if c is None:
            c = self._cache[key] = self._circuit(key[0], st.active)
        return c

    @staticmethod
    def _leak(c: Circuit, seg: Segment) -> float:
        return seg.E0 / c.r_leak_ohm if c.r_leak_ohm < INF else 0.0

    def _terminal(self) -> tuple[float, float]:
        """(voltage, current) at the terminals in the present state."""
        st = self._st
        c = self._circuit_for(st)
        mode, value = self.mode, self.value
        if c.short_ohm is not None:
            if mode == "voltage":
                return value, value / c.short_ohm
            return (value * c.short_ohm, value) if mode == "current" else (0.0, 0.0)
        track = self._track
        if track is None or track.c is not c or track.key != (mode, value) or \
                not track.t0 <= st.t < track.t0 + track.t_bd:
            track = self._track = self._new_track(c, st)
        return track.terminal(st.t - track.t0)

    def _invalidate(self) -> None:
        self._cache.clear()
        self._cache_epoch += 1
        self._lookahead = None
        self._track = None
        self._plan.clear()

    def _advance(self, t: float) -> None:
        ahead = self._lookahead
        if ahead is not None and ahead[0] == self._st.t and ahead[1] == self._cache_epoch \
                and ahead[2].t <= t:
            self._st, self._track = ahead[2], ahead[3]
            self._st.active = self._faults_due(self._st.t, self.age_cycles, self._st.active)
        self._lookahead = None
        st = self._st
        if t < st.t - 1e-9 * max(1.0, abs(st.t)):
            raise ValueError(f"cell {self.name}: time {t!r} s is before the cell's present "
                             f"time {st.t!r} s; simulated time only moves forward")
        if t > st.t:
            self._evolve(st, t, None)
            st.t = t

    def _evolve(self, st: CellState, t_end: float, limits) -> float | None:
        """Advance st to t_end; with limits (v_min, v_max, i_min), stop at the first
        crossing and return its time instead."""
        while st.t < t_end:
            c = self._circuit_for(st)
            t_stop = min(t_end, self._next_onset(st)) if self.faults else t_end
            if c.short_ohm is not None:
                if limits is not None and self._short_violates(c, limits):
                    return st.t
                hit = None
            else:
                hit = self._run(st, c, t_stop, limits)
            if hit is not None:
                return hit
            st.t = t_stop  # exact, whatever the rounding of the segment sums
            if self.faults:
                st.active = self._faults_due(st.t, self.age_cycles, st.active)
        return None

    def _new_track(self, c: Circuit, st: CellState) -> Track:
        """The trajectory of the segment the state is on, under the present control."""
        key, pref, shunt = (self.mode, self.value), self._dir > 0, c.r_shunt_ohm
        if self.mode == "voltage":
            v = self.value
            return NetworkTrack(c, st, key, v, 0.0,
                                 (v, 0.0, v / shunt if shunt < INF else 0.0, 1.0), pref)
        current = self.value if self.mode == "current" else 0.0
        if shunt < INF:
            return NetworkTrack(c, st, key, current * shunt, shunt,
                                 (current * shunt, -shunt, current, 0.0), pref)
        return CurrentTrack(c, st, key, current, pref)

    def _run(self, st: CellState, c: Circuit, t_stop: float, limits) -> float | None:
        """Advance st on circuit c up to t_stop, or to the first crossing of the limits
        (whose time is returned), one table segment (`Track`) at a time."""
        mine, key, plan = st is self._st, (self.mode, self.value), self._plan
        track = self._track if mine else None
        if track is not None and not (track.c is c and track.key == key and track.t0 <= st.t):
            track = None
        for _ in range(1_000_000):
            if t_stop <= st.t:
                return None
            if track is None:
                # a segment a look-ahead has already walked from this very state
                track = plan.get(st.t)
                if track is None or not (track.c is c and track.key == key and
                                         track.p0 == st.p and track.n0 == st.n):
                    track = self._new_track(c, st)
                    if not mine:
                        if len(plan) > 512:
                            plan.clear()
                        plan[track.t0] = track
            t_end = track.t0 + track.t_bd
            if limits is not None:
                hit = track.first_hit(limits, min(t_end, t_stop) - track.t0)
                if hit is not None:
                    track.place(st, hit, None)
                    self._hit_track = track
                    return st.t
            if t_stop < t_end:
                track.place(st, t_stop - track.t0, None)
                st.t = t_stop
                if mine:
                    self._track = track
                return None
            track.place(st, track.t_bd, track.side)
            track = None
            if mine:
                self._track = None
        raise RuntimeError(f"cell {self.name}: a million table segments without reaching "
                           f"t = {t_stop} s; the tables are degenerate")

    def _short_violates(self, c: Circuit, limits) -> bool:
        v_min, v_max, i_min = limits
        if self.mode == "voltage":
            v, i = self.value, self.value / c.short_ohm
        else:
            i = self.value if self.mode == "current" else 0.0
            v = i * c.short_ohm
        return ((v_min is not None and v <= v_min) or (v_max is not None and v >= v_max)
                or (i_min is not None and abs(i) <= i_min))
