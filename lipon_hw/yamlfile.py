"""YAML with line numbers, so every error can say `file:line: field: what is wrong`.

`load(path)` returns a `Doc`: the plain data and a map from each value's path
(a tuple of keys and list indices) to its line. `Doc.error(loc, message)` builds
the one-sentence `InputError` the CLI prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lipon_hw.errors import InputError


@dataclass
class Doc:
    path: str
    data: object
    lines: dict[tuple, int] = field(default_factory=dict)

    def line(self, loc: Sequence) -> int:
        loc = tuple(loc)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def error(self, loc: Sequence, message: str) -> InputError:
        where = field_name(loc)
        prefix = f"{self.path}:{self.line(loc)}: "
        return InputError(prefix + (f"{where}: " if where else "") + message)


def field_name(loc: Sequence) -> str:
    """('steps', 3, 'rf', 'power_W') → 'steps[3].rf.power_W'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def load(path: str | Path) -> Doc:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None
    return loads(text, str(path))


def loads(text: str, name: str) -> Doc:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{name}:{line}: this is not valid YAML ({problem})") from None
    doc = Doc(name, data)
    if node is not None:
        _index(node, (), doc.lines)
    return doc


def _index(node: yaml.Node, loc: tuple, lines: dict[tuple, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = loc + (key.value,)
            _index(value, child, lines)
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, loc + (i,), lines)


def pydantic_error(doc: Doc, exc, base: Sequence = ()) -> InputError:
    """The first error of a pydantic ValidationError, as one located sentence."""
    err = exc.errors()[0]
    loc = tuple(base) + tuple(p for p in err["loc"] if not _is_pydantic_tag(p))
    msg = err["msg"]
    if err["type"] == "missing":
        msg = "this field is required but missing"
    elif err["type"] == "extra_forbidden":
        msg = "is not a known field here"
    return doc.error(loc, msg[0].lower() + msg[1:] if msg else "is invalid")


def _is_pydantic_tag(part) -> bool:
    return isinstance(part, str) and part.startswith(("function-", "union["))
