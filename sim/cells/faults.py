"""Cell faults (soft and hard shorts, opens, a high interface resistance): their
description, parsing from a station or test, and seeded draws for a campaign."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAULT_KINDS = ("soft_short", "hard_short", "open", "high_interface")


@dataclass
class Fault:
    kind: str
    at_s: float | None = None  # onset, absolute time
    at_cycle: float | None = None  # onset, equivalent full cycles
    ohm: float | None = None  # soft/hard short or open resistance (default: the cell's)
    factor: float | None = None  # high interface resistance multiplier (default: the cell's)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def as_fault(spec) -> Fault:
    """A fault from a kind name or a dict {kind, at_s, at_cycle, ohm, factor}."""
    if isinstance(spec, Fault):
        return spec
    data = {"kind": spec} if isinstance(spec, str) else dict(spec)
    unknown = set(data) - {"kind", "at_s", "at_cycle", "ohm", "factor"}
    if unknown:
        raise ValueError(f"fault {spec!r} has unknown keys {sorted(unknown)}")
    if data.get("kind") not in FAULT_KINDS:
        raise ValueError(f"fault kind {data.get('kind')!r} is not one of {', '.join(FAULT_KINDS)}")
    return Fault(**data)


def draw_faults(rng: np.random.Generator, probability: dict[str, float],
                within_cycles: float | None = None) -> list[dict]:
    """Seeded faults for one cell: each kind appears with its probability, from the start
    or at a uniformly drawn cycle below `within_cycles` (rates are assumptions of the caller)."""
    out = []
    for kind in FAULT_KINDS:
        if rng.random() < probability.get(kind, 0.0):
            fault = {"kind": kind}
            if within_cycles:
                fault["at_cycle"] = float(rng.uniform(0.0, within_cycles))
            out.append(fault)
    return out
