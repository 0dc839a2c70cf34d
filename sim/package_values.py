"""MethodSCRIPT package values for many samples at once.

An emulator sending a batch of samples encodes each value as `encode_value` in
drivers/methodscript.py does (7 hex digits of the mantissa + 2^27 and the finest SI
prefix whose mantissa fits). The values of a batch mostly share their prefix (a
stretch of times, of potentials): such a run of values is scaled, rounded and formatted
by `map` over the run, without a call per value; a value near a prefix boundary (where
rounding decides) or not finite is encoded on its own. `encode_lines` writes whole lines
of such columns with one %-format; `encode_rows` writes many lines of one layout as one
matrix of bytes with numpy (every value is eight characters wide). The strings are the
same.
"""

from __future__ import annotations

import math
import string
from bisect import bisect_left
from itertools import chain, groupby, repeat
from operator import truediv

import numpy as np

from lipon_hw.drivers.methodscript import MAX_MANTISSA, OFFSET, SI_PREFIXES, encode_value

_PREFIXES = tuple(SI_PREFIXES)  # finest first
_SCALES = [SI_PREFIXES[p] for p in _PREFIXES]
_LIMITS = [MAX_MANTISSA * s for s in _SCALES]  # the largest |value| each prefix holds
#: at or below this |value| a prefix may still hold it after rounding (with a margin):
#: the value is encoded on its own, which decides
_NEAR = [(MAX_MANTISSA + 2) * s for s in _SCALES]
_FORMATS = [f"{{:07X}}{p}".format for p in _PREFIXES]
FEW = 8  # fewer values are encoded one by one (the runs' set-up would cost more)


def encode_values(values) -> list[str]:
    """encode_value(v) for every v (floats, no fixed prefix)."""
    values = values if isinstance(values, list) else list(values)
    if len(values) <= FEW or not all(map(math.isfinite, values)):
        return [encode_value(x) for x in values]
    magnitudes = list(map(abs, values))
    # the first prefix whose limit holds |v| holds it; the one finer only by rounding
    first = list(map(bisect_left, repeat(_LIMITS), magnitudes))
    out: list[str] = []
    at = 0
    for k, run in groupby(first):
        n = len(list(run))
        chunk = values[at:at + n]
        if k >= len(_PREFIXES) or (k > 0 and min(magnitudes[at:at + n]) <= _NEAR[k - 1]):
            out += [encode_value(x) for x in chunk]
        else:
            out += map(_FORMATS[k], map(OFFSET.__add__,
                                        map(round, map(truediv, chunk, repeat(_SCALES[k])))))
        at += n
    return out


def encode_batch(template: str, columns: dict[int, list], texts: dict[int, str]) -> str:
    """`template.format(*row)` for every row, slot {k} being encode_value(columns[k][row])
    or texts[k]: at once by `encode_lines` where it can be, else in runs whose first
    column keeps its prefix (a loop's timer changes prefix once or twice in a step), each
    at once where it can be, else value by value."""
    text = encode_lines(template, columns, texts)
    if text is not None:
        return text
    key = next(iter(columns))
    first = list(map(bisect_left, repeat(_LIMITS), map(abs, columns[key])))
    out, at = [], 0
    for _, run in groupby(first):
        n = len(list(run))
        part = {k: column[at:at + n] for k, column in columns.items()}
        text = encode_lines(template, part, texts) if n > 1 else None
        if text is None:
            encoded = {k: encode_values(column) for k, column in part.items()}
            text = "".join(template.format(*[encoded[k][row] if k in encoded else texts[k]
                                             for k in range(len(columns) + len(texts))])
                           for row in range(n))
        out.append(text)
        at += n
    return "".join(out)


def encode_lines(template: str, columns: dict[int, list], texts: dict[int, str]) -> str | None:
    """`template.format(*row)` for every row, where slot {k} is encode_value(columns[k][row])
    or the text texts[k] (the same in every row), written by one %-format of the batch;
    None when a column's values do not all take one prefix (the caller encodes them one
    by one then)."""
    biased, prefixes = {}, {}
    for k, column in columns.items():
        shared = _shared_prefix(column)
        if shared is None:
            return None
        prefixes[k] = _PREFIXES[shared]
        biased[k] = list(map(OFFSET.__add__, map(round, map(truediv, column,
                                                            repeat(_SCALES[shared])))))
    key = (template, tuple(prefixes.items()), tuple(texts.items()))
    form = _FORMS.get(key)
    if form is None:
        form = _form(template, prefixes, texts)
        if len(_FORMS) < 256:
            _FORMS[key] = form
    line, order = form
    n = len(next(iter(columns.values())))
    return (line * n) % tuple(chain.from_iterable(zip(*[biased[k] for k in order],
                                                      strict=True)))


_FORMS: dict[tuple, tuple[str, list[int]]] = {}


def _form(template: str, prefixes: dict[int, str], texts: dict[int, str]
          ) -> tuple[str, list[int]]:
    """A line template as a %-format (each value slot seven hex digits and its prefix, the
    texts written in) and the columns its %X take, in order."""
    line, order = [], []
    for literal, slot, _, _ in string.Formatter().parse(template):
        line.append(literal.replace("%", "%%"))
        if slot is not None:
            k = int(slot)
            if k in prefixes:
                line.append("%07X" + prefixes[k])
                order.append(k)
            else:
                line.append(texts[k].replace("%", "%%"))
    return "".join(line), order


def _shared_prefix(values: list) -> int | None:
    """The index of the prefix encode_value gives every one of the values, if it is one
    and no rounding can change it (every value finite, away from a boundary); else None."""
    if not values or not math.isfinite(sum(values)):  # a NaN or an infinity: not finite
        return None
    low, high = min(values), max(values)
    if low < 0 < high:
        magnitudes = list(map(abs, values))
        low, high = min(magnitudes), max(magnitudes)
    elif high <= 0:
        low, high = -high, -low
    k = bisect_left(_LIMITS, low)
    if k >= len(_PREFIXES) or bisect_left(_LIMITS, high) != k or (k > 0 and low <= _NEAR[k - 1]):
        return None
    return k


# --- whole lines of one layout as a matrix of bytes ----------------------------------
_LIMITS_ARRAY = np.array(_LIMITS)
_SCALES_ARRAY = np.array(_SCALES)
#: _NEAR shifted by one (the bound below prefix k is _NEAR[k − 1]; none below the finest)
_NEAR_BELOW = np.array([-1.0, *_NEAR])
_PREFIX_BYTES = np.frombuffer("".join(_PREFIXES).encode("ascii"), np.uint8)
#: the two hex digits of every byte value, as one 16-bit word each
_HEX_PAIRS = np.frombuffer("".join(f"{b:02X}" for b in range(256)).encode("ascii"),
                           np.uint16)
_LITTLE_U32 = np.dtype("<u4")
_ROWS: dict[tuple, tuple[np.ndarray, list[tuple[int, int]]]] = {}


def encode_rows(template: str, columns: dict[int, list], texts: dict[int, str]) -> bytes:
    """`template.format(*row)` for every row, as `encode_lines` writes it, in ASCII: slot
    {k} is encode_value(columns[k][row]) or texts[k]. Each value takes eight characters,
    so the rows are one matrix of bytes: the template's own bytes in every row, and every
    value's seven hex digits and prefix written in at once (the prefix found by bisection
    on the limits, the mantissa scaled and rounded half to even, as `round` does). A
    value near a prefix boundary (where rounding decides) or not finite is encoded on its
    own by encode_value; the bytes are the same."""
    row, places = _row(template, texts)
    n = len(next(iter(columns.values())))
    values = np.array([columns[k] for k, _ in places], dtype=float).reshape(-1)  # by slot
    magnitudes = np.abs(values)
    first = _LIMITS_ARRAY.searchsorted(magnitudes)  # bisect_left, value by value
    alone = first >= len(_PREFIXES)  # too large, or NaN (sorted last)
    alone |= magnitudes <= _NEAR_BELOW[np.minimum(first, len(_PREFIXES))]
    lonely = np.count_nonzero(alone)
    if lonely:
        first[alone] = 0
        values[alone] = 0.0
    # the mantissa + 2^27 shifted one hex digit up: eight digits, the last one 0
    biased = (np.rint(values / _SCALES_ARRAY[first]) + OFFSET).astype(_LITTLE_U32) << 4
    fields = _HEX_PAIRS.take(biased.view(np.uint8).reshape(-1, 4)[:, ::-1]).view(np.uint8)
    fields[:, 7] = _PREFIX_BYTES[first]  # (value, 8) bytes: its digits, its prefix
    if lonely:
        for r in np.flatnonzero(alone).tolist():
            fields[r] = np.frombuffer(encode_value(columns[places[r // n][0]][r % n]).encode(
                "ascii"), np.uint8)
    out = np.empty((n, len(row)), np.uint8)
    out[:] = row
    for c, (_, at) in enumerate(places):
        out[:, at:at + 8] = fields[c * n:(c + 1) * n]
    return out.tobytes()


def _row(template: str, texts: dict[int, str]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A row's bytes (its value slots blank) and (column, where its slot starts) of each
    value slot."""
    key = (template, tuple(texts.items()))
    found = _ROWS.get(key)
    if found is not None:
        return found
    parts, places, width = [], [], 0
    for literal, slot, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        width += len(literal)
        if slot is not None:
            k = int(slot)
            if k in texts:
                parts.append(texts[k])
                width += len(texts[k])
            else:
                places.append((k, width))
                parts.append(" " * 8)
                width += 8
    found = (np.frombuffer("".join(parts).encode("ascii"), np.uint8).copy(), places)
    if len(_ROWS) < 256:
        _ROWS[key] = found
    return found
