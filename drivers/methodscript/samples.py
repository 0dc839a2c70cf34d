"""MethodSCRIPT data packages → Samples (SI units), fast for the plain lines an
instrument writes, field by field for anything else."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import fields as dataclass_fields

from lipon_hw.drivers.methodscript.codec import NAN_FIELD, OFFSET, SI_PREFIXES, Variable
from lipon_hw.techniques import Sample

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

