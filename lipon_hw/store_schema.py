"""The store's tables (layout version `store_open.SCHEMA_VERSION`) and its row types.

Readings are long (run, time, quantity, value); a cell test's samples, spectra and cycle
statistics have tables of their own. A column added to an existing table is a new layout:
raise SCHEMA_VERSION and migrate (a writer refuses a file of a layout it does not know).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    sequence_path TEXT NOT NULL,
    sequence_text TEXT NOT NULL,
    station_text TEXT NOT NULL,
    seed INTEGER,
    sample_id TEXT,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    ended_at REAL,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    t_start_s REAL NOT NULL,
    t_end_s REAL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS quantities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS readings (
    run_id INTEGER NOT NULL,
    t_s REAL NOT NULL,
    quantity_id INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_run ON readings(run_id, t_s);
CREATE TABLE IF NOT EXISTS alarms (
    run_id INTEGER NOT NULL,
    t_s REAL NOT NULL,
    severity TEXT NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t_s REAL NOT NULL,
    step_idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS requests (
    run_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    made_at REAL NOT NULL,
    taken INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tooling (
    instrument TEXT NOT NULL,
    film TEXT NOT NULL,
    tooling_pct REAL NOT NULL,
    run_id INTEGER,
    set_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY,
    substrate TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layers (
    sample_id TEXT NOT NULL REFERENCES samples(id),
    seq INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    material TEXT NOT NULL,
    thickness_nm REAL NOT NULL,
    rate_A_s REAL,
    tool TEXT NOT NULL,
    t_s REAL NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (sample_id, seq)
);
CREATE TABLE IF NOT EXISTS channels (
    run_id INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    instrument TEXT NOT NULL,
    sample_id TEXT,
    protocol TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    cycle INTEGER NOT NULL DEFAULT 0,
    step_count INTEGER NOT NULL DEFAULT 0,
    t_s REAL NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, channel)
);
CREATE TABLE IF NOT EXISTS cell_samples (
    run_id INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    t_s REAL NOT NULL,
    voltage_V REAL NOT NULL,
    current_A REAL NOT NULL,
    cycle INTEGER NOT NULL,
    step_count INTEGER NOT NULL,
    step_id INTEGER NOT NULL,
    step_type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cell_samples_by_channel ON cell_samples(run_id, channel, t_s);
CREATE TABLE IF NOT EXISTS spectra (
    run_id INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    t_s REAL NOT NULL,
    cycle INTEGER NOT NULL,
    step_count INTEGER NOT NULL,
    f_Hz REAL NOT NULL,
    z_re_ohm REAL NOT NULL,
    z_im_ohm REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cycles (
    run_id INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    cycle INTEGER NOT NULL,
    stats TEXT NOT NULL,
    PRIMARY KEY (run_id, channel, cycle)
);
CREATE TABLE IF NOT EXISTS sim_truth (
    kind TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    sample_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    truth TEXT NOT NULL,
    PRIMARY KEY (kind, run_id, sample_id, position)
);
"""
# `sim_truth` is written and read by the simulated lab only (`lipon_hw.sim`), never by the
# engine: the true film of a layer (kind 'film': the sample, the run and recipe step that
# laid it down) or the true parameters of a cell (kind 'cell': the run and channel it was
# mounted on, sample '' unless it was built from one). Measurements stay in their tables.

#: one row of `cell_samples` after (run_id, channel)
CELL_SAMPLE_COLUMNS = ("t_s", "voltage_V", "current_A", "cycle", "step_count", "step_id",
                       "step_type")


@dataclass(frozen=True)
class Run:
    id: int
    name: str
    kind: str
    sequence_path: str
    sequence_text: str
    station_text: str
    seed: int | None
    sample_id: str | None
    status: str
    message: str
    started_at: float
    ended_at: float | None
    summary: dict


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    t_s: float
    step_idx: int
    state: dict
