"""The store's tables as layout 1 made them, and the typed records the store returns.

Readings are long (run, time, quantity, value); a cell test's samples, spectra and cycle
statistics have tables of their own. `SCHEMA` is layout 1 exactly as lipon-hw 0.1.0 wrote
it, the base every migration starts from: never edit it. A table or column added later is
a step in `store_migrations.MIGRATIONS`, which says how (a writer refuses a file of a
layout it does not know, and migrates an older one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
"""

#: `recorded` of a record written as the run started (`run_metadata`, `planned_steps`)
AT_START = "at start"

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


@dataclass(frozen=True)
class RunMetadata:
    """Where and with what a run ran (`store_metadata`); None where it is not known."""
    run_id: int
    lipon_hw_version: str | None
    station_name: str | None
    simulated: bool | None
    sequence_sha256: str
    station_sha256: str
    host_name: str | None
    user_name: str | None
    python_version: str | None
    platform: str | None
    #: `store_metadata.AT_START`, or `INFERRED` for a run older than layout 2
    recorded: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StepFilm:
    """The film a step lays down and the recorded quantities that hold its readings
    (`<instrument>.<quantity>` or a loop's own names; None where the step records none)."""
    #: None: not known before the run (an evaporation with no source loaded on its tool)
    material: str | None
    rate: str | None
    thickness: str | None
    #: 1 while the shutter is open; None: open for the whole step, except while held
    shutter: str | None
    #: the rate loop's filtered rate, and the source current it drives
    filtered_rate: str | None = None
    current: str | None = None
    rate_setpoint_A_s: float | None = None
    target_nm: float | None = None
    #: where the rate loop runs (`host`, `controller`), for a step that runs one
    rate_control: str | None = None
    #: the raw rate is too noisy to read as recorded (a monitor sampled every few
    #: seconds, with no filtered companion): a plot draws a running mean over it
    smooth_rate: bool = False

    def readings(self) -> dict[str, str]:
        """Role in a plot (rate, filtered, thickness, current, shutter) -> quantity."""
        roles = {"rate": self.rate, "filtered": self.filtered_rate,
                 "thickness": self.thickness, "current": self.current,
                 "shutter": self.shutter}
        return {role: name for role, name in roles.items() if name is not None}


@dataclass(frozen=True)
class RunStep:
    """One step of a run as planned when it started (`planned_steps`): its index in the
    sequence, its kind, the tool it runs on, and the film it lays down, if any."""
    idx: int
    kind: str
    #: None: not known (a run older than store layout 4 whose sequence does not say)
    tool: str | None
    film: StepFilm | None
    #: AT_START, or `store_run_steps.INFERRED` for a run older than layout 4
    recorded: str = AT_START


@dataclass(frozen=True)
class Layer:
    """One film of a sample's stack, as measured (`properties`: the step, the process
    setpoints, partial and why, how its thickness was estimated...)."""
    seq: int
    run_id: int
    material: str
    thickness_nm: float
    rate_A_s: float | None
    tool: str
    properties: dict

    @property
    def partial(self) -> bool:
        """Recorded when its run stopped while the layer grew."""
        return bool(self.properties.get("partial"))

    def to_dict(self) -> dict:
        return {"seq": self.seq, "run_id": self.run_id, "material": self.material,
                "thickness_nm": self.thickness_nm, "rate_A_s": self.rate_A_s,
                "tool": self.tool, "properties": self.properties}


@dataclass(frozen=True)
class Sample:
    id: str
    substrate: str
    created_at: float
    #: its film stack, bottom first
    layers: tuple[Layer, ...]

    def to_dict(self) -> dict:
        return {"id": self.id, "substrate": self.substrate, "created_at": self.created_at,
                "layers": [layer.to_dict() for layer in self.layers]}


@dataclass(frozen=True)
class Channel:
    """One potentiostat channel of a cell test: its progress and resume `state`."""
    channel: int
    instrument: str
    sample_id: str | None
    protocol: str
    status: str
    message: str
    cycle: int
    step_count: int
    t_s: float
    state: dict

    def to_dict(self) -> dict:
        return asdict(self)


#: alarm severities, least first; a notification hook hears `warning` and above
SEVERITIES = ("info", "warning", "hold", "error")


@dataclass(frozen=True)
class Alarm:
    """Something the operator must hear of, as the run stored it: when (run clock), how
    bad, which instrument or part of the engine saw it, the rule that raised it and the
    reaction it took (None: no rule — a fault the engine met itself — or no reaction)."""
    run_id: int
    t_s: float
    severity: str
    #: the instrument (`rf`, `rf.reflected_power_W`, `channel 3`) or `engine`, `guard`...
    source: str
    message: str
    #: e.g. an interlock's condition; None for a store older than layout 5
    rule: str | None = None
    #: what was done: `hold`, `abort`, `alarm` (none but this alarm), `resume`...
    reaction: str | None = None

    @property
    def level(self) -> int:
        """The severity's rank in SEVERITIES (an unknown one counts as a warning)."""
        return SEVERITIES.index(self.severity) if self.severity in SEVERITIES else 1

    def to_dict(self) -> dict:
        return {"t_s": self.t_s, "severity": self.severity, "source": self.source,
                "rule": self.rule, "reaction": self.reaction, "message": self.message}


@dataclass(frozen=True)
class Sheet:
    """A sheet patterned into `rows` × `cols` cells (a sample of its own), cut from a roll
    (a sample, or None), first stored by run `run_id`."""
    id: str
    roll_id: str | None
    rows: int
    cols: int
    pitch_x_mm: float
    pitch_y_mm: float
    run_id: int


@dataclass(frozen=True)
class SampleLink:
    child: str
    parent: str
    relation: str
    run_id: int


@dataclass(frozen=True)
class ScreenCell:
    """One cell's screening result: where (row, col from 1; the probe site and touchdown
    that measured it), what was measured (`metrics`: name → value in the name's unit),
    and its bins (the rule that set them: a bin rule's name, or `pass`)."""
    run_id: int
    sheet_id: str
    row: int
    col: int
    site: int
    touchdown: int
    t_s: float
    attempts: int
    #: 'ok', or 'lost' when no touchdown made contact (a tester fault, not a bad cell)
    contact: str
    metrics: dict
    soft_bin: int
    soft_bin_name: str
    hard_bin: int
    hard_bin_name: str
    passed: bool
    rule: str

    def to_dict(self) -> dict:
        return asdict(self)
