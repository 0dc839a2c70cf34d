"""The simulated lab of a station: one World and one emulator per `sim://` address.

Instruments sharing an address (two gauge channels on one controller, a shutter
and valves on one relay module) share one emulator, as they share one box.
The emulator is chosen by the first instrument's driver; its settings are the
union of the instruments' `sim:` sections (e.g. `rated_power_W`, `tool`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from lipon_hw.errors import InputError
from lipon_hw.sim.emulators import EMULATORS
from lipon_hw.sim.world import World


class SimLab:
    def __init__(self, spec, clock: Callable[[], float], seed: int):
        self.world = World(clock, seed=seed)
        self.emulators: dict = {}
        self.drivers: dict[str, str] = {}
        settings: dict[str, dict] = {}
        for inst in spec.instruments.values():
            if not inst.address.startswith("sim://"):
                continue
            endpoint = inst.address[len("sim://"):]
            self.drivers.setdefault(endpoint, inst.driver)
            settings.setdefault(endpoint, {}).update(inst.sim)
        for endpoint, driver in self.drivers.items():
            cls = emulator_class(driver)
            kwargs = dict(settings[endpoint])
            tool = self.world.tool(kwargs.pop("tool", "sputter"))
            self.emulators[endpoint] = cls(endpoint, tool, **kwargs)

    def snapshot(self) -> dict:
        """World and instrument memories, JSON-serialisable, for checkpoints."""
        return {"world": self.world.snapshot(),
                "emulators": {name: emu.snapshot() for name, emu in self.emulators.items()
                              if hasattr(emu, "snapshot")}}

    def restore(self, snap: dict) -> None:
        self.world.restore(snap["world"])
        for name, state in snap["emulators"].items():
            self.emulators[name].restore(state)


def emulator_class(driver: str) -> type:
    target = EMULATORS.get(driver)
    if target is None:
        raise InputError(f"driver {driver!r} has no emulator, so it cannot use a sim:// address")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)
