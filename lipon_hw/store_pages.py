"""Reads in bounded pieces, for a reader that must answer at once whatever a run's size
(the web view, `lipon_hw.web`): a run's readings a page at a time, and where each channel
of a cell test stands without reading its history.

A mixin of `store.Store`, kept in a module of its own for size only. A page of readings
(or of a channel's samples) is in (time, row) order and ends with a cursor, (t_s, rowid)
of its last row (a sample's (t_s, seq), `store_cell_blocks`): the next page starts after
it, so rows sharing a time are neither lost nor repeated across pages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from lipon_hw import store_cell_blocks as blocks


class PagedReads:
    def readings_page(self, run_id: int, limit: int, since_t: float | None = None,
                      after: tuple[float, int] | None = None,
                      names: Iterable[str] | None = None
                      ) -> tuple[list[tuple[float, str, float]], tuple[float, int] | None]:
        """Up to `limit` readings (t_s, quantity, value) of the run from `since_t` on and
        after the cursor `after`; and the cursor of the next page (None: no more now)."""
        self.try_flush()
        sql = ("SELECT r.t_s, r.rowid, q.name, r.value FROM readings r JOIN quantities q"
               " ON q.id = r.quantity_id WHERE r.run_id=?")
        args: list = [run_id]
        lowest = [t for t in (since_t, after[0] if after else None) if t is not None]
        if lowest:  # a range of the index (run_id, t_s): a page costs its rows, not its place
            sql += " AND r.t_s >= ?"
            args.append(max(lowest))
        if after is not None:
            sql += " AND (r.t_s > ? OR r.rowid > ?)"
            args += [after[0], after[1]]
        if names is not None:
            names = list(names)
            sql += f" AND q.name IN ({','.join('?' * len(names))})"
            args += names
        rows = self._db.execute(sql + " ORDER BY r.t_s, r.rowid LIMIT ?",
                                [*args, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = (rows[-1][0], rows[-1][1]) if more else None
        return [(t, name, value) for t, _, name, value in rows], cursor

    def cell_samples_page(self, run_id: int, channel: int, limit: int,
                          since_t: float | None = None, until_t: float | None = None,
                          after: tuple[float, int] | None = None
                          ) -> tuple[list[tuple], tuple[float, int] | None]:
        """Up to `limit` samples (t_s, voltage_V, current_A, cycle) of one channel from
        `since_t` to `until_t` (both included) after the cursor `after`, in (time, row)
        order; and the cursor (t_s, seq) of the next page (None: no more now)."""
        self.try_flush()
        rows = []
        with contextlib.closing(self._channel_span(run_id, channel, since_t, until_t,
                                                   after)) as span:  # its query ended here
            for row in span:
                rows.append(row)
                if len(rows) > limit:
                    break
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = (rows[-1][0], rows[-1][1]) if more else None
        return [(t, v, i, c) for t, _, v, i, c in rows], cursor

    def cell_samples_span(self, run_id: int, channel: int, since_t: float | None = None,
                          until_t: float | None = None) -> list[tuple]:
        """Every sample (t_s, voltage_V, current_A, cycle) of one channel from `since_t`
        to `until_t` (both included), in (time, row) order."""
        self.try_flush()
        return [(t, v, i, c) for t, _, v, i, c in
                self._channel_span(run_id, channel, since_t, until_t)]

    def _channel_span(self, run_id: int, channel: int, since_t: float | None,
                      until_t: float | None, after: tuple[float, int] | None = None
                      ) -> Iterator[tuple]:
        """(t_s, seq, voltage_V, current_A, cycle) of the channel's samples in the span and
        after the cursor, in (time, row) order: the blocks that reach into the span (a
        range of the index (run_id, channel, t_first_s) from the top), read one by one."""
        sql, args = "run_id=? AND channel=?", [run_id, channel]
        lowest = max((t for t in (since_t, after[0] if after else None) if t is not None),
                     default=None)
        if lowest is not None:
            sql += " AND t_last_s >= ?"
            args.append(lowest)
        if until_t is not None:
            sql += " AND t_first_s <= ?"
            args.append(until_t)
        for b in self._db.stream(blocks.block_query(self.layout, "", sql), args):
            seq0, cycle = b[0], b[2]
            for k, (t, v, i) in enumerate(zip(*blocks.decoded(b), strict=True)):
                if ((lowest is not None and t < lowest) or (until_t is not None and t > until_t)
                        or (after is not None and t == after[0] and seq0 + k <= after[1])):
                    continue
                yield t, seq0 + k, v, i, cycle

    def last_cell_sample(self, run_id: int, channel: int) -> tuple | None:
        """(t_s, voltage_V, current_A, cycle) of the channel's latest sample, if any."""
        self.try_flush()
        b = self._db.execute(blocks.block_query(
            self.layout, "", "run_id=? AND channel=?", "t_last_s DESC, rowid DESC") + " LIMIT 1",
            (run_id, channel)).fetchone()
        if b is None:
            return None
        t, v, i = blocks.decoded(b)
        k = max(range(len(t)), key=lambda j: (t[j], j))
        return t[k], v[k], i[k], b[2]

    def last_cycle(self, run_id: int, channel: int) -> dict | None:
        """The stats of the channel's latest finished cycle (`celltest.results`), if any."""
        self.try_flush()
        row = self._db.execute("SELECT stats FROM cycles WHERE run_id=? AND channel=?"
                               " ORDER BY cycle DESC LIMIT 1", (run_id, channel)).fetchone()
        return None if row is None else self._json(row[0])
