"""`state_dict`: a dataclass as the dict `dataclasses.asdict` gives, at a fraction of its cost.

Checkpoints snapshot the simulated lab's states (tools, instrument memories) once a minute of
run time, a thousand times and more in a day-long deposition, and `asdict` sends every float
through `copy.deepcopy`. A state holds numbers, strings, None and lists, tuples and dicts of
them, which `state_dict` copies directly; a state holding anything else (a nested dataclass,
another type) is given to `asdict` itself, so the result is asdict's whatever the state.
"""

from __future__ import annotations

import dataclasses

_ATOMS = frozenset({int, float, bool, str, type(None)})
_OTHER = object()  # a value `_plain` does not copy
_FIELDS: dict[type, tuple[str, ...]] = {}


def state_dict(obj) -> dict:
    """`dataclasses.asdict(obj)`: an equal dict, copied as deep."""
    names = _FIELDS.get(type(obj))
    if names is None:
        names = _FIELDS[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
    out = {}
    for name in names:
        value = getattr(obj, name)
        if type(value) not in _ATOMS:
            value = _plain(value)
            if value is _OTHER:
                return dataclasses.asdict(obj)
        out[name] = value
    return out


def _plain(value):
    """A copy of a list, tuple or dict of atoms (nested), or _OTHER."""
    kind = type(value)
    if kind is list or kind is tuple:
        items = [v if type(v) in _ATOMS else _plain(v) for v in value]
        if any(v is _OTHER for v in items):
            return _OTHER
        return items if kind is list else tuple(items)
    if kind is dict:
        if not all(type(k) in _ATOMS for k in value):
            return _OTHER
        items = {k: v if type(v) in _ATOMS else _plain(v) for k, v in value.items()}
        return _OTHER if any(v is _OTHER for v in items.values()) else items
    return _OTHER
