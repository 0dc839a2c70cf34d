"""Event-driven sampling, as a mixin of the channel: a measurement loop whose body only
tests its measured values, the timer and values it does not itself change at the top
level (the driver's limit and Δt/ΔV recording blocks) asks the cell's `next_crossing`
for the first sample at which a test can turn true and skips the samples before it,
which changes nothing a host can see."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lipon_hw.sim.emulators.methodscript.parser import FLIPPED, OPS, Block, Cmd, IfChain

NOW, NEVER = -math.inf, math.inf


@dataclass
class _Watch:
    """What a measurement loop body tests: its if-chains and which names are probes
    (E, I measured by the loop, T the timer)."""

    chains: list
    probes: dict[str, str]



class EventDriven:
    """The first sample at which a loop body's tests may turn true."""

    # --- event-driven sampling --------------------------------------------------------
    def _watch(self, st: Block, e_name: str, i_name: str | None) -> _Watch | None:
        """The body's tests if it only tests (see the module docstring), else None."""
        if id(st) not in self._watches:
            self._watches[id(st)] = _analyse(st.body, e_name, i_name)
        return self._watches[id(st)]

    def _next_sample(self, watch: _Watch, t0: float, dt: float, k: int) -> int:
        """The first sample after k at which one of the body's tests may turn true."""
        bound = self._earliest(watch)
        if bound <= self.t:
            return k + 1
        if bound == NEVER:
            return 1 << 62
        return max(k + 1, math.ceil((bound - t0) / dt - 1e-9))

    def _earliest(self, watch: _Watch) -> float:
        t = self.t
        values = {"E": self.cell.voltage_V(t), "I": self.cell.current_A(t), "T": t - self.timer0}
        bounds: dict[tuple, object] = {}
        window = {"lo": [], "hi": [], "imin": []}
        for condition in _conditions(watch.chains):
            bounds[condition] = self._condition_bound(condition, watch.probes, values, window)
        crossing = NEVER
        if any(window.values()):
            found = self.cell.next_crossing(t, max(window["lo"], default=None),
                                            min(window["hi"], default=None),
                                            max(window["imin"], default=None))
            crossing = NEVER if found is None else found
        resolved = {c: crossing if b == "cell" else b for c, b in bounds.items()}
        return min((_chain_bound(chain, resolved) for chain in watch.chains), default=NEVER)

    def _condition_bound(self, condition, probes, values, window):
        """NOW if true now, NEVER if it cannot turn true, a time, or "cell" (the cell's
        crossing of the window collected in `window`)."""
        a, op, b = condition
        if a not in probes and b in probes:
            a, op, b = b, FLIPPED[op], a
        if a not in probes:
            return NOW if OPS[op](self._value(a), self._value(b)) else NEVER
        if b in probes or op in ("==", "!="):
            return NOW
        kind, x = probes[a], self._value(b)
        if OPS[op](values[kind], x):
            return NOW
        rising = op in (">", ">=")
        if kind == "T":
            return self.timer0 + x if rising else NEVER
        if kind == "E":
            window["hi" if rising else "lo"].append(x)
            return "cell"
        if (not rising and x > 0) or (rising and x < 0):  # |I| has to fall to |x|
            window["imin"].append(abs(x))
            return "cell"
        return NOW


def _analyse(body: list, e_name: str, i_name: str | None) -> _Watch | None:
    timers: set[str] = set()
    chains = []
    for st in body:
        if isinstance(st, Cmd) and st.name == "timer_get":
            timers.add(st.args[0])
        elif isinstance(st, IfChain) and st.else_body is None:
            chains.append(_chain(st))
        else:
            return None
    probes = {name: "T" for name in timers}
    probes[e_name] = "E"
    if i_name is not None:
        probes[i_name] = "I"
    return _Watch(chains, probes)


def _chain(chain: IfChain) -> list:
    """[(condition, nested chains or None)]: nested when a branch only holds if-chains,
    so that it acts only when one of them does."""
    out = []
    for condition, body in chain.branches:
        nested = None
        if body and all(isinstance(s, IfChain) and s.else_body is None for s in body):
            nested = [_chain(s) for s in body]
        out.append((condition, nested))
    return out


def _conditions(chains: list):
    for chain in chains:
        for condition, nested in chain:
            yield condition
            if nested:
                yield from _conditions(nested)


def _chain_bound(chain: list, bounds: dict) -> float:
    best = NEVER
    for condition, nested in chain:
        bound = bounds[condition]
        if nested is not None and bound != NEVER:
            bound = max(bound, min((_chain_bound(c, bounds) for c in nested), default=NEVER))
        best = min(best, bound)
    return best

