"""A screening run as an STDF V4 file: the wafer map a fab's yield tools read.

Why STDF V4 and not SEMI E142: E142 (the XML substrate map) is SEMI's, behind its paywall,
so no one here can check a file against its text; STDF V4 (Teradyne, 2007 edition) is
public, is what wafer probers and final testers write, and every yield-analysis tool reads
it — a wafer map, the bins and the parametric results in one file. Its open readers (such
as pystdf, which the tests use) check what is written here independently.

A sheet is written as a wafer: WAFER_ID is the sheet's id, each cell a part at X_COORD =
its column and Y_COORD = its row (from 1, as users see them; WCR: positive X to the right,
positive Y down, die height and width the sheet's pitch in mm; the sheet is no disc, so its
diameter is given as missing). The roll the sheet was cut from is the lot (LOT_ID,
FABWF_ID). Records, in the specification's order:

    FAR (CPU_TYPE 2: little-endian, IEEE floats), MIR, SDR (head 1, the prober's sites),
    WCR, then per sheet WIR, per touchdown [PIR per site, PTR per metric, PRR per site],
    WRR; then TSR per metric, HBR per hard bin and SBR per soft bin (summaries over all
    sites: HEAD_NUM 255), PCR (all sites), MRR.

Each metric is a parametric test (PTR) numbered in reading order from 1 (`metrics.ordered`)
with its name as TEST_TXT and its unit as in the name (`V`, `ohm`, `deg`) as UNITS. The
first PTR of a test carries those defaults and says that the test has no limits (the
bins are set by the recipe's rules, not per test), so every PTR says "no pass/fail
indication"; a cell the prober could not contact (a tester-fault bin) has its results
flagged unreliable and its PRR "abnormal end of testing". A value a 4-byte float cannot
hold is written flagged invalid. Times are Unix seconds (run start, first and last cell).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby
from pathlib import Path

from lipon_hw.errors import InputError
from lipon_hw.screening import metrics as metric_names
from lipon_hw.screening.tables import Bin, bin_defs, hard_bins
from lipon_hw.store_schema import Run, ScreenCell, Sheet
from lipon_hw.store_screening import cell_id

CPU_TYPE = 2  # little-endian integers, IEEE 754 floats (the specification's "IBM PC")
STDF_VER = 4
HEAD = 1
ALL_HEADS = 255
SITE_GROUP = 1
U4_MISSING = 0xFFFFFFFF
# record (type, sub-type)
FAR, MIR, MRR, PCR, HBR, SBR, SDR = (0, 10), (1, 10), (1, 20), (1, 30), (1, 40), (1, 50), \
    (1, 80)
WIR, WRR, WCR, PIR, PRR, TSR, PTR = (2, 10), (2, 20), (2, 30), (5, 10), (5, 20), (10, 30), \
    (15, 10)
# PTR TEST_FLG bits
RESULT_INVALID, UNRELIABLE, NO_PASS_FAIL = 0x02, 0x04, 0x40
# PTR OPT_FLAG of a test's first PTR: bit 1 (reserved, 1), no low/high spec (2, 3),
# no low/high limit (6, 7); RES_SCAL (bit 0) valid
PTR_DEFAULTS_FLAG = 0x02 | 0x04 | 0x08 | 0x40 | 0x80
# PRR PART_FLG bits
ABNORMAL_END, PART_FAILED = 0x04, 0x08
_F32_MAX = 3.4028234663852886e38


class Body:
    """A record's fields, packed little-endian in the order they are added."""

    def __init__(self) -> None:
        self.data = bytearray()

    def _pack(self, fmt: str, *values) -> Body:
        self.data += struct.pack("<" + fmt, *values)
        return self

    def u1(self, v: int) -> Body:
        return self._pack("B", v)

    def u2(self, v: int) -> Body:
        return self._pack("H", v)

    def u4(self, v: int) -> Body:
        return self._pack("I", v)

    def i1(self, v: int) -> Body:
        return self._pack("b", v)

    def i2(self, v: int) -> Body:
        return self._pack("h", v)

    def r4(self, v: float) -> Body:
        return self._pack("f", v)

    def c1(self, v: str) -> Body:
        return self._pack("c", (v or " ").encode("ascii", "replace")[:1])

    def cn(self, v: str) -> Body:
        """A string: a length byte, then up to 255 ASCII bytes."""
        raw = (v or "").encode("ascii", "replace")[:255]
        return self.u1(len(raw))._pack(f"{len(raw)}s", raw)


def record(kind: tuple[int, int], body: Body | bytes) -> bytes:
    """The record's header (REC_LEN: bytes after the header, U*2; REC_TYP, REC_SUB: U*1)
    and its body."""
    data = bytes(body.data if isinstance(body, Body) else body)
    if len(data) > 0xFFFF:
        raise InputError(f"an STDF record of type {kind} would be {len(data)} bytes long, "
                         "more than the format's 65535")
    return struct.pack("<HBB", len(data), *kind) + data


def write_stdf(path: Path, run: Run, sheets: Mapping[str, Sheet], cells: Sequence[ScreenCell],
               bins: Sequence[Mapping] | None = None, version: str = "") -> Path:
    """The run's cells as STDF V4 at `path` (the caller writes atomically); returns it."""
    with open(path, "wb") as f:
        for rec in stdf_records(run, sheets, cells, bins, version):
            f.write(rec)
    return path


def stdf_records(run: Run, sheets: Mapping[str, Sheet], cells: Sequence[ScreenCell],
                 bins: Sequence[Mapping] | None = None, version: str = "") -> Iterable[bytes]:
    _check(cells)
    defs = bin_defs(cells, bins)
    faults = {b.soft_bin for b in defs if b.tester_fault}
    tests = metric_names.ordered(k for c in cells for k in c.metrics)
    number = {name: i for i, name in enumerate(tests, start=1)}
    start = _when(run.started_at or 0.0, 0.0)
    last = _when(start, max(c.t_s for c in cells))
    finish = max(_when(run.ended_at, 0.0), last) if run.ended_at else last
    first_sheet = sheets[cells[0].sheet_id]
    lot = first_sheet.roll_id or first_sheet.id

    yield record(FAR, Body().u1(CPU_TYPE).u1(STDF_VER))
    yield record(MIR, Body().u4(start).u4(start).u1(1).c1(" ").c1(" ").c1(" ").u2(65535)
                 .c1(" ").cn(lot).cn("cell").cn("").cn("lipon-hw").cn(run.name).cn("")
                 .cn(first_sheet.id).cn("").cn("lipon-hw").cn(version).cn("SCRN").cn("")
                 .cn(f"run {run.id}"))
    sites = sorted({c.site for c in cells})
    sdr = Body().u1(HEAD).u1(SITE_GROUP).u1(len(sites))
    for s in sites:
        sdr.u1(s)
    yield record(SDR, sdr.cn("prober").cn("").cn("probe card"))
    yield record(WCR, Body().r4(0.0).r4(first_sheet.pitch_y_mm).r4(first_sheet.pitch_x_mm)
                 .u1(3).c1(" ").i2(-32768).i2(-32768).c1("R").c1("D"))

    stats: dict[str, list[float]] = {name: [] for name in tests}  # valid, reliable results
    executed = dict.fromkeys(tests, 0)
    with_defaults: set[str] = set()
    by_sheet: dict[str, list[ScreenCell]] = {}
    for c in cells:
        by_sheet.setdefault(c.sheet_id, []).append(c)
    for sheet_id, group in by_sheet.items():
        on_sheet = sorted(group, key=lambda c: (c.touchdown, c.site, c.row, c.col))
        yield record(WIR, Body().u1(HEAD).u1(SITE_GROUP)
                     .u4(_when(start, min(c.t_s for c in on_sheet))).cn(sheet_id))
        for _td, touch in groupby(on_sheet, key=lambda c: c.touchdown):
            touch = list(touch)
            for c in touch:
                yield record(PIR, Body().u1(HEAD).u1(c.site))
            for c in touch:
                fault = c.soft_bin in faults
                for name in metric_names.ordered(c.metrics):
                    yield _ptr(number[name], c, name, c.metrics[name], fault,
                               first=name not in with_defaults, stats=stats)
                    with_defaults.add(name)
                    executed[name] += 1
            for c in touch:
                yield _prr(c, c.soft_bin in faults)
        passed = sum(1 for c in on_sheet if c.passed)
        sheet = sheets[sheet_id]
        yield record(WRR, Body().u1(HEAD).u1(SITE_GROUP)
                     .u4(_when(start, max(c.t_s for c in on_sheet))).u4(len(on_sheet))
                     .u4(sum(1 for c in on_sheet if c.attempts > 1))
                     .u4(sum(1 for c in on_sheet if c.soft_bin in faults)).u4(passed)
                     .u4(U4_MISSING).cn(sheet_id).cn(sheet.roll_id or ""))

    for name in tests:
        yield _tsr(number[name], name, executed[name], stats[name])
    hard_count: dict[int, int] = {}
    soft_count: dict[int, int] = {}
    for c in cells:
        hard_count[c.hard_bin] = hard_count.get(c.hard_bin, 0) + 1
        soft_count[c.soft_bin] = soft_count.get(c.soft_bin, 0) + 1
    for h, name, passed, _fault in hard_bins(defs, cells):
        yield record(HBR, Body().u1(ALL_HEADS).u1(0).u2(h).u4(hard_count.get(h, 0))
                     .c1("P" if passed else "F").cn(name))
    for b in defs:
        yield _sbr(b, soft_count.get(b.soft_bin, 0))
    yield record(PCR, Body().u1(ALL_HEADS).u1(0).u4(len(cells))
                 .u4(sum(1 for c in cells if c.attempts > 1))
                 .u4(sum(1 for c in cells if c.soft_bin in faults))
                 .u4(sum(1 for c in cells if c.passed)).u4(U4_MISSING))
    yield record(MRR, Body().u4(finish).c1(" ").cn("").cn(""))


def _when(start: float, t_s: float) -> int:
    """Unix seconds `t_s` after `start`, as an STDF time (U*4; out of range: 0, missing)."""
    try:
        t = int(start + t_s)
    except (OverflowError, ValueError):
        return 0
    return t if 0 <= t < U4_MISSING else 0


def _check(cells: Sequence[ScreenCell]) -> None:
    if not cells:
        raise InputError("an STDF file needs at least one screened cell")
    for c in cells:
        where = f"cell {cell_id(c.sheet_id, c.row, c.col)}"
        if not 0 <= c.site <= 255:
            raise InputError(f"{where}: site {c.site} does not fit STDF's SITE_NUM (0–255)")
        for what, v in (("hard bin", c.hard_bin), ("soft bin", c.soft_bin)):
            if not 0 <= v <= 32767:
                raise InputError(f"{where}: {what} {v} is outside STDF's 0–32767")
        for what, v in (("row", c.row), ("column", c.col)):
            if not 1 <= v <= 32767:
                raise InputError(f"{where}: {what} {v} does not fit an STDF coordinate")


def _ptr(test: int, c: ScreenCell, name: str, value, fault: bool, first: bool,
         stats: dict[str, list[float]]) -> bytes:
    flags = NO_PASS_FAIL | (UNRELIABLE if fault else 0)
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and abs(v) <= _F32_MAX):
        flags |= RESULT_INVALID
        v = 0.0
    elif not fault:
        stats[name].append(v)
    body = Body().u4(test).u1(HEAD).u1(c.site).u1(flags).u1(0).r4(v).cn(name).cn("")
    if first:
        body.u1(PTR_DEFAULTS_FLAG).i1(0).i1(0).i1(0).r4(0.0).r4(0.0) \
            .cn(metric_names.parse(name).unit_code).cn("%.6g").cn("").cn("").r4(0.0).r4(0.0)
    return record(PTR, body)


def _prr(c: ScreenCell, fault: bool) -> bytes:
    flags = (0 if c.passed else PART_FAILED) | (ABNORMAL_END if fault else 0)
    test_ms = c.metrics.get("test_time_s")
    ms = int(round(test_ms * 1000)) if isinstance(test_ms, (int, float)) and \
        0 <= test_ms < U4_MISSING / 1000 else 0
    return record(PRR, Body().u1(HEAD).u1(c.site).u1(flags).u2(len(c.metrics))
                  .u2(c.hard_bin).u2(c.soft_bin).i2(c.col).i2(c.row).u4(ms)
                  .cn(cell_id(c.sheet_id, c.row, c.col)).cn(c.rule))


def _tsr(test: int, name: str, executed: int, values: list[float]) -> bytes:
    """The test's summary over all sites: executions, and the lowest, highest, sum and
    sum of squares of its valid results from validly tested cells."""
    flag = 0x04 | 0x08 | 0xC0  # TEST_TIM invalid; bits 3, 6, 7 reserved (1)
    if values:
        lo, hi = min(values), max(values)
        sums, sqrs = sum(values), sum(v * v for v in values)
        if not abs(sums) <= _F32_MAX:
            flag |= 0x10
            sums = 0.0
        if not abs(sqrs) <= _F32_MAX:
            flag |= 0x20
            sqrs = 0.0
    else:
        lo = hi = sums = sqrs = 0.0
        flag |= 0x01 | 0x02 | 0x10 | 0x20
    return record(TSR, Body().u1(ALL_HEADS).u1(0).c1("P").u4(test).u4(executed)
                  .u4(U4_MISSING).u4(U4_MISSING).cn(name).cn("")
                  .cn(metric_names.parse(name).quantity).u1(flag).r4(0.0).r4(lo).r4(hi)
                  .r4(sums).r4(sqrs))


def _sbr(b: Bin, count: int) -> bytes:
    return record(SBR, Body().u1(ALL_HEADS).u1(0).u2(b.soft_bin).u4(count)
                  .c1("P" if b.passed else "F").cn(b.name))
