"""The World: the physical state that every simulated instrument shares.

One World per simulated lab, on one clock: `env.now` of the simpy environment
the engine runs on (virtual time), or a scaled wall clock under `sim serve`.
Models integrate lazily from their last update to the clock when touched
(`sync()`), so cost follows what is asked, not how much time passes.
Randomness comes from one seeded generator: the same seed gives the same run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lipon_hw.sim.sputter_tool import SputterTool


class World:
    def __init__(self, clock: Callable[[], float], seed: int = 0):
        self.clock = clock
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.sputter = SputterTool(self)
        self._t = clock()
        self.sputter.s.t = self._t

    @property
    def now(self) -> float:
        return self.clock()

    def sync(self) -> None:
        t = self.clock()
        if t > self._t:
            self.sputter.advance(t)
            self._t = t

    def tool(self, name: str):
        tools = {"sputter": self.sputter}
        if name not in tools:
            raise KeyError(f"the simulated lab has no tool {name!r} (has {', '.join(tools)})")
        return tools[name]

    # --- checkpoints ------------------------------------------------------------
    def snapshot(self) -> dict:
        self.sync()
        return {"t": self._t, "rng": self.rng.bit_generator.state,
                "sputter": self.sputter.snapshot()}

    def restore(self, snap: dict) -> None:
        self.rng.bit_generator.state = snap["rng"]
        self.sputter.restore(snap["sputter"])
        self._t = snap["t"]
