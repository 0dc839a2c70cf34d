"""docs/emulators.md against the emulators: every query the doc lists is sent, framed as
the instrument frames it, to the emulator of the default station (in process, through its
byte interface `handle`), and answered as the doc says — a value where it is covered, the
instrument's refusal where it is not, never silence (SCPI's documented silence is checked
through the error queue) — and an unknown query gets the instrument's documented answer.
The other way round, every command in an emulator's own dispatch table must have a
covered or partly row, and every emulator the lab can build must have a section."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lipon_hw.drivers import ae_bus, inficon_packet
from lipon_hw.drivers.modbus_rtu import EXCEPTION_FLAG, with_crc
from lipon_hw.sim.emulators import CELL_EMULATORS, EMULATORS, grbl, mks937b
from lipon_hw.sim.emulators.methodscript.parser import SPEC
from lipon_hw.sim.lab import SimLab
from lipon_hw.station import load_station

DOC = Path(__file__).parent.parent / "docs" / "emulators.md"
SECTION = re.compile(r"^## (.+?)\n(.*?)(?=^## |\Z)", re.S | re.M)
COVERAGE_BLOCK = re.compile(r"```yaml\n# coverage\n(.*?)```", re.S)
SPAN = re.compile(r"`([^`]+)`")
COLUMNS = ["command", "what it does", "kind", "coverage", "note"]
COVERAGES = {"covered", "partly", "not covered"}
KINDS = {"query", "set", "statement"}


@dataclass
class Row:
    spans: list[str]
    kind: set[str]
    coverage: str
    line: str


@dataclass
class Section:
    title: str
    rows: list[Row]
    spec: dict
    text: str


def _rows(title: str, text: str) -> list[Row]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines, f"{title}: no command table"
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == COLUMNS, f"{title}: table columns {header}"
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(COLUMNS), f"{title}: {line!r} has {len(cells)} cells"
        kind = {k.strip() for k in cells[2].split(",")}
        assert kind <= KINDS and cells[3] in COVERAGES, f"{title}: {line!r}"
        rows.append(Row(SPAN.findall(cells[0]), kind, cells[3], line))
    return rows


def sections() -> list[Section]:
    found = []
    for title, text in SECTION.findall(DOC.read_text("utf-8")):
        block = COVERAGE_BLOCK.search(text)
        assert block, f"docs/emulators.md section {title!r} has no `# coverage` block"
        found.append(Section(title, _rows(title, text), yaml.safe_load(block[1]), text))
    return found


SECTIONS = sections()
IDS = [s.spec["endpoint"] for s in SECTIONS]


@pytest.fixture(scope="module")
def lab():
    return SimLab(load_station(None).spec, lambda: 0.0, seed=1)


# --- framings: send one command, classify what comes back --------------------------------
@dataclass
class Answer:
    kind: str  # "value", "refused" or "silence"
    text: str = ""


class Framing:
    """One instrument's framing over `emulator.handle`."""

    #: spans of a query row that are sent: all, or only those ending in `?`
    queries_end_in_question_mark = False

    def __init__(self, emulator, spec: dict):
        self.emu, self.spec = emulator, spec
        self.open()

    def open(self) -> None:
        """What a host sends first on a new connection."""

    def queries(self, row: Row) -> list[str]:
        if self.queries_end_in_question_mark:
            return [s for s in row.spans if s.endswith("?")]
        return row.spans

    def ask(self, command: str) -> Answer:
        raise NotImplementedError

    def dispatch_keys(self) -> list:
        """The commands of the emulator's own dispatch table."""
        return []

    def names(self, span: str, key) -> bool:
        return span.startswith(key)


class AeBus(Framing):
    def ask(self, command: str) -> Answer:
        number, *data = command.split()
        packet = ae_bus.encode_packet(self.emu.unit, int(number), bytes.fromhex("".join(data)))
        reply = self.emu.handle(packet)
        if not reply:
            return Answer("silence")
        if reply[:1] != ae_bus.ACK:
            return Answer("refused", "NAK")
        _, answered, payload = ae_bus.decode_packet(reply[1:])
        self.emu.handle(ae_bus.ACK)
        assert answered == int(number), (command, reply)
        if payload == bytes([99]):
            return Answer("refused", "CSR 99")
        return Answer("value", payload.hex())

    def dispatch_keys(self) -> list:
        return [*self.emu._setters, *self.emu._queries]

    def names(self, span: str, key) -> bool:
        return span.split()[0] == str(int(key))


class Inficon(Framing):
    def ask(self, command: str) -> Answer:
        reply = self.emu.handle(inficon_packet.encode_command(command))
        if not reply:
            return Answer("silence")
        body = inficon_packet.decode_packet(reply, inficon_packet.REPLY_OFFSET)
        status, data = body[:1].decode(), body[1:].decode()
        return Answer("value", data) if status == "A" else Answer("refused", f"status {status}")

    def dispatch_keys(self) -> list:
        return list(self.emu.handlers)


class Mks937b(Framing):
    queries_end_in_question_mark = True

    def ask(self, command: str) -> Answer:
        reply = self.emu.handle(f"@{self.emu.address:03d}{command};FF".encode("ascii"))
        if not reply:
            return Answer("silence")
        match = re.fullmatch(rb"@\d{3}(ACK|NAK)(.*);FF", reply)
        assert match, (command, reply)
        body = match[2].decode()
        return Answer("value", body) if match[1] == b"ACK" else Answer("refused", f"NAK{body}")

    def dispatch_keys(self) -> list:
        return [*mks937b.SYSTEM, *mks937b.INDEXED]

    def names(self, span: str, key) -> bool:
        return re.match(r"[A-Z]+", span)[0] == key


class Alicat(Framing):
    def ask(self, command: str) -> Answer:
        reply = self.emu.handle(command.encode("ascii") + b"\r").decode("ascii")
        if not reply:
            return Answer("silence")
        assert reply.endswith("\r"), (command, reply)
        text = reply[:-1]
        return Answer("refused", "?") if text == "?" else Answer("value", text)

    def dispatch_keys(self) -> list:
        return list(self.emu._commands)

    def names(self, span: str, key) -> bool:
        return span[1:].upper() == key


class Genesys(Framing):
    queries_end_in_question_mark = True

    def open(self) -> None:
        self.emu.reset_connection()
        assert self.emu.handle(f"ADR {self.emu.address}\r".encode()) == b"OK\r"

    def ask(self, command: str) -> Answer:
        reply = self.emu.handle(command.encode("ascii") + b"\r").decode("ascii")
        if not reply:
            return Answer("silence")
        text = reply.removesuffix("\r")
        if re.fullmatch(r"[CE]0\d", text):
            return Answer("refused", text)
        return Answer("value", text)

    def dispatch_keys(self) -> list:
        return [*self.emu._queries, *self.emu._setters]

    def names(self, span: str, key) -> bool:
        return span.split()[0].upper() == key


class Scpi(Framing):
    """A refused SCPI query is answered with silence and an entry in the error queue: the
    instrument's documented behaviour; the answer is that entry."""

    queries_end_in_question_mark = True

    def open(self) -> None:
        assert self.emu.handle(b"*RST;*CLS\n") == b""

    def ask(self, command: str) -> Answer:
        reply = self.emu.handle(command.encode("ascii") + b"\n").decode("ascii")
        error = self.emu.handle(b":SYST:ERR?\n").decode("ascii").strip()
        if reply and error.startswith("0,"):
            return Answer("value", reply.strip())
        if not reply and not error.startswith("0,"):
            code, message = re.match(r'(-?\d+),"([^;"]*)', error).groups()
            return Answer("refused", f'{code},"{message}"')  # without severity and time
        return Answer("silence", f"reply {reply!r}, queue {error!r}")

    def dispatch_keys(self) -> list:
        return [pattern for pattern, _ in self.emu._commands]

    def names(self, span: str, key) -> bool:
        header = span.split(" ")[0].removesuffix("?")
        return bool(key.fullmatch(header if header[0] in ":*" else ":" + header))


class MethodScript(Framing):
    def ask(self, command: str) -> Answer:
        reply = self.emu.handle(command.encode("ascii") + b"\n").decode("ascii")
        if not reply:
            return Answer("silence")
        first = reply.splitlines()[0]
        return Answer("refused", first) if "!" in first else Answer("value", reply)

    def load(self, lines: list[str]) -> str:
        """Load a script without running it (`l`): the first line of the answer."""
        script = "\n".join(["l", *self.spec["prelude"], *lines, "", ""])
        return self.emu.handle(script.encode("ascii")).decode("ascii").splitlines()[0]

    def queries(self, row: Row) -> list[str]:
        return [] if "statement" in row.kind else row.spans

    def dispatch_keys(self) -> list:
        return [*self.emu._online, *self.emu._online_with_argument, *SPEC]

    def names(self, span: str, key) -> bool:
        if key in SPEC:
            return span.split()[0] == key
        return span == key or (len(key) == 1 and key in "GS" and span.startswith(key))


class Modbus(Framing):
    def ask(self, command: str) -> Answer:
        reply = self.emu.handle(with_crc(bytes([self.emu.unit]) + bytes.fromhex(command)))
        if not reply:
            return Answer("silence")
        if reply[1] & EXCEPTION_FLAG:
            return Answer("refused", f"exception {reply[2]:02d}")
        return Answer("value", reply.hex())

    #: a well-formed request body for each function whose length its code gives
    PROBES = {**{f: "0000 0001" for f in range(0x01, 0x07)}, 0x0F: "0000 0001 01 00",
              0x10: "0000 0001 02 0000"}

    def dispatch_keys(self) -> list:
        """No table to read: the public function codes (1-127) the module answers with
        anything but exception 01 (illegal function)."""
        answered = []
        for function in range(1, 128):
            answer = self.ask(f"{function:02X} {self.PROBES.get(function, '')}")
            if answer != Answer("refused", "exception 01"):
                answered.append(function)
        return answered

    def names(self, span: str, key) -> bool:
        return span.split()[0].upper() == f"{key:02X}"


class Grbl(Framing):
    """A line (or a real-time byte) → the lines before `ok`, or `error:N`."""

    def ask(self, command: str) -> Answer:
        data = command.encode("ascii") + (b"" if command == "?" else b"\n")
        reply = self.emu.handle(data).decode("ascii")
        if not reply:
            return Answer("silence")
        last = reply.strip().splitlines()[-1]
        return Answer("refused", last) if last.startswith("error:") else Answer("value", reply)

    def dispatch_keys(self) -> list:
        return [*grbl.SYSTEM, *(f"G{code}" for code in grbl.G_CODES)]

    def names(self, span: str, key) -> bool:
        if key.startswith("G"):  # a code of the line's words
            return key in span.replace(",", " ").split()
        return span.startswith(key)


FRAMINGS = {"ae_bus": AeBus, "inficon": Inficon, "mks937b": Mks937b, "alicat": Alicat,
            "genesys": Genesys, "scpi": Scpi, "methodscript": MethodScript, "modbus": Modbus,
            "grbl": Grbl}


def framing(lab, section: Section) -> Framing:
    return FRAMINGS[section.spec["framing"]](lab.emulators[section.spec["endpoint"]],
                                             section.spec)


# --- the tests ---------------------------------------------------------------------------
@pytest.mark.parametrize("section", SECTIONS, ids=IDS)
def test_every_query_in_the_table_is_answered_as_the_table_says(lab, section):
    wire = framing(lab, section)
    wrong = []
    sent = 0
    for row in section.rows:
        if "query" not in row.kind:
            continue
        for command in wire.queries(row):
            answer = wire.ask(command)
            sent += 1
            expected = {"covered": {"value"}, "partly": {"value", "refused"},
                        "not covered": {"refused"}}[row.coverage]
            if answer.kind not in expected:
                wrong.append(f"{command!r} ({row.coverage}) got {answer.kind} {answer.text!r}")
    assert sent, f"{section.title}: no query sent"
    assert not wrong, f"{section.title}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("section", SECTIONS, ids=IDS)
def test_an_unknown_query_gets_the_documented_answer(lab, section):
    wire = framing(lab, section)
    answer = wire.ask(section.spec["unknown"])
    assert (answer.kind, answer.text) == ("refused", section.spec["unknown_answer"])
    # and the emulator still answers afterwards
    first_query = next(s for r in section.rows if r.coverage == "covered" and "query" in r.kind
                       for s in wire.queries(r))
    assert wire.ask(first_query).kind == "value"


@pytest.mark.parametrize("section", SECTIONS, ids=IDS)
def test_every_command_the_emulator_dispatches_has_a_row(lab, section):
    wire = framing(lab, section)
    spans = [s for r in section.rows if r.coverage != "not covered" for s in r.spans]
    missing = [getattr(key, "pattern", key) for key in wire.dispatch_keys()
               if not any(wire.names(span, key) for span in spans)]
    assert not missing, f"{section.title}: no covered or partly row for {missing}"


@pytest.mark.parametrize("section", [s for s in SECTIONS if s.spec["framing"] == "methodscript"],
                         ids=lambda s: s.spec["endpoint"])
def test_script_statements_load_as_the_table_says(lab, section):
    wire = framing(lab, section)
    wrong = []
    for row in section.rows:
        if "statement" not in row.kind:
            continue
        first = wire.load(row.spans)
        ok = first == "l" if row.coverage == "covered" else first.startswith("l!4001")
        if not ok:
            wrong.append(f"{row.spans} ({row.coverage}) loaded as {first!r}")
    assert not wrong, "\n".join(wrong)


def test_every_emulator_has_a_section_and_its_tests_exist(lab):
    documented = set()
    for section in SECTIONS:
        documented.add(type(lab.emulators[section.spec["endpoint"]]))
        named = re.findall(r"`(tests/test_\w+\.py)`", section.text)
        assert named, f"{section.title}: names no test"
        for path in named:
            assert (DOC.parent.parent / path).is_file(), f"{section.title}: {path} is missing"
    for target in [*EMULATORS.values(), *CELL_EMULATORS.values()]:
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name.split(".")[0])
        assert cls in documented, f"{target} has no section in docs/emulators.md"
