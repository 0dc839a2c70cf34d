"""MethodSCRIPT data packages → Samples (SI units), fast for the plain lines an
instrument writes, field by field for anything else; many lines at once into columns
(`columns_from_lines`) when every one of them is a plain line of one layout."""

from __future__ import annotations

import binascii
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import fields as dataclass_fields

import numpy as np

from lipon_hw.drivers.methodscript.codec import NAN_FIELD, OFFSET, SI_PREFIXES, Variable
from lipon_hw.readings import Sample

_SAMPLE_FIELDS = {"eb": "t_s", "ab": "E_V", "da": "E_V", "ba": "I_A", "db": "I_A",
                  "dc": "f_Hz", "cc": "z_re_ohm", "cd": "z_im_ohm"}


def sample_from_package(variables: Sequence[Variable]) -> Sample:
    """ValueError if a quantity comes twice: two lines run together by a lost LF."""
    fields = {_SAMPLE_FIELDS[v.type]: v.value for v in variables if v.type in _SAMPLE_FIELDS}
    if len(fields) != sum(v.type in _SAMPLE_FIELDS for v in variables):
        raise ValueError(f"{variables!r} holds a quantity twice")
    return Sample(**fields)


_HEX_DIGITS = "0123456789abcdefABCDEF"
_PLAIN_VARIABLE = r"([a-z]{2})([0-9A-Fa-f]{7})([afpnumkMGTPE i])(?:,[0-9A-Fa-f]+)*"
_PLAIN_LINES: dict[int, re.Pattern] = {}  # by number of variables
_LAYOUTS: dict[tuple[str, ...], list[tuple[int, str]] | None] = {}
_TYPED: dict[tuple[str, ...], tuple[re.Pattern, list[tuple[int, str]], bool]] = {}
_LAST_LAYOUT: list = [None]  # the typed pattern of the last plain line decoded


def _layout(types: tuple[str, ...]) -> list[tuple[int, str]] | None:
    """(group index, Sample field) of each variable type a Sample takes; None if two
    give the same field."""
    if types in _LAYOUTS:
        return _LAYOUTS[types]
    layout = [(3 * k, _SAMPLE_FIELDS[t]) for k, t in enumerate(types) if t in _SAMPLE_FIELDS]
    if len({name for _, name in layout}) != len(layout):
        layout = None
    if len(_LAYOUTS) < 256:
        _LAYOUTS[types] = layout
    return layout


def _typed_pattern(types: tuple[str, ...]) -> tuple[re.Pattern, list[tuple[int, str]], bool]:
    """The plain line pattern with these variable types written in (so a match needs no
    type lookup), (group index, Sample field) of the variables a Sample takes, and
    whether those are a Sample's first fields in order (positional arguments)."""
    typed = _TYPED.get(types)
    if typed is None:
        pattern = re.compile("P" + ";".join(_PLAIN_VARIABLE.replace("([a-z]{2})", t)
                                            for t in types))
        layout = [(2 * k, _SAMPLE_FIELDS[t]) for k, t in enumerate(types)
                  if t in _SAMPLE_FIELDS]
        order = [f.name for f in dataclass_fields(Sample)]
        in_order = [name for _, name in layout] == order[:len(layout)]
        typed = (pattern, layout, in_order)
        if len(_TYPED) < 64:
            _TYPED[types] = typed
    return typed


def sample_from_line(line: str) -> Sample:
    """A `P…` line → its Sample: `sample_from_package(decode_package(line))` in one pass
    (the same checks, the same ValueErrors) without building the Variables. A line in
    the plain form the instrument writes is matched at once; others are checked field by
    field."""
    last = _LAST_LAYOUT[0]  # the lines of a run share their variable types
    if last is not None and (match := last[0].fullmatch(line)) is not None:
        groups = match.groups()
        values = []
        for k, _ in last[1]:
            raw = int(groups[k], 16) - OFFSET
            prefix = groups[k + 1]
            values.append(raw if prefix == "i" else raw * SI_PREFIXES[prefix])
        if last[2]:  # the first fields of a Sample, in its order
            return Sample(*values)
        return Sample(**{name: v for (_, name), v in zip(last[1], values, strict=True)})
    count = line.count(";") + 1
    pattern = _PLAIN_LINES.get(count)
    if pattern is None:
        pattern = _PLAIN_LINES[count] = re.compile("P" + ";".join([_PLAIN_VARIABLE] * count))
    match = pattern.fullmatch(line)
    if match is not None:
        groups = match.groups()
        layout = _layout(groups[::3])
        if layout is None:
            raise ValueError(f"{line!r} holds a quantity twice")
        fields = {}
        for k, name in layout:
            raw = int(groups[k + 1], 16) - OFFSET
            prefix = groups[k + 2]
            fields[name] = raw if prefix == "i" else raw * SI_PREFIXES[prefix]
        _LAST_LAYOUT[0] = _typed_pattern(groups[::3])
        return Sample(**fields)
    body = line.rstrip("\n")
    if not line.startswith("P") or len(body) < 11:
        raise ValueError(f"{line!r} is not a data package")
    fields: dict[str, float] = {}
    count = 0
    for part in body[1:].split(";"):
        field, *meta = part.split(",")
        if len(field) != 10 or not field[:2].isalpha() or not field[:2].islower():
            raise ValueError(f"{part!r} is not a package variable")
        for token in meta:
            if not token or token.strip(_HEX_DIGITS):
                raise ValueError(f"{part!r} has metadata {token!r} that is not hex")
        prefix = field[9]
        if field[2:] == NAN_FIELD:
            value = math.nan
        elif prefix == "i":
            value = int(field[2:9], 16) - OFFSET
        elif prefix in SI_PREFIXES:
            value = (int(field[2:9], 16) - OFFSET) * SI_PREFIXES[prefix]
        else:
            raise ValueError(f"{field[2:]!r} is not a package value")
        name = _SAMPLE_FIELDS.get(field[:2])
        if name is not None:
            fields[name] = value
            count += 1
    if len(fields) != count:
        raise ValueError(f"{line!r} holds a quantity twice")
    return Sample(**fields)



#: a stretch of fewer data lines is decoded line by line (`sample_from_line`); a longer
#: one at once: column by column with slices of its bytes when its lines are of one length,
#: else with the regular expression's groups
MANY_LINES = 8
_BLOCKS: dict[tuple[str, ...], tuple] = {}  # by variable types: patterns and field places
_BYTE_SCALES = {p.encode("ascii"): scale for p, scale in SI_PREFIXES.items()}
_PREFIX_SCALES = {ord(p): scale for p, scale in SI_PREFIXES.items()}
_UNBIAS = (-OFFSET).__add__  # a package value's mantissa from its seven hex digits


def columns_from_lines(lines: list[bytes]) -> dict[str, list | np.ndarray] | None:
    """`P…` lines, each with its LF, → {Sample field: its values, in order}: what
    `sample_from_line` gives line by line (the same floats), when every line is a plain
    one with the first line's variable types and no `i` (integer) value; else None, and
    the caller decodes them one by one (and judges the others)."""
    return columns_from_block(b"".join(lines), len(lines))


def columns_from_block(data: bytes, n: int) -> dict[str, list | np.ndarray] | None:
    """`columns_from_lines` of n lines given as one bytes object (each line with its
    LF, and no other LF in it)."""
    first = data[:data.find(b"\n") + 1]
    try:
        head = first[:-1].decode("ascii")
    except UnicodeDecodeError:
        return None
    count = head.count(";") + 1
    pattern = _PLAIN_LINES.get(count)
    if pattern is None:
        pattern = _PLAIN_LINES[count] = re.compile("P" + ";".join([_PLAIN_VARIABLE] * count))
    match = pattern.fullmatch(head)
    if match is None or _layout(match.groups()[::3]) is None:
        return None
    types = match.groups()[::3]
    block = _BLOCKS.get(types)
    if block is None:
        value = rb"([0-9A-Fa-f]{7})([afpnumkMGTPE i])(?:,[0-9A-Fa-f]+)*"
        line = b"P" + b";".join(t.encode("ascii") + value for t in types) + b"\n"
        layout = [(2 * k, _SAMPLE_FIELDS[t]) for k, t in enumerate(types)
                  if t in _SAMPLE_FIELDS]
        plain = line.replace(b"([", b"(?:[")  # the same line without its groups
        block = (re.compile(b"(?:" + plain + b")+"), re.compile(line), layout)
        if len(_BLOCKS) < 64:
            _BLOCKS[types] = block
    whole, one, layout = block
    width = len(first)
    if n >= MATRIX_LINES and len(data) == n * width:
        columns = _columns_as_matrix(data, n, width, match, layout)
        if columns is not None:
            return columns
    if whole.fullmatch(data) is None:
        return None
    if len(data) == n * width:
        columns = _columns_in_place(data, n, width, match, layout)
        if columns is not None:
            return columns
    groups = one.findall(data)
    columns = {}
    for k, name in layout:
        prefixes = [g[k + 1] for g in groups]
        if b"i" in prefixes:
            return None
        columns[name] = [(int(g[k], 16) - OFFSET) * _BYTE_SCALES[p]
                         for g, p in zip(groups, prefixes, strict=True)]
    return columns


def _columns_in_place(data: bytes, n: int, width: int, match: re.Match, layout
                      ) -> dict | None:
    """The columns of n lines of `width` bytes whose variables all sit where the first
    line's do (its `;` in the same places): each value's digits taken from every line at
    once (a slice of the bytes with a step of one line), read as 32-bit numbers; None if
    the lines are not so aligned or hold an integer value."""
    for j in range(1, len(match.groups()) // 3):
        if data[match.start(3 * j + 1) - 1::width] != b";" * n:
            return None
    columns = {}
    for k, name in layout:
        at = match.start(3 * (k // 2) + 2)  # the value's seven hex digits in a line
        digits = bytearray(b"0" * (8 * n))  # each value as eight hex digits
        for d in range(7):
            digits[d + 1::8] = data[at + d::width]
        raw = struct.unpack(f">{n}I", binascii.unhexlify(digits))
        prefixes = data[at + 7::width]
        if prefixes.count(prefixes[0]) == n:
            scale = _PREFIX_SCALES.get(prefixes[0])
            if scale is None:
                return None  # an integer value: one by one
            # (raw − OFFSET)·scale, as line by line (a product is the same either way round)
            columns[name] = list(map(scale.__rmul__, map(_UNBIAS, raw)))
        else:
            if b"i" in prefixes:
                return None
            columns[name] = [(r - OFFSET) * _PREFIX_SCALES[p]
                             for r, p in zip(raw, prefixes, strict=True)]
    return columns


#: a stretch of at least as many lines of one length is read as one matrix of bytes
MATRIX_LINES = 16
_HEX_VALUES = np.full(256, np.nan)  # a hex digit's value; NaN: not a hex digit
for _digit in _HEX_DIGITS:
    _HEX_VALUES[ord(_digit)] = int(_digit, 16)
_SCALE_OF = np.full(256, np.nan)  # a prefix's scale; NaN: not an SI prefix (`i` neither)
for _prefix, _scale in SI_PREFIXES.items():
    _SCALE_OF[ord(_prefix)] = _scale
_IS_PREFIX = ~np.isnan(_SCALE_OF)
_IS_PREFIX[ord("i")] = True  # another variable may hold an integer
_POWERS = 16.0 ** np.arange(6, -1, -1)  # of a value's seven hex digits
_MATRICES: dict[tuple, tuple] = {}  # by line shape: the byte columns of its parts


def _columns_as_matrix(data: bytes, n: int, width: int, match: re.Match, layout
                       ) -> dict | None:
    """The columns of n lines of `width` bytes, each with one LF, as one (n, width) matrix
    of bytes: every byte outside the values' digits and prefixes the same as the first
    line's (which `match` found plain), every digit a hex digit and every prefix an SI
    prefix; each value (raw − 2^27)·scale, as line by line. None if a line differs (the
    caller reads them its other ways)."""
    count = len(match.groups()) // 3
    starts = tuple(match.start(3 * j + 2) for j in range(count))
    key = (starts, width, tuple(layout))
    shape = _MATRICES.get(key)
    if shape is None:
        shape = _matrix_shape(starts, width, layout)
        if len(_MATRICES) < 64:
            _MATRICES[key] = shape
    digits, prefixes, fixed, others, names = shape
    rows = np.frombuffer(data, np.uint8).reshape(n, width)
    same = rows.take(fixed, axis=1)
    if same.tobytes() != same[0].tobytes() * n:
        return None
    if others is not None:  # the variables a Sample does not take: hex and a prefix too
        other_digits, other_prefixes = others
        if np.isnan(_HEX_VALUES.take(rows.take(other_digits, axis=1)).sum()) or \
                not _IS_PREFIX.take(rows.take(other_prefixes, axis=1)).all():
            return None
    # each value's digits weighed by their powers of 16: the raw number, exact in a double
    raw = (_HEX_VALUES.take(rows.take(digits, axis=1)).reshape(-1, 7) @ _POWERS).reshape(n, -1)
    # (raw − OFFSET)·scale, as line by line: the same product of two doubles
    table = (raw - OFFSET) * _SCALE_OF.take(rows.take(prefixes, axis=1))
    if math.isnan(table.sum()):  # a digit not hex, a prefix not SI (an integer value)
        return None
    return dict(zip(names, np.ascontiguousarray(table.T), strict=True))  # a 1-D array each


def _matrix_shape(starts: tuple[int, ...], width: int, layout) -> tuple:
    """The byte columns of a line's parts: the digits and the prefixes of the variables a
    Sample takes, the bytes every line shares, those of the other variables (or None),
    and the Sample fields in order."""
    taken = [k // 2 for k, _ in layout]
    other = [j for j in range(len(starts)) if j not in taken]

    def places(variables: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([starts[j] + d for j in variables for d in range(7)], np.intp),
                np.array([starts[j] + 7 for j in variables], np.intp))

    digits, prefixes = places(taken)
    every = np.concatenate([*places(list(range(len(starts))))])
    fixed = np.setdiff1d(np.arange(width), every)
    return (digits, prefixes, fixed, places(other) if other else None,
            [name for _, name in layout])
