"""Exporting a run: wide CSV / Parquet with step columns, a JSON sidecar, bounded memory."""

from __future__ import annotations

import csv
import json
import time
import tracemalloc

import pyarrow.parquet as pq
import pytest

from lipon_hw.errors import InputError
from lipon_hw.export import export_run
from lipon_hw.store import Store

QCM = "qcm.thickness_nm"
RF = "rf.forward_power_W"
P = "gauge.pressure_torr"


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data")
    yield s
    s.close()


def make_run(store: Store) -> int:
    run_id = store.create_run("LiPON test", "sputter", "sequences/lipon.yaml", "name: x\n",
                              "station: sim\n", seed=7, sample_id="FS-001")
    # step 0: 0..10 s, step 1: 10..20 s, then a gap, step 2 starts at 30 s and never ends
    store.begin_step(run_id, 0, "pump_down", {"below_torr": 3e-6}, 0.0)
    store.add_readings(run_id, 0.0, {P: 760.0})
    store.add_readings(run_id, 5.0, {P: 1e-3, RF: 0.0})
    store.end_step(run_id, 0, "done", 10.0)
    store.begin_step(run_id, 1, "rf", {"power_W": 50}, 10.0)
    store.add_readings(run_id, 10.0, {RF: 25.0})          # boundary: belongs to step 1
    store.add_readings(run_id, 15.5, {RF: 50.0, QCM: 0.125, P: 1.5e-2})
    store.end_step(run_id, 1, "done", 20.0)
    store.add_readings(run_id, 25.0, {QCM: 0.25})          # between steps
    store.add_alarm(run_id, 26.0, "warning", "rf", "reflected power high")
    store.begin_step(run_id, 2, "deposit", {"until_thickness_nm": 1000}, 30.0)
    store.add_readings(run_id, 31.0, {QCM: 1.0, RF: 50.0})
    store.set_status(run_id, "done", "finished")
    return run_id


EXPECTED = [  # t_s, gauge.pressure_torr, qcm.thickness_nm, rf.forward_power_W, step, step_kind
    (0.0, 760.0, None, None, 0, "pump_down"),
    (5.0, 1e-3, None, 0.0, 0, "pump_down"),
    (10.0, None, None, 25.0, 1, "rf"),
    (15.5, 1.5e-2, 0.125, 50.0, 1, "rf"),
    (25.0, None, 0.25, None, None, None),
    (31.0, None, 1.0, 50.0, 2, "deposit"),
]
HEADER = ["t_s", P, QCM, RF, "step", "step_kind"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def cell(text):
    return None if text == "" else text


def test_csv_is_wide_with_blanks_and_steps(store, tmp_path):
    run_id = make_run(store)
    out = export_run(store, run_id, "csv", tmp_path / "out" / "trace.csv")
    assert out == tmp_path / "out" / "trace.csv"
    rows = read_csv(out)
    assert rows[0] == HEADER
    assert len(rows) - 1 == len(EXPECTED)
    for got, want in zip(rows[1:], EXPECTED, strict=True):
        t, p, qcm, rf, step, kind = want
        assert float(got[0]) == t
        for text, value in zip(got[1:4], (p, qcm, rf), strict=True):
            assert (None if text == "" else float(text)) == value
        assert cell(got[4]) == (None if step is None else str(step))
        assert cell(got[5]) == kind
    assert out.read_text().splitlines()[0] == ",".join(HEADER)  # no comment lines


def test_parquet_reads_back_with_same_values_and_schema(store, tmp_path):
    import pyarrow as pa

    run_id = make_run(store)
    out = export_run(store, run_id, "parquet", tmp_path / "trace.parquet")
    table = pq.read_table(out)
    assert table.column_names == HEADER
    assert table.schema.field("t_s").type == pa.float64()
    assert table.schema.field(QCM).type == pa.float64()
    assert table.schema.field("step").type == pa.int32()
    assert table.schema.field("step_kind").type == pa.string()
    assert table.num_rows == len(EXPECTED)
    got = list(zip(*(table.column(c).to_pylist() for c in HEADER), strict=True))
    assert got == EXPECTED


def test_csv_and_parquet_agree(store, tmp_path):
    run_id = make_run(store)
    csv_rows = read_csv(export_run(store, run_id, "csv", tmp_path / "a.csv"))[1:]
    table = pq.read_table(export_run(store, run_id, "parquet", tmp_path / "a.parquet"))
    for c, name in enumerate(HEADER[:4]):
        assert [None if r[c] == "" else float(r[c]) for r in csv_rows] == \
            table.column(name).to_pylist()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_sidecar_holds_run_metadata(store, tmp_path, fmt):
    run_id = make_run(store)
    out = export_run(store, run_id, fmt, tmp_path / f"trace.{fmt}")
    meta = json.loads((tmp_path / f"trace.{fmt}.json").read_text())
    assert meta["run_id"] == run_id
    assert meta["name"] == "LiPON test"
    assert meta["status"] == "done"
    assert meta["sequence_path"] == "sequences/lipon.yaml"
    assert meta["seed"] == 7
    assert meta["sample_id"] == "FS-001"
    assert meta["file"] == out.name
    assert meta["rows"] == len(EXPECTED)
    assert meta["columns"] == HEADER
    assert [(s["idx"], s["kind"], s["t_start_s"], s["t_end_s"]) for s in meta["steps"]] == [
        (0, "pump_down", 0.0, 10.0), (1, "rf", 10.0, 20.0), (2, "deposit", 30.0, None)]
    assert meta["steps"][1]["params"] == {"power_W": 50}
    assert meta["alarms"] == [{"t_s": 26.0, "severity": "warning", "source": "rf",
                               "rule": None, "reaction": None,
                               "message": "reflected power high"}]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_directory_out_path_gets_run_file_name(store, tmp_path, fmt):
    run_id = make_run(store)
    target = tmp_path / "exports"
    target.mkdir()
    out = export_run(store, run_id, fmt, target)
    assert out == target / f"run{run_id}.{fmt}"
    assert out.is_file()
    assert (target / f"run{run_id}.{fmt}.json").is_file()
    assert sorted(p.name for p in target.iterdir()) == [f"run{run_id}.{fmt}",
                                                         f"run{run_id}.{fmt}.json"]


def test_missing_directory_given_with_trailing_separator(store, tmp_path):
    run_id = make_run(store)
    out = export_run(store, run_id, "csv", f"{tmp_path}/new/dir/")
    assert out == tmp_path / "new" / "dir" / f"run{run_id}.csv"
    assert out.is_file()


def test_missing_parent_directories_are_created(store, tmp_path):
    run_id = make_run(store)
    out = export_run(store, run_id, "parquet", tmp_path / "a" / "b" / "c.parquet")
    assert out.is_file()
    assert pq.read_table(out).num_rows == len(EXPECTED)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_database_itself_is_never_an_export_target(store, tmp_path, fmt):
    run_id = make_run(store)
    store.flush()
    db_bytes = store.path.read_bytes()
    with pytest.raises(InputError, match="is the database file lipon.db of the store"):
        export_run(store, run_id, fmt, store.path)
    assert store.path.read_bytes() == db_bytes
    assert store.run(run_id).status == "done"


def test_an_existing_export_is_replaced_only_when_forced(store, tmp_path):
    run_id = make_run(store)
    out = tmp_path / "x.csv"
    out.write_text("keep me\n")
    with pytest.raises(InputError, match="exists; pass --force to replace it"):
        export_run(store, run_id, "csv", out)
    assert out.read_text() == "keep me\n"
    assert export_run(store, run_id, "csv", out, force=True) == out
    assert read_csv(out)[0] == HEADER


def test_unknown_format_is_input_error(store, tmp_path):
    run_id = make_run(store)
    with pytest.raises(InputError, match=r"format xlsx is unknown \(use csv or parquet\)"):
        export_run(store, run_id, "xlsx", tmp_path / "out" / "x.xlsx")
    assert not (tmp_path / "out").exists()


def test_unknown_run_is_input_error(store, tmp_path):
    with pytest.raises(InputError, match="run 42 is not in"):
        export_run(store, 42, "csv", tmp_path / "out" / "x.csv")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_run_without_readings_gives_header_only(store, tmp_path, fmt):
    run_id = store.create_run("empty", "sputter", "s.yaml", "", "", None, None)
    out = export_run(store, run_id, fmt, tmp_path / f"e.{fmt}")
    if fmt == "csv":
        assert read_csv(out) == [["t_s", "step", "step_kind"]]
    else:
        table = pq.read_table(out)
        assert table.num_rows == 0
        assert table.column_names == ["t_s", "step", "step_kind"]
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["rows"] == 0 and meta["seed"] is None and meta["sample_id"] is None


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_chunk_boundaries_do_not_change_the_table(store, tmp_path, fmt):
    run_id = make_run(store)
    whole = export_run(store, run_id, fmt, tmp_path / f"whole.{fmt}")
    small = export_run(store, run_id, fmt, tmp_path / f"small.{fmt}", chunk_rows=4)
    if fmt == "csv":
        assert whole.read_bytes() == small.read_bytes()
    else:
        assert pq.read_table(whole).equals(pq.read_table(small))
        assert pq.ParquetFile(small).metadata.num_row_groups == 2


def test_floats_round_trip_exactly_in_csv(store, tmp_path):
    run_id = store.create_run("floats", "sputter", "s.yaml", "", "", None, None)
    values = [0.1 + 0.2, 1 / 3, 6.02214076e23, 1.5e-12, -0.0]
    for i, v in enumerate(values):
        store.add_readings(run_id, i * 0.1, {"x.value_V": v})
    rows = read_csv(export_run(store, run_id, "csv", tmp_path / "f.csv"))[1:]
    assert [float(r[0]) for r in rows] == [i * 0.1 for i in range(len(values))]
    assert [float(r[1]) for r in rows] == values


def test_quantity_clashing_with_an_export_column_is_input_error(store, tmp_path):
    run_id = store.create_run("clash", "sputter", "s.yaml", "", "", None, None)
    store.add_readings(run_id, 0.0, {"step": 1.0})
    with pytest.raises(InputError, match="clashes"):
        export_run(store, run_id, "csv", tmp_path / "c.csv")
    assert not (tmp_path / "c.csv").exists()


def test_overlapping_and_unfinished_steps(store, tmp_path):
    """A step left running by a killed run does not swallow the steps after it."""
    run_id = store.create_run("killed", "sputter", "s.yaml", "", "", None, None)
    store.begin_step(run_id, 0, "rf", {}, 0.0)                 # never ended
    store.begin_step(run_id, 1, "deposit", {}, 5.0)
    store.end_step(run_id, 1, "done", 8.0)
    for t in (1.0, 5.0, 7.0, 9.0):
        store.add_readings(run_id, t, {"a.x_V": t})
    table = pq.read_table(export_run(store, run_id, "parquet", tmp_path / "k.parquet"))
    assert table.column("step").to_pylist() == [0, 1, 1, 0]
    assert table.column("step_kind").to_pylist() == ["rf", "deposit", "deposit", "rf"]


def _big_run(store: Store, n_readings: int) -> tuple[int, int]:
    """Readings at 4 quantities, 3 of them every second and 1 every 4 s."""
    run_id = store.create_run("big", "sputter", "s.yaml", "", "", 1, None)
    store.begin_step(run_id, 0, "deposit", {}, 0.0)
    count, t = 0, 0
    rows = []
    while count < n_readings:
        values = {QCM: t * 0.01, RF: 50.0, P: 1.5e-2}
        if t % 4 == 0:
            values["qcm.rate_A_s"] = 1.0
        values = dict(list(values.items())[: n_readings - count])
        rows.append((t, values))
        count += len(values)
        t += 1
    for t_s, values in rows:
        store.add_readings(run_id, float(t_s), values)
    store.end_step(run_id, 0, "done", float(t))
    store.flush()
    return run_id, len(rows)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_big_run_exports_with_bounded_memory(store, tmp_path, fmt):
    run_id, n_times = _big_run(store, 200_000)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        out = export_run(store, run_id, fmt, tmp_path / f"big.{fmt}")
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6, f"peak {peak / 1e6:.1f} MB"
    assert elapsed < 60, f"{elapsed:.1f} s"
    if fmt == "csv":
        with open(out, newline="") as f:
            assert sum(1 for _ in f) == n_times + 1
    else:
        meta = pq.ParquetFile(out).metadata
        assert meta.num_rows == n_times
        assert meta.num_row_groups == -(-n_times // 10_000)
        table = pq.read_table(out, columns=["t_s", "qcm.rate_A_s", "step"])
        assert table.column("qcm.rate_A_s").null_count == n_times - -(-n_times // 4)
        assert set(table.column("step").to_pylist()) == {0}


def test_memory_does_not_grow_with_run_length(tmp_path):
    """Peak memory of a 4x longer run stays about the same: it follows the chunk, not the run."""
    peaks = []
    for n in (50_000, 200_000):
        store = Store(tmp_path / f"d{n}")
        run_id, _ = _big_run(store, n)
        tracemalloc.start()
        try:
            export_run(store, run_id, "csv", tmp_path / f"m{n}.csv")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
            store.close()
    assert peaks[1] < 1.5 * peaks[0], peaks
