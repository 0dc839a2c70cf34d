"""How `bench/chaos.py` judges a run from its store (read only, after every process of it
has ended). The definitions:

ended safe
    The run's final status is an end (`completed`, `aborted`, `failed`, `tripped`,
    `stopped`, `terminated`; not `running`, `interrupted`, `paused`) and the store says the
    hardware was made safe at that end:
    - a deposition: its last `safe state` alarm (reaction `safe state`) comes after its
      last `resume` alarm and reads "… made safe" without "FAILED for";
    - a cell test: every channel's status is an end and no channel message and no alarm
      says "could not be disconnected";
    - a sheet screening: its last `safe state` alarm after its last start (the engine's
      `resume` alarm) says the needles are up and names no failure ("FAILED").
    A killed run's simulated lab died with its process (it lived in it), so a killed run is
    safe when its last resume ended safe.

readings duplicated
    - a deposition: each (run, t, quantity) reading beyond the first (`identical` counts
      those whose values agree too), and each reading whose t is not above the previous
      one of its quantity in the order they were stored;
    - a cell test: each (run, channel, t) sample beyond the first, each sample whose t is
      not above its channel's previous one in the order stored, and each sample whose
      step count is below its channel's previous one;
    - a sheet screening: each cell whose touchdown is below the one stored before it (a
      touchdown measured again after a later one); a cell stored twice cannot be (the
      store's key is (run, row, column)).

readings lost (gaps)
    A gap is two consecutive readings of one quantity (a deposition) or samples of one
    channel (a cell test) further apart than the record rule allows:
    - a deposition: more than 1.5 × the quantity's own cadence (the median interval of its
      readings: the recipe's `record_every_s`, or the rate loop's) + 1 ms; the rate loop's
      `loop.*` quantities are compared within a step only (they exist in evaporate steps);
    - a cell test: more than 1.5 × the largest `every_s` of the protocol (protocol or step
      record; 60 s when none) + 5 s;
    except where the gap holds a hold or a pause (an alarm with reaction `hold` or
    `pause`, a `PAUSE` sample) or an impedance spectrum of that channel (EIS records
    spectra, not samples). A deposition's gap holding an alarm of the quantity's own
    instrument (it refused, or did not answer, and the run said so) is counted apart as
    "told": a reading never taken, not one the store lost. So is a cell test's gap that
    holds a `gap` alarm of its channel (the driver found output lost on the wire: garbled
    lines, a silence longer than the record rule allows, an end unseen, and the run said
    where): a reading the instrument sent that the store records as missing. Lost means
    a reading the instrument produced that the store neither has nor records as a gap.
    A resume is not excused: in
    virtual time a resumed run rewinds to its checkpoint (what came after is deleted and
    lived again), so the checkpoint allows no gap.
    A sheet screening that completed has lost each cell of its sheet (`rows` × `cols` of
    its recipe) that it did not store; one that ended otherwise is not judged for loss
    (it did not reach every cell).
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lipon_hw.store_cell_blocks import sample_rows

ENDS = ("completed", "aborted", "failed", "tripped", "stopped", "terminated")


@dataclass
class Verdict:
    kind: str = ""
    status: str = "missing"
    message: str = ""
    safe: bool = False
    why_unsafe: str = ""
    duplicates: int = 0
    identical_duplicates: int = 0
    disorder: int = 0
    gaps: list[tuple] = field(default_factory=list)
    #: gaps of an instrument that refused or failed to answer, told by an alarm of its own
    #: inside the gap (readings never taken, not readings lost by the store)
    told_gaps: list[tuple] = field(default_factory=list)
    #: (quantity or channel, t) of the first duplicated or out-of-order readings
    twins: list[tuple] = field(default_factory=list)
    readings: int = 0
    aborted_by_interlock: bool = False
    resumes: int = 0

    @property
    def duplicated(self) -> int:
        return self.duplicates + self.disorder


def judge(db: Path) -> Verdict:
    """The verdict on the (one) run of the store `db`."""
    v = Verdict()
    if not db.exists():
        v.why_unsafe = "no store"
        return v
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT id, kind, status, message, sequence_text FROM runs"
                          " ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            v.why_unsafe = "no run stored"
            return v
        run_id, v.kind, v.status, v.message, text = row
        alarms = con.execute("SELECT rowid, t_s, source, message, reaction FROM alarms"
                             " WHERE run_id=? ORDER BY rowid", (run_id,)).fetchall()
        v.resumes = sum(1 for a in alarms if a[4] == "resume" and a[2] == "engine")
        v.aborted_by_interlock = v.status == "aborted" and any(a[4] == "abort" for a in alarms)
        if v.kind == "cycling":
            _cells(con, run_id, text, alarms, v)
        elif v.kind == "screening":
            _screening(con, run_id, text, alarms, v)
        else:
            _deposition(con, run_id, alarms, v)
    finally:
        con.close()
    if v.status not in ENDS:
        v.safe, v.why_unsafe = False, f"status {v.status!r} is not an end"
    return v


def _held(alarms: list[tuple], t0: float, t1: float, source: str | None = None) -> bool:
    return any(a[4] in ("hold", "pause") and t0 <= a[1] <= t1
               and (source is None or a[2] in (source, "engine") or source in a[2])
               for a in alarms)


def _ended_safe(v: Verdict, alarms: list[tuple], started: float, failed: str,
                done: str) -> None:
    """The run's last `safe state` alarm after its last start (`started`): safe when it
    says `done` and not `failed`; else why not."""
    safe = [a for a in alarms if a[4] == "safe state" and a[0] > started]
    if not safe:
        v.why_unsafe = "no safe-state alarm after the last start"
    elif failed in safe[-1][3] or done not in safe[-1][3]:
        v.why_unsafe = safe[-1][3]
    else:
        v.safe = True


def _deposition(con, run_id: int, alarms: list[tuple], v: Verdict) -> None:
    resumed_at = max((a[0] for a in alarms if a[4] == "resume"), default=-1)
    _ended_safe(v, alarms, resumed_at, "FAILED for", "made safe")
    rows = con.execute("SELECT r.quantity_id, q.name, r.t_s, r.value FROM readings r JOIN"
                       " quantities q ON q.id = r.quantity_id WHERE r.run_id=?"
                       " ORDER BY r.rowid", (run_id,)).fetchall()
    v.readings = len(rows)
    steps = [(t0, t1 if t1 is not None else float("inf")) for t0, t1 in con.execute(
        "SELECT t_start_s, t_end_s FROM steps WHERE run_id=? ORDER BY idx", (run_id,))]
    series: dict[str, list[tuple[float, float]]] = {}
    for _, name, t, value in rows:
        series.setdefault(name, []).append((t, value))
    for name, points in series.items():
        seen: dict[float, float] = {}
        last = None
        for t, value in points:
            if t in seen:
                v.duplicates += 1
                v.identical_duplicates += seen[t] == value
                v.twins.append((name, t))
            elif last is not None and t <= last:
                v.disorder += 1
                v.twins.append((name, t))
            seen.setdefault(t, value)
            last = t if last is None else max(last, t)
        times = sorted(seen)
        diffs = [b - a for a, b in zip(times, times[1:], strict=False) if b > a]
        if not diffs:
            continue
        allowed = 1.5 * statistics.median(diffs) + 1e-3
        for a, b in zip(times, times[1:], strict=False):
            if b - a <= allowed or _held(alarms, a, b):
                continue
            if name.startswith("loop.") and _step_of(steps, a) != _step_of(steps, b):
                continue
            told = any(a <= al[1] <= b and al[2].split(".")[0] == name.split(".")[0]
                       for al in alarms)
            (v.told_gaps if told else v.gaps).append((name, a, b))


def _step_of(steps: list[tuple[float, float]], t: float) -> int:
    hit = [k for k, (t0, t1) in enumerate(steps) if t0 <= t <= t1]
    return hit[-1] if hit else -1


def every_s(text: str) -> float:
    """The largest `every_s` of a protocol's record rules (60 when it has none)."""
    found: list[float] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            rec = node.get("record")
            if isinstance(rec, dict) and isinstance(rec.get("every_s"), int | float):
                found.append(float(rec["every_s"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    with contextlib.suppress(yaml.YAMLError):
        walk(yaml.safe_load(text))
    return max(found, default=60.0)


def _cells(con, run_id: int, text: str, alarms: list[tuple], v: Verdict) -> None:
    channels = con.execute("SELECT channel, status, message FROM channels WHERE run_id=?"
                           " ORDER BY channel", (run_id,)).fetchall()
    unsafe = [f"channel {c}: {s}" for c, s, _ in channels if s not in ENDS]
    unsafe += [f"channel {c}: {m}" for c, _, m in channels if "could not be disconnected" in m]
    unsafe += [a[3] for a in alarms if "could not be disconnected" in a[3]]
    v.safe, v.why_unsafe = (not unsafe and bool(channels)), "; ".join(unsafe)[:300]
    if not channels:
        v.why_unsafe = "no channels stored"
    allowed = 1.5 * every_s(text) + 5.0
    layout = con.execute("PRAGMA user_version").fetchone()[0]
    by_channel: dict[int, list[tuple]] = {}
    for r in sample_rows(con, layout, "run_id=?", (run_id,), order="channel, rowid"):
        by_channel.setdefault(r[1], []).append((r[2], r[6], r[8], r[3], r[4]))
    for channel, rows in by_channel.items():  # each channel's samples as they were written
        spectra = [t for (t,) in con.execute("SELECT DISTINCT t_s FROM spectra WHERE run_id=?"
                                             " AND channel=?", (run_id, channel))]
        v.readings += len(rows)
        seen: dict[float, tuple] = {}
        last_t, last_step = None, None
        for t, step, _, volt, amp in rows:
            if t in seen:
                v.duplicates += 1
                v.identical_duplicates += seen[t] == (volt, amp)
                v.twins.append((f"channel {channel}", t))
            elif last_t is not None and t <= last_t:
                v.disorder += 1
                v.twins.append((f"channel {channel}", t))
            if last_step is not None and step < last_step:
                v.disorder += 1
                v.twins.append((f"channel {channel} step {step}", t))
            seen.setdefault(t, (volt, amp))
            last_t = t if last_t is None else max(last_t, t)
            last_step = step if last_step is None else max(last_step, step)
        ordered = sorted(r[:3] for r in rows)
        for (a, _, ta), (b, _, tb) in zip(ordered, ordered[1:], strict=False):
            if b - a <= allowed or "PAUSE" in (ta, tb):
                continue
            if any(a <= s <= b for s in spectra) or _held(alarms, a, b, f"channel {channel}"):
                continue
            told = any(al[4] == "gap" and al[2] == f"channel {channel}" and a <= al[1] < b
                       for al in alarms)
            (v.told_gaps if told else v.gaps).append((f"channel {channel}", a, b))


def _screening(con, run_id: int, text: str, alarms: list[tuple], v: Verdict) -> None:
    started = max((a[0] for a in alarms if a[4] == "resume" and a[2] == "engine"), default=-1)
    _ended_safe(v, alarms, started, "FAILED", "needles up")
    rows = con.execute("SELECT row, col, touchdown, t_s FROM screen_cells WHERE run_id=?"
                       " ORDER BY rowid", (run_id,)).fetchall()
    v.readings = len(rows)
    last = None
    for row, col, touchdown, t in rows:
        if last is not None and touchdown < last:
            v.disorder += 1
            v.twins.append((f"cell R{row:02d}C{col:02d} touchdown {touchdown}", t))
        last = touchdown if last is None else max(last, touchdown)
    seen = {(row, col) for row, col, *_ in rows}
    if v.status != "completed":
        return
    sheet = {}
    with contextlib.suppress(yaml.YAMLError, AttributeError):
        sheet = yaml.safe_load(text).get("sheet") or {}
    rows_n, cols_n = sheet.get("rows"), sheet.get("cols")
    if not isinstance(rows_n, int) or not isinstance(cols_n, int):
        v.why_unsafe = v.why_unsafe or "the recipe's sheet has no rows and cols to judge by"
        v.safe = False
        return
    for row in range(1, rows_n + 1):
        for col in range(1, cols_n + 1):
            if (row, col) not in seen:
                v.gaps.append((f"cell R{row:02d}C{col:02d}", 0.0, 0.0))
