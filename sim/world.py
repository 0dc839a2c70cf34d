"""The World: the physical state that every simulated instrument shares.

One World per simulated lab, on one clock: `env.now` of the simpy environment
the engine runs on (virtual time), or a scaled wall clock under `sim serve`.
Models integrate lazily from their last update to the clock when touched
(`sync()`), so cost follows what is asked, not how much time passes.
Randomness comes from one seeded generator: the same seed gives the same run.

The substrate — the sample being made — belongs to the World, not to a tool:
a LiPON layer sputtered in one chamber is under the Cu evaporated in the next.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lipon_hw.sim.evaporator_tool import EvaporatorTool
from lipon_hw.sim.sputter_tool import SputterTool

#: the tools of the simulated lab, by the name a station's `sim: {tool: …}` gives
TOOLS = {"sputter": SputterTool, "evaporator": EvaporatorTool}


class World:
    def __init__(self, clock: Callable[[], float], seed: int = 0):
        self.clock = clock
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.layers: list[dict] = []
        self._t = clock()
        self._advancing = False
        #: the lab's fault schedule (`lipon_hw.sim.fault_schedule`): its events fire here
        self.schedule = None
        self.tools = {name: cls(self) for name, cls in TOOLS.items()}
        for tool in self.tools.values():
            tool.s.t = self._t

    @property
    def sputter(self) -> SputterTool:
        return self.tools["sputter"]

    @property
    def evaporator(self) -> EvaporatorTool:
        return self.tools["evaporator"]

    @property
    def now(self) -> float:
        return self.clock()

    def sync(self) -> None:
        """Advance every tool to the clock. Re-entrant calls (an instrument's control
        loop using accessors from inside a tool's step) see the World as it is."""
        t = self.clock()
        if self._advancing:
            return
        due = self.schedule is not None and self.schedule.next_s <= t
        if t > self._t or due:
            self._advancing = True
            try:
                if due:  # each fault acts with the tools advanced to its own time
                    for te, action in self.schedule.pop_due(t):
                        self._advance_tools(te)
                        action(max(te, self._t))
                self._advance_tools(t)
            finally:
                self._advancing = False

    def _advance_tools(self, t: float) -> None:
        if t > self._t:
            for tool in self.tools.values():
                tool.advance(t)
            self._t = t

    def tool(self, name: str):
        if name not in self.tools:
            raise KeyError(f"the simulated lab has no tool {name!r} "
                           f"(has {', '.join(self.tools)})")
        return self.tools[name]

    # --- the substrate --------------------------------------------------------------
    def grow(self, material: str, added_nm: float, t: float, properties: dict[str, float]) -> None:
        """Add film to the substrate; a new material starts a new layer. Numeric
        properties are averaged over the layer, weighted by thickness."""
        if not self.layers or self.layers[-1]["material"] != material:
            self.layers.append({"material": material, "thickness_nm": 0.0,
                                "t_start_s": t, "t_end_s": t})
        layer = self.layers[-1]
        total = layer["thickness_nm"] + added_nm
        if total <= 0:
            return
        w_new = added_nm / total
        for key, value in properties.items():
            layer[key] = layer.get(key, value) * (1 - w_new) + value * w_new
        layer["thickness_nm"], layer["t_end_s"] = total, t

    def film_stack(self) -> list[dict]:
        self.sync()
        return [dict(layer) for layer in self.layers]

    # --- checkpoints ------------------------------------------------------------
    def snapshot(self) -> dict:
        self.sync()
        return {"t": self._t, "rng": self.rng.bit_generator.state,
                "layers": [dict(layer) for layer in self.layers],
                "tools": {name: tool.snapshot() for name, tool in self.tools.items()}}

    def restore(self, snap: dict) -> None:
        self.rng.bit_generator.state = snap["rng"]
        self.layers = [dict(layer) for layer in snap["layers"]]
        for name, state in snap["tools"].items():
            self.tools[name].restore(state)
        self._t = snap["t"]
