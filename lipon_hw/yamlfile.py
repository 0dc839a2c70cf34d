"""YAML with line numbers, so every error can say `file:line: field: what is wrong`.

`load(path)` returns a `Doc`: the plain data, the text it came from and a map from
each value's path (a tuple of keys and list indices) to its line. `Doc.error(loc,
message)` builds the one-sentence `InputError` the CLI prints.

A recipe, protocol or station file is written by a person, so the loader refuses,
quickly and in bounded memory, what no person writes but a hostile or broken file
can hold:

- anything that is not a regular file (a FIFO or /dev/zero would block or never end);
- more than `MAX_BYTES`;
- nesting deeper than `MAX_DEPTH`;
- more than `MAX_NODES` values once aliases are expanded (an 800-byte "billion laughs"
  file expands to 10⁹ values: the tree is a small graph while composed, but every walk
  over it — the line index, the schema — follows each alias);
- an alias to the anchor it sits in (a recursive structure no schema can walk);
- a mapping key given twice (YAML would silently keep the last).

The text is composed once, bounded while it is composed, then constructed from that.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from lipon_hw.errors import InputError

#: The largest file read. The biggest shipped file (the default station) is ~6 KB and a
#: hand-written 1,000-step recipe ~60 KB; 1 MiB leaves room for generated files while
#: keeping a refusal of anything larger instant and the parse of anything accepted
#: well under a second.
MAX_BYTES = 1 << 20
#: Deepest nesting of mappings and lists. A station or protocol is 5-6 levels deep;
#: 64 is far beyond any real file and far below Python's recursion limit, which the
#: constructor and every later walk of the data use.
MAX_DEPTH = 64
#: Most values (scalars, lists and mappings, aliases expanded). The default station
#: holds ~400 and a step ~7, so 20,000 is a recipe of ~2,800 steps (loops make long
#: programs short); composing that many takes ~0.3 s, the most a refusal may cost.
MAX_NODES = 20_000

_MERGE_TAG = "tag:yaml.org,2002:merge"

try:  # libyaml scans and parses in C; composing stays ours (bounded) either way
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


@dataclass
class Doc:
    path: str
    data: object
    lines: dict[tuple, int] = field(default_factory=dict)
    text: str = ""

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
    """The YAML file at `path`: a regular file of at most MAX_BYTES, else one sentence."""
    return loads(read_text(path), str(path))


def read_text(path: str | Path) -> str:
    """The text of a regular file of at most MAX_BYTES, checked before a byte is read:
    a FIFO, a device or a directory is refused without opening it for a blocking read."""
    name = str(path)
    try:
        before = os.stat(name)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except OSError as exc:
        raise InputError(f"{name}:1: cannot be read ({exc.strerror})") from None
    _require_regular(name, before)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise InputError(f"{name}:1: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        _require_regular(name, os.fstat(fd))  # the path may have been swapped since stat
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise InputError(f"{name}:1: the file is larger than {MAX_BYTES // 1024} KiB; a "
                         "recipe, protocol or station file is far smaller")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{name}:{line}: the file is not UTF-8 text (byte "
                         f"0x{raw[exc.start]:02x})") from None


def _require_regular(name: str, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        if st.st_size > MAX_BYTES:
            raise InputError(f"{name}:1: the file is {st.st_size / 1048576:.1f} MiB, larger "
                             f"than the {MAX_BYTES // 1024} KiB a recipe, protocol or station "
                             "file may be")
        return
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
            "a FIFO" if stat.S_ISFIFO(st.st_mode) else
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
            "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file")
    raise InputError(f"{name}:1: the file is {kind}, not a regular file")


def loads(text: str, name: str) -> Doc:
    if len(text) > MAX_BYTES:  # stored or given text: the same bound as a file
        raise InputError(f"{name}:1: the text is larger than {MAX_BYTES // 1024} KiB")
    loader = _BoundedLoader(text, name)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{name}:{line}: this is not valid YAML ({problem})") from None
    except RecursionError:  # unreachable within MAX_DEPTH; kept as one sentence regardless
        raise InputError(f"{name}:1: the file nests too deeply") from None
    finally:
        loader.dispose()
    doc = Doc(name, data, text=text)
    if node is not None:
        _index(node, (), doc.lines)
    return doc


def _index(node: yaml.Node, loc: tuple, lines: dict[tuple, int]) -> None:
    """Line of every path. An alias's paths are indexed once per use, which MAX_NODES
    bounds; the composer refused recursive aliases."""
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, MappingNode):
        for key, value in node.value:
            child = loc + (key.value,)
            _index(value, child, lines)
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, loc + (i,), lines)


class _BoundedComposer(Composer):
    """PyYAML's composer, with the refusals of this module made while composing: each
    node's expanded size and depth are known when it is finished, so an alias costs one
    look-up, never a walk."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name
        self._path: list = []  # keys and indices down to the node being composed
        self._size: dict[int, tuple[int, int]] = {}  # id(node) → (expanded nodes, depth)
        self._open: set[int] = set()  # nodes still being composed (an alias to one recurses)
        self._total = 0

    def compose_document(self):
        self._size.clear()
        self._open.clear()
        self._total = 0
        return super().compose_document()

    def compose_node(self, parent, index):
        event = self.peek_event()
        depth = len(self._path)
        if isinstance(event, AliasEvent):
            self.get_event()
            node = self.anchors.get(event.anchor)
            if node is None:
                self._refuse(event, f"the alias *{event.anchor} names no anchor defined "
                                    "before it")
            if id(node) in self._open:
                self._refuse(event, f"the alias *{event.anchor} refers to the list or mapping "
                                    "it is part of, which would never end")
            size, below = self._size[id(node)]
            self._count(event, size)
            if depth + below > MAX_DEPTH:
                self._refuse(event, f"nesting is deeper than {MAX_DEPTH} levels once the "
                                    f"alias *{event.anchor} is expanded")
            return node
        if depth >= MAX_DEPTH and isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            self._refuse(event, f"nesting is deeper than {MAX_DEPTH} levels")
        if isinstance(event, ScalarEvent):
            self._count(event, 1)
            node = super().compose_node(parent, index)
            self._size[id(node)] = (1, 0)
            return node
        return super().compose_node(parent, index)

    def compose_sequence_node(self, anchor):
        start = self.peek_event()
        self._count(start, 1)
        return self._compose_collection(anchor, start, True)

    def compose_mapping_node(self, anchor):
        start = self.peek_event()
        self._count(start, 1)
        return self._compose_collection(anchor, start, False)

    def _compose_collection(self, anchor, start, is_sequence: bool):
        """PyYAML's compose_sequence_node / compose_mapping_node, bounded: children are
        composed with the path kept, duplicate keys refused, sizes summed."""
        self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            kind = SequenceNode if is_sequence else MappingNode
            tag = self.resolve(kind, None, start.implicit)
        cls = SequenceNode if is_sequence else MappingNode
        node = cls(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        self._open.add(id(node))
        size, depth = 1, 0
        seen: dict[tuple, int] = {}
        end = yaml.SequenceEndEvent if is_sequence else yaml.MappingEndEvent
        index = 0
        while not self.check_event(end):
            if is_sequence:
                self._path.append(index)
                item = self.compose_node(node, index)
                self._path.pop()
                node.value.append(item)
                parts = [item]
            else:
                key_event = self.peek_event()
                len_before = len(seen)
                key = self.compose_node(node, None)
                label = key.value if isinstance(key, ScalarNode) else f"#{index}"
                if isinstance(key, ScalarNode):
                    first = seen.setdefault((key.tag, key.value), key.start_mark.line + 1)
                    if len(seen) == len_before:
                        self._refuse(key_event, f"the key {key.value!r} appears twice (first "
                                                f"at line {first})", key.value)
                self._path.append(label)
                value = self.compose_node(node, key)
                self._path.pop()
                node.value.append((key, value))
                parts = [key, value]
            for part in parts:
                s, d = self._size[id(part)]
                size += s
                depth = max(depth, d + 1)
            index += 1
        node.end_mark = self.get_event().end_mark
        self._open.discard(id(node))
        self._size[id(node)] = (size, depth)
        return node

    def _count(self, event, nodes: int) -> None:
        self._total += nodes
        if self._total > MAX_NODES:
            self._refuse(event, f"the document holds more than {MAX_NODES:,} values (aliases "
                                "expanded); a recipe, protocol or station is far smaller")

    def _refuse(self, event, message: str, key=None):
        loc = tuple(self._path) + ((key,) if key is not None else ())
        where = field_name(loc)
        raise InputError(f"{self._name}:{event.start_mark.line + 1}: "
                         + (f"{where}: " if where else "") + message)


class _BoundedLoader(_BoundedComposer, _Parser, SafeConstructor, Resolver):
    def __init__(self, text: str, name: str):
        _Parser.__init__(self, text)
        _BoundedComposer.__init__(self, name)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)


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
