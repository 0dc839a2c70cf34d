"""A cell test's tables in the store: its channels (progress and resume state), samples,
impedance spectra and cycle statistics.

A mixin of `store.Store`, kept in a module of its own for size only: its writes go
through the store's buffers and are committed in the store's one transaction with the
readings and checkpoints before them, which is why it is not an object of its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain, groupby, repeat

import numpy as np

from lipon_hw import store_cell_blocks as blocks
from lipon_hw.column_rows import ColumnRows, listed
from lipon_hw.store_plumbing import finite, tell
from lipon_hw.store_schema import Alarm, Channel


class CellTestRecords:
    def add_channel(self, run_id: int, channel: int, instrument: str, sample_id: str | None,
                    protocol: str) -> None:
        self._db.execute("INSERT INTO channels (run_id, channel, instrument, sample_id,"
                         " protocol, status) VALUES (?,?,?,?,?,'pending') ON CONFLICT DO NOTHING",
                         (run_id, channel, instrument, sample_id, protocol))

    def update_channel(self, run_id: int, channel: int, status: str, message: str, cycle: int,
                       step_count: int, t_s: float, state: Mapping | str) -> None:
        """The channel's progress and resume state (a mapping, or its JSON); committed with
        the samples before it. A mapping is encoded when it is written (a channel saves its
        state at every step, the store writes the last of them once a second): the caller
        does not change it afterwards."""
        self._pending_channels[(run_id, channel)] = (
            status, message, cycle, step_count, t_s, state, run_id, channel)
        self._maybe_flush()

    def channels(self, run_id: int) -> list[Channel]:
        self.flush()
        rows = self._db.execute(
            "SELECT channel, instrument, sample_id, protocol, status, message, cycle, step_count,"
            " t_s, state FROM channels WHERE run_id=? ORDER BY channel", (run_id,)).fetchall()
        return [Channel(*r[:-1], state=self._json(r[-1])) for r in rows]

    def channels_naming(self, sample_ids: Iterable[str]) -> list[tuple[int, Channel]]:
        """(run id, channel) of every cell-test channel whose sample is one of
        `sample_ids`, by run and channel (their resume states left out: {})."""
        self.flush()
        rows = self._db.execute(
            "SELECT run_id, channel, instrument, sample_id, protocol, status, message, cycle,"
            f" step_count, t_s FROM channels WHERE sample_id IN ({self._db.json_values})"
            " ORDER BY run_id, channel", (json.dumps(sorted(set(sample_ids))),)).fetchall()
        return [(r[0], Channel(*r[1:], state={})) for r in rows]

    def channel_samples(self, run_id: int) -> dict[int, str | None]:
        """Channel → the sample (cell) it names, for run `run_id`'s channels, read without
        decoding their states."""
        self.flush()
        return dict(self._db.execute("SELECT channel, sample_id FROM channels WHERE run_id=?",
                                     (run_id,)).fetchall())

    def channel_cycles(self, run_id: int) -> list[tuple[int, int]]:
        """(channel, cycle) of each channel as stored: a cell test's progress, read
        without decoding the channels' states."""
        return self._db.execute("SELECT channel, cycle FROM channels WHERE run_id=?"
                                " ORDER BY channel", (run_id,)).fetchall()

    def add_cell_samples(self, run_id: int, channel: int, rows: Iterable[tuple]) -> None:
        """Rows of (t_s, voltage_V, current_A, cycle, step_count, step_id, step_type).
        A row with a non-finite time, voltage or current is not stored (one alarm per
        channel says so), so it cannot fail the NOT NULL columns of every later flush."""
        rows = rows if isinstance(rows, list) else list(rows)
        try:  # the common case in one pass: every row finite (NaN and ±inf propagate)
            kept = [(run_id, channel, *r) for r in rows if math.isfinite(r[0] + r[1] + r[2])]
        except TypeError:
            kept = []
        if len(kept) != len(rows):
            kept = []
            for r in rows:
                if finite(r[0], r[1], r[2]):
                    kept.append((run_id, channel, *r))
                else:
                    self._nonfinite(run_id, r[0], f"channel {channel}",
                                     f"channel {channel} sample t = {r[0]!r} s, "
                                     f"{r[1]!r} V, {r[2]!r} A")
        self._pending_cells.extend(kept)
        if self.taps and kept:
            tell(self.taps, "cell_samples", run_id, channel, kept)
        self._maybe_flush()

    def add_cell_columns(self, run_id: int, channel: int, times, volts, currents,
                         cycle: int, step_count: int, step_id: int, step_type: str) -> None:
        """As `add_cell_samples` for samples of one cycle, step count, step id and step type
        given as columns (lists of floats or 1-D float arrays, left as they are from now
        on): buffered as arrays (a `ColumnRows`), without a row tuple each; the flush
        writes them as blocks, and the taps are told of them as a sequence of rows made if
        read. Columns with a non-finite value go through `add_cell_samples`."""
        n = len(times)
        columns = _float_columns((times, volts, currents), n)
        if columns is None:
            self.add_cell_samples(run_id, channel, list(zip(
                *(listed(c) for c in (times, volts, currents)), repeat(cycle, n),
                repeat(step_count, n), repeat(step_id, n), repeat(step_type, n),
                strict=True)))
            return
        if n:
            rows = ColumnRows((run_id, channel), columns,
                              (cycle, step_count, step_id, step_type))
            self._pending_cells.extend(rows)
            if self.taps:  # made only if a tap reads them
                tell(self.taps, "cell_samples", run_id, channel, rows)
        self._maybe_flush()

    def add_spectrum(self, run_id: int, channel: int, rows: Iterable[tuple]) -> None:
        """Rows of (t_s, cycle, step_count, f_Hz, z_re_ohm, z_im_ohm); as for samples, a
        point with a non-finite value is left out with one alarm per channel."""
        kept = []
        for r in rows:
            if finite(r[0], r[3], r[4], r[5]):
                kept.append((run_id, channel, *r))
            else:
                self._nonfinite(run_id, r[0], f"channel {channel} impedance",
                                 f"channel {channel} impedance at {r[3]!r} Hz, t = {r[0]!r} s: "
                                 f"{r[4]!r}, {r[5]!r} ohm")
        self._pending_spectra.extend(kept)
        if self.taps and kept:
            tell(self.taps, "spectrum", run_id, channel, kept)
        self._maybe_flush()

    def _nonfinite(self, run_id: int, t_s, source: str, what: str) -> None:
        """One alarm per run and source for values that cannot be stored (NaN, ±inf)."""
        if (run_id, source) in self._non_finite_seen:
            return
        self._non_finite_seen.add((run_id, source))
        self._add_alarm_now(Alarm(run_id, t_s if finite(t_s) else 0.0, "warning", "store",
                                  f"{what} is not a finite number and was not stored; later "
                                  f"non-finite values of {source} are left out silently"))

    def add_cycle(self, run_id: int, channel: int, cycle: int, stats: Mapping) -> None:
        """A cycle's statistics, buffered with the channel's samples and state: written by
        their next flush (one commit a wall second, not one per cycle)."""
        row = (run_id, channel, cycle, json.dumps(dict(stats)))
        self._pending_writes.append(lambda db: db.execute(
            "INSERT INTO cycles (run_id, channel, cycle, stats) VALUES (?,?,?,?)"
            " ON CONFLICT (run_id, channel, cycle) DO UPDATE SET stats=excluded.stats", row))
        if self.taps:
            tell(self.taps, "cycle", run_id, channel, cycle, stats)

    def cell_samples(self, run_id: int, channel: int) -> Iterator[tuple]:
        """Rows as CELL_SAMPLE_COLUMNS, in (time, row) order (`store_cell_blocks`)."""
        self.flush()
        yield from blocks.samples_of(self._db.stream(blocks.block_query(
            self.layout, "", "run_id=? AND channel=?"), (run_id, channel)))

    def cell_samples_of_cycles(self, run_id: int, channel: int, cycles: list[int]
                               ) -> list[tuple]:
        self.flush()
        which = f"run_id=? AND channel=? AND cycle IN ({','.join('?' * len(cycles))})"
        return list(blocks.samples_of(self._db.execute(
            blocks.block_query(self.layout, "", which), (run_id, channel, *cycles)).fetchall()))

    def spectra(self, run_id: int, channel: int) -> list[tuple]:
        """(t_s, cycle, step_count, f_Hz, z_re_ohm, z_im_ohm) in time order."""
        self.flush()
        return self._db.execute(
            "SELECT t_s, cycle, step_count, f_Hz, z_re_ohm, z_im_ohm FROM spectra WHERE run_id=?"
            " AND channel=? ORDER BY t_s, rowid", (run_id, channel)).fetchall()

    def cycles(self, run_id: int, channel: int) -> list[dict]:
        self.flush()
        return [self._json(r[0]) for r in self._db.execute(
            "SELECT stats FROM cycles WHERE run_id=? AND channel=? ORDER BY cycle",
            (run_id, channel))]

    def last_cell_sample_t(self, run_id: int, channel: int) -> float:
        self.flush()
        row = self._db.execute(blocks.for_layout(
            self.layout, "SELECT MAX(t_last_s) FROM cell_blocks WHERE run_id=? AND channel=?"),
            (run_id, channel)).fetchone()
        return row[0] or 0.0

    def sample_census(self, run_id: int) -> tuple[int, int, int]:
        """A run's cell samples counted as an exactly-once check counts them, on either
        back end: (samples, (channel, time) pairs stored more than once, channels with
        samples)."""
        self.flush()
        count = twice = channels = 0
        for _, group in groupby(self._db.stream(blocks.block_query(
                self.layout, "channel", "run_id=?", "channel, t_first_s, rowid"), (run_id,)),
                key=lambda b: b[0]):  # a channel's times at a time, not the run's
            t = np.concatenate([blocks.times_of(b, 1) for b in group])
            _, seen = np.unique(t, return_counts=True)
            count, channels = count + len(t), channels + 1
            twice += int(np.count_nonzero(seen > 1))
        return count, twice, channels

    def max_step_count(self, run_id: int, channel: int) -> int:
        self.flush()
        row = self._db.execute(blocks.for_layout(
            self.layout, "SELECT MAX(step_count) FROM cell_blocks WHERE run_id=? AND"
            " channel=?"), (run_id, channel)).fetchone()
        return row[0] or 0

    def rewind_channel(self, run_id: int, channel: int, t_s: float) -> None:
        """Forget what one channel recorded after `t_s` (its simulated cell rolled back)."""
        self.flush()
        with self._transaction():
            self._db.execute("DELETE FROM spectra WHERE run_id=? AND channel=? AND t_s > ?",
                             (run_id, channel, t_s))
            self._rewind_blocks(run_id, channel, t_s)
            later = [cycle for cycle, stats in self._db.execute(
                "SELECT cycle, stats FROM cycles WHERE run_id=? AND channel=?",
                (run_id, channel)).fetchall() if _ends_after(self._json(stats), t_s)]
            self._db.executemany("DELETE FROM cycles WHERE run_id=? AND channel=? AND cycle=?",
                                 [(run_id, channel, c) for c in later])

    def _rewind_blocks(self, run_id: int, channel: int, t_s: float) -> None:
        """The channel's samples after `t_s` gone: its blocks that begin after it deleted,
        one that straddles it cut there."""
        cut = self._db.execute(
            "SELECT rowid, t_s, voltage_V, current_A FROM cell_blocks WHERE run_id=? AND"
            " channel=? AND t_first_s <= ? AND t_last_s > ?",
            (run_id, channel, t_s, t_s)).fetchall()
        self._db.execute("DELETE FROM cell_blocks WHERE run_id=? AND channel=? AND"
                         " t_first_s > ?", (run_id, channel, t_s))
        for rowid, *columns in cut:
            t, v, i = (blocks.unpack(c) for c in columns)
            keep = [k for k, x in enumerate(t) if x <= t_s]
            t, v, i = ([c[k] for k in keep] for c in (t, v, i))
            self._db.execute("UPDATE cell_blocks SET t_first_s=?, t_last_s=?, n=?, t_s=?,"
                             " voltage_V=?, current_A=? WHERE rowid=?",
                             (min(t), max(t), len(t), blocks.pack(t), blocks.pack(v),
                              blocks.pack(i), rowid))


def _ends_after(stats, t_s: float) -> bool:
    """A cycle's statistics end after `t_s` (a number `t_end_s` past it)."""
    end = stats.get("t_end_s") if isinstance(stats, dict) else None
    return isinstance(end, int | float) and not isinstance(end, bool) and end > t_s


def _float_columns(columns: tuple, n: int) -> tuple[np.ndarray, ...] | None:
    """The columns as float arrays of n values each, if each is one of plain finite
    numbers (not text, None or bool); else None. One sum a column tests them (NaN and
    ±inf propagate; an overflow looks again, value by value)."""
    out = []
    for column in columns:
        if type(column) is not np.ndarray or column.dtype != np.float64:  # else as it is
            try:
                column = np.asarray(column)
            except (TypeError, ValueError):  # ragged
                return None
            if column.dtype.kind not in "fi":
                return None
            column = column.astype(float)
        if column.shape != (n,):
            return None
        out.append(column)
    if math.isfinite(sum(float(a.sum()) for a in out)) or \
            all(bool(np.isfinite(a).all()) for a in out):
        return tuple(out)
    return None


class PendingCells:
    """Cell samples waiting for the store's next flush, in order: lists of rows (run_id,
    channel, t_s, voltage_V, current_A, cycle, step_count, step_id, step_type) and
    `ColumnRows` of such rows; read as one iterable of rows, a `ColumnRows`' made as they
    are read (by `insert_rows`: none of them kept). Used as the store's other buffers
    (lists) are: `extend`, `clear`, `len`, truth."""

    def __init__(self) -> None:
        self._chunks: list[list[tuple] | ColumnRows] = []
        self._rows = 0

    def extend(self, rows: list[tuple] | ColumnRows) -> None:
        if rows:
            self._chunks.append(rows)
            self._rows += len(rows)

    @property
    def chunks(self) -> list[list[tuple] | ColumnRows]:
        """What was buffered, in order (written as blocks: `store_cell_blocks`)."""
        return self._chunks

    def clear(self) -> None:
        self._chunks.clear()
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def __bool__(self) -> bool:
        return self._rows > 0

    def __iter__(self) -> Iterator[tuple]:
        return chain.from_iterable(map(_rows_of, self._chunks))


def _rows_of(chunk: list[tuple] | ColumnRows) -> Iterable[tuple]:
    return chunk.stream() if isinstance(chunk, ColumnRows) else chunk
