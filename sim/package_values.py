"""MethodSCRIPT package values for many samples at once.

An emulator sending a batch of samples encodes each value as `encode_value` in
drivers/methodscript.py does (7 hex digits of the mantissa + 2^27 and the finest SI
prefix whose mantissa fits); here the prefixes and mantissas come from array arithmetic,
so only the formatting is left per value. The strings are the same.
"""

from __future__ import annotations

import numpy as np

from lipon_hw.drivers.methodscript import (
    MAX_MANTISSA,
    NAN_FIELD,
    OFFSET,
    SI_PREFIXES,
    encode_value,
)

FEW = 8  # fewer values are encoded one by one (array set-up would cost more)
_PREFIXES = tuple(SI_PREFIXES)  # finest first
_SCALES = np.array([SI_PREFIXES[p] for p in _PREFIXES])
_LIMITS = MAX_MANTISSA * _SCALES  # the largest |value| each prefix holds, about


def encode_values(values) -> list[str]:
    """encode_value(v) for every v (floats, no fixed prefix)."""
    if len(values) <= FEW:
        return [encode_value(x) for x in values]
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    if not finite.all():
        v = np.where(finite, v, 0.0)
    # the first prefix whose limit holds |v| always fits; the one before may, by rounding
    start = np.searchsorted(_LIMITS, np.abs(v), "left")
    fine, coarse = np.maximum(start - 1, 0), np.minimum(start, len(_PREFIXES) - 1)
    m_fine = np.round(v / _SCALES[fine])  # half to even, as round()
    m_coarse = np.round(v / _SCALES[coarse])
    use_fine = np.abs(m_fine) <= MAX_MANTISSA
    index = np.where(use_fine, fine, np.where(np.abs(m_coarse) <= MAX_MANTISSA, coarse, -1))
    index[~finite] = -1
    mantissa = np.where(index >= 0, np.where(use_fine, m_fine, m_coarse), 0.0)
    return [f"{m + OFFSET:07X}{_PREFIXES[k]}" if k >= 0 else NAN_FIELD
            for m, k in zip(mantissa.astype(np.int64).tolist(), index.tolist(), strict=True)]
