"""What a sweep varies in a sequence file, and the file's text with one variant's values.

A `--vary` KEY addresses one value of the document:

- a path as the errors name it — `steps[2].rf.power_W`, `termination.cycles` (list
  indexes from 0, as in every `file:line: field:` sentence);
- or a bare name — `power_W` — the first place the document sets that key, in reading
  order (a recipe's first `rf` step, not its ramp down to 0 W at the end; address a later
  one by its path). The sweep says which line each key took.

A variant's text is the file's own with each addressed value's characters replaced, so
every line keeps its number: an error in a variant is the file's `file:line: field:`
sentence, which the sweep completes with the variant's values.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from lipon_hw.errors import InputError
from lipon_hw.yamlfile import field_name

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Target:
    """Where a key's value is: its path (as errors name it), line and characters."""

    key: str
    loc: tuple
    line: int
    start: int
    end: int

    @property
    def field(self) -> str:
        return field_name(self.loc)


def parse_path(key: str) -> tuple:
    """`steps[2].rf.power_W` → ('steps', 2, 'rf', 'power_W'); a bare name → (name,)."""
    parts, pos = [], 0
    for match in _PART.finditer(key):
        if match.start() != pos and not (key[pos] == "." and match.start() == pos + 1):
            break
        parts.append(match[1] if match[1] is not None else int(match[2]))
        pos = match.end()
    if pos != len(key) or not parts or not isinstance(parts[0], str):
        raise InputError(f"--vary {key!r} is neither a key's name (power_W) nor a path as the "
                         "errors name it (steps[2].rf.power_W)")
    return tuple(parts)


def locate(text: str, name: str, key: str) -> Target:
    """The value `key` addresses in the document `text` (of file `name`)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    path = parse_path(key)
    found = _first_named(root, path[0], ()) if len(path) == 1 else _walk(root, path)
    if found is None:
        how = ("sets no " + key) if len(path) == 1 else f"has no {key}"
        raise InputError(f"--vary {key}: {name} {how} (a key's name addresses the first "
                         "place it is set; a path is written as the errors name it, e.g. "
                         "steps[2].rf.power_W)")
    loc, node = found
    if not isinstance(node, ScalarNode):
        holds = "list" if isinstance(node, SequenceNode) else "mapping"
        raise InputError(f"--vary {key}: {name}:{node.start_mark.line + 1}: "
                         f"{field_name(loc)} holds a {holds}, not one value; address a "
                         "value inside it")
    return Target(key, loc, node.start_mark.line + 1, node.start_mark.index,
                  node.end_mark.index)


def _walk(node, path: tuple):
    loc: tuple = ()
    for part in path:
        if isinstance(part, int) and isinstance(node, SequenceNode) and part < len(node.value):
            node = node.value[part]
        elif isinstance(part, str) and isinstance(node, MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
            if node is None:
                return None
        else:
            return None
        loc += (part,)
    return loc, node


def _first_named(node, name: str, loc: tuple):
    """The first value keyed `name`, depth first in reading order."""
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if k.value == name:
                return loc + (name,), v
            found = _first_named(v, name, loc + (k.value,))
            if found is not None:
                return found
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            found = _first_named(item, name, loc + (i,))
            if found is not None:
                return found
    return None


def scalar(value) -> str:
    """A value as YAML text that reads back as that value wherever a scalar stands
    (a flow mapping included): numbers and booleans as themselves, text quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"--vary: {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise InputError(f"--vary: {value!r} is not one value (a number, a word, true or false)")


def typed(text: str):
    """A value as given on the command line: read as YAML reads a scalar."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    return text if value is None or isinstance(value, list | dict) else value


def apply(text: str, edits: list[tuple[Target, object]]) -> str:
    """`text` with each target's characters replaced by its value's (lines kept)."""
    out = text
    for target, value in sorted(edits, key=lambda e: e[0].start, reverse=True):
        out = out[:target.start] + scalar(value) + out[target.end:]
    return out
