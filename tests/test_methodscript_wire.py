"""The MethodSCRIPT wire at numpy speed: a poll's data lines written as one matrix of
bytes by the emulator (`encode_rows`) and read as one by the driver
(`columns_from_lines`) must give what the scalar code gives value by value."""

from __future__ import annotations

import math
import random

from lipon_hw.drivers.methodscript import SI_PREFIXES, encode_value
from lipon_hw.sim.package_values import encode_rows

LIMIT = (1 << 27) - 1


def _edge_values() -> list[float]:
    """Values at and around every prefix boundary (where rounding picks the prefix),
    both signs, zeros, non-finite and out-of-range values."""
    values = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-30, 1e30, 1e40, -1e40]
    for scale in SI_PREFIXES.values():
        for edge in (LIMIT, LIMIT + 0.5, LIMIT + 0.49999, LIMIT + 0.50001, LIMIT + 1,
                     LIMIT + 2, LIMIT + 3, 1, 0.5, 1.5, 2.5):
            for v in (edge * scale, math.nextafter(edge * scale, 0),
                      math.nextafter(edge * scale, math.inf)):
                values += [v, -v]
    return values


def _scalar_rows(template: str, columns: dict[int, list], texts: dict[int, str]) -> bytes:
    n = len(next(iter(columns.values())))
    slots = len(columns) + len(texts)
    return "".join(template.format(*[encode_value(columns[k][r]) if k in columns else texts[k]
                                     for k in range(slots)]) for r in range(n)).encode("ascii")


def test_rows_written_at_once_are_the_bytes_written_value_by_value():
    """encode_rows against encode_value over random values of every size and sign, half
    way points (rounding half to even), prefix boundaries, NaN and infinities mixed in
    anywhere in a block, in templates with the value slots in any order."""
    rng = random.Random(5)
    edges = _edge_values()
    templates = [("Peb{0};da{1};{2}\n", {2: "ba7FFD1EBn,10,20C"}),
                 ("Peb{0};ab{1}\n", {}), ("P{2}x{1}%{0}|\n", {2: "q%s{}"})]
    lonely = 0
    for trial in range(600):
        template, texts = templates[trial % len(templates)]
        n = rng.randrange(1, 80)
        columns = {}
        for k in (0, 1):
            kind = rng.random()
            if kind < 0.3:  # of like size, as a step's timer or potential
                scale = 10 ** rng.uniform(-19, 19)
                column = [rng.choice((-1, 1)) * scale * rng.uniform(1, 1.3) for _ in range(n)]
            elif kind < 0.6:  # any size
                column = [rng.uniform(-1, 1) * 10 ** rng.uniform(-22, 22) for _ in range(n)]
            else:  # integers and half-integers of a prefix: round() decides
                scale = rng.choice(list(SI_PREFIXES.values()))
                column = [rng.randrange(-LIMIT, LIMIT) / 2 * scale for _ in range(n)]
            for _ in range(rng.randrange(0, 4)):  # boundary values, anywhere in the block
                column[rng.randrange(n)] = rng.choice(edges)
            columns[k] = column
        lonely += sum(v in edges for c in columns.values() for v in c)
        assert encode_rows(template, columns, texts) == _scalar_rows(template, columns, texts)
    assert lonely > 500
    every = {0: edges, 1: edges[::-1]}  # every edge value in one block
    assert encode_rows("Peb{0};ab{1}\n", every, {}) == _scalar_rows("Peb{0};ab{1}\n", every, {})
