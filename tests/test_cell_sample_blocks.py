"""A cell test's samples kept in blocks (`store_cell_blocks`), on both back ends: every value
back bit for bit and in order, pages and spans that add up, a rewind that cuts a block,
the exactly-once census, and an older store's rows moved into blocks by the migration."""

from __future__ import annotations

import math
import random
import sqlite3

import numpy as np
import pytest

from lipon_hw import store_cell_blocks, store_migrations, store_pg_schema
from lipon_hw.store import Store
from lipon_hw.store_cell_blocks import MAX_BLOCK
from lipon_hw.store_open import APPLICATION_ID
from lipon_hw.store_pg import PgConnection


def _cycling(store: Store, channels=(1,)) -> int:
    run_id = store.create_run("c", "cycling", "p.yaml", "", "", None, None)
    for ch in channels:
        store.add_channel(run_id, ch, "mes4", None, "p")
    return run_id


def _odd_floats(n: int, rng: random.Random) -> list[float]:
    """Values a text or single-precision path would spoil: the last bit, -0.0, subnormals,
    the largest double."""
    special = [-0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3]
    return [special[k] if k < len(special) else rng.uniform(-5, 5) * 10 ** rng.randint(-12, 3)
            for k in range(n)]


def test_samples_come_back_bit_for_bit_in_order_across_blocks(tmp_path, backend):
    rng = random.Random(7)
    store = Store(tmp_path)
    run_id = _cycling(store, (1, 2))
    n = MAX_BLOCK * 2 + 17  # one poll's columns longer than a block: cut into three
    times = [1.0 + k for k in range(n)]
    volts, amps = _odd_floats(n, rng), _odd_floats(n, rng)
    store.add_cell_columns(run_id, 1, times, volts, amps, 1, 1, 1, "CC_CHG")
    # rows of several steps and both channels, as add_cell_samples takes them
    rows = [(n + 1.0 + k, 3.9, -1e-6, 1, 2 + k // 3, 2, "CC_DCHG") for k in range(7)]
    store.add_cell_samples(run_id, 1, rows)
    store.add_cell_samples(run_id, 2, [(0.5, 3.0, 1e-6, 1, 1, 1, "REST")])
    store.flush()
    got = list(store.cell_samples(run_id, 1))
    want = [*zip(times, volts, amps, [1] * n, [1] * n, [1] * n, ["CC_CHG"] * n,
                 strict=True), *rows]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):  # bit for bit: -0.0 and 0.0 differ here
        assert [math.copysign(1, x) if x == 0 else x for x in g[:3]] == \
            [math.copysign(1, x) if x == 0 else x for x in w[:3]] and g[3:] == w[3:]
    assert list(store.cell_samples(run_id, 2)) == [(0.5, 3.0, 1e-6, 1, 1, 1, "REST")]
    blocks = store._db.execute("SELECT n, step_count FROM cell_blocks WHERE channel=1"
                               " ORDER BY rowid").fetchall()
    assert blocks == [(MAX_BLOCK, 1), (MAX_BLOCK, 1), (17, 1), (3, 2), (3, 3), (1, 4)]
    assert store.cell_samples_of_cycles(run_id, 1, [1]) == got
    assert store.last_cell_sample_t(run_id, 1) == n + 7.0
    assert store.max_step_count(run_id, 1) == 4
    assert store.last_cell_sample(run_id, 1) == (n + 7.0, 3.9, -1e-6, 1)
    assert store.sample_census(run_id) == (n + 7 + 1, 0, 2)
    store.close()


def test_pages_of_any_size_add_up_to_the_span_with_times_shared(tmp_path, backend):
    store = Store(tmp_path)
    run_id = _cycling(store)
    t = 0.0
    for step in range(1, 9):  # blocks of various lengths; some samples share their time
        n = 1 + step * 5
        times = [t + k // 2 for k in range(n)]
        t = times[-1] + 1
        store.add_cell_columns(run_id, 1, times, [3.0 + k * 1e-3 for k in range(n)],
                               [1e-6] * n, step, step, 1, "CC_CHG")
    store.flush()
    every = [(r[0], r[1], r[2], r[3]) for r in store.cell_samples(run_id, 1)]
    assert store.cell_samples_span(run_id, 1) == every
    for limit in (1, 2, 3, 7, 50, 1000):
        pages, after = [], None
        for _ in range(len(every) + 1):  # a cursor that does not move on fails, not hangs
            page, after = store.cell_samples_page(run_id, 1, limit, after=after)
            pages += page
            assert len(page) <= limit
            if after is None:
                break
        assert pages == every, limit
    since, until = every[20][0], every[60][0]
    inside = [s for s in every if since <= s[0] <= until]
    assert store.cell_samples_span(run_id, 1, since, until) == inside
    page, after = store.cell_samples_page(run_id, 1, 5, since, until)
    rest, _ = store.cell_samples_page(run_id, 1, 1000, since, until, after)
    assert page + rest == inside
    store.close()


def test_a_rewind_cuts_the_block_it_falls_in_and_drops_those_after(tmp_path, backend):
    store = Store(tmp_path)
    run_id = _cycling(store, (1, 2))
    for ch in (1, 2):
        for step in range(3):
            times = [step * 100.0 + k for k in range(50)]
            store.add_cell_columns(run_id, ch, times, [3.0] * 50, [1e-6] * 50, 1, step + 1, 1,
                                   "CC_CHG")
    store.flush()
    before = list(store.cell_samples(run_id, 1))
    store.rewind_channel(run_id, 1, 120.0)
    assert list(store.cell_samples(run_id, 1)) == [s for s in before if s[0] <= 120.0]
    assert len(list(store.cell_samples(run_id, 2))) == 150  # another channel untouched
    assert store._db.execute("SELECT t_first_s, t_last_s, n FROM cell_blocks WHERE channel=1"
                             " ORDER BY rowid").fetchall() == [(0.0, 49.0, 50), (100.0, 120.0, 21)]
    store.add_cell_columns(run_id, 1, [121.0, 122.0], [3.1, 3.2], [1e-6] * 2, 1, 2, 1, "CC_CHG")
    store.flush()
    assert [s[0] for s in store.cell_samples(run_id, 1)][-3:] == [120.0, 121.0, 122.0]
    assert store.sample_census(run_id) == (71 + 2 + 150, 0, 2)
    store.close()


def test_columns_as_arrays_or_lists_are_stored_alike_and_bad_ones_as_rows(tmp_path):
    """A driver's columns come as float arrays (MethodSCRIPT's) or lists (another's): the
    same blocks, bit for bit. A column of text, None or bool, or of another length, is
    not taken as numbers: it goes through add_cell_samples, whose rows with a value that
    is not a finite number are left out with an alarm."""
    rng = random.Random(3)
    store = Store(tmp_path)
    run_id = _cycling(store, (1, 2, 3))
    n = 40
    times, volts, amps = [float(k) for k in range(n)], _odd_floats(n, rng), _odd_floats(n, rng)
    store.add_cell_columns(run_id, 1, times, volts, amps, 1, 1, 1, "CC")
    store.add_cell_columns(run_id, 2, *map(np.array, (times, volts, amps)), 1, 1, 1, "CC")
    store.add_cell_columns(run_id, 3, [n + 0.5, n + 1.5], ["3.9", "3.9"], [1e-6] * 2, 1, 1,
                           1, "CC")
    store.add_cell_columns(run_id, 3, [n + 2.5], [None], [1e-6], 1, 1, 1, "CC")
    store.add_cell_columns(run_id, 3, [n + 3.5], [3.9], np.array([True]), 1, 1, 1, "CC")
    store.flush()
    blobs = store._db.execute("SELECT channel, t_s, voltage_V, current_A FROM cell_blocks"
                              " WHERE channel < 3 ORDER BY channel").fetchall()
    assert [b[0] for b in blobs] == [1, 2] and blobs[0][1:] == blobs[1][1:]
    assert list(store.cell_samples(run_id, 1)) == list(store.cell_samples(run_id, 2))
    assert list(store.cell_samples(run_id, 3)) == [(n + 3.5, 3.9, True, 1, 1, 1, "CC")]
    assert any("channel 3 sample" in a.message for a in store.alarms(run_id))
    with pytest.raises(ValueError):  # columns of different lengths: a caller's mistake
        store.add_cell_columns(run_id, 1, [1.0, 2.0], [3.9], [1e-6] * 2, 1, 1, 1, "CC")
    store.close()


def test_the_census_counts_a_time_stored_twice(tmp_path, backend):
    store = Store(tmp_path)
    run_id = _cycling(store)
    store.add_cell_columns(run_id, 1, [1.0, 2.0, 3.0], [3.0] * 3, [0.0] * 3, 1, 1, 1, "CC")
    store.add_cell_columns(run_id, 1, [3.0, 4.0], [3.0] * 2, [0.0] * 2, 1, 2, 1, "CC")
    store.flush()
    assert store.sample_census(run_id) == (5, 1, 1)
    store.close()


def _layout_10_sqlite(path) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    store_migrations.migrate(con, APPLICATION_ID, to_version=10)
    con.close()


def test_an_older_stores_rows_are_moved_into_blocks_as_they_were(tmp_path, backend):
    rng = np.random.default_rng(3)
    rows = []
    for ch in (1, 2):
        t = 0.0
        for step in range(1, 6):
            for _ in range(int(rng.integers(1, 40))):
                t += float(rng.uniform(0.1, 30))
                rows.append((1, ch, t, float(rng.uniform(2, 4.5)), float(rng.normal(0, 1e-6)),
                             (step + 1) // 2, step, step % 2, "CC_CHG" if step % 2 else "REST"))
    insert = ("INSERT INTO cell_samples (run_id, channel, t_s, voltage_V, current_A, cycle,"
              " step_count, step_id, step_type) VALUES (?,?,?,?,?,?,?,?,?)")
    run = ("INSERT INTO runs (name, kind, sequence_path, sequence_text, station_text, status,"
           " started_at) VALUES ('old', 'cycling', 'p.yaml', '', '', 'completed', 1.0)")
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)  # rows written in any order are read in time order
    if backend is None:
        tmp_path.mkdir(exist_ok=True)
        _layout_10_sqlite(tmp_path / "lipon.db")
        con = sqlite3.connect(tmp_path / "lipon.db")
        con.execute(run)
        con.executemany(insert, shuffled)
        con.commit()
        con.close()
    else:
        db = PgConnection(backend, backend)
        store_pg_schema.migrate(db, to_version=10)
        db.execute(run)
        db.executemany(insert, shuffled)
        db.close()
    reader = Store(tmp_path, read_only=True)
    assert reader.layout == 10
    want = {ch: [r[2:] for r in rows if r[1] == ch] for ch in (1, 2)}
    assert {ch: list(reader.cell_samples(1, ch)) for ch in (1, 2)} == want
    figures = [(reader.last_cell_sample_t(1, ch), reader.max_step_count(1, ch),
                reader.last_cell_sample(1, ch)) for ch in (1, 2)]
    assert figures == [(w[-1][0], 5, w[-1][:3] + (w[-1][3],)) for w in want.values()]
    reader.close()
    writer = Store(tmp_path)
    assert writer.layout == store_migrations.LATEST
    assert {ch: list(writer.cell_samples(1, ch)) for ch in (1, 2)} == want
    assert writer.sample_census(1) == (len(rows), 0, 2)
    assert [(writer.last_cell_sample_t(1, ch), writer.max_step_count(1, ch),
             writer.last_cell_sample(1, ch)) for ch in (1, 2)] == figures
    assert writer._db.execute("SELECT COUNT(*) FROM cell_samples").fetchone()[0] == 0
    steps = writer._db.execute("SELECT COUNT(*) FROM cell_blocks").fetchone()[0]
    assert steps == 10  # one block a step and channel
    writer.close()


def test_blocks_hold_little_endian_doubles():
    assert store_cell_blocks.pack([1.0, -2.5]) == b"\x00" * 6 + b"\xf0\x3f" + \
        b"\x00" * 6 + b"\x04\xc0"
    assert store_cell_blocks.unpack(store_cell_blocks.pack([0.1, 5e-324])) == [0.1, 5e-324]


@pytest.mark.parametrize("layout", [10, store_migrations.LATEST])
def test_the_rows_table_reads_either_layout_for_sql(tmp_path, layout):
    db = tmp_path / "lipon.db"
    if layout == 10:
        _layout_10_sqlite(db)
        con = sqlite3.connect(db)
        con.execute("INSERT INTO cell_samples VALUES (1, 1, 2.0, 3.0, 1e-6, 1, 1, 1, 'CC')")
        con.commit()
        con.close()
    else:
        store = Store(tmp_path)
        store.add_cell_samples(_cycling(store), 1, [(2.0, 3.0, 1e-6, 1, 1, 1, "CC")])
        store.close()
    con = sqlite3.connect(db)
    store_cell_blocks.rows_table(con, con.execute("PRAGMA user_version").fetchone()[0])
    assert con.execute("SELECT * FROM cell_samples").fetchall() == [
        (1, 1, 2.0, 3.0, 1e-6, 1, 1, 1, "CC")]
    con.close()
