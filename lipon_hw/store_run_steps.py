"""A run's steps as planned when it started (`planned_steps`, store layout 4).

Written once, as the run starts (`insert`, from the run kind's own description of its
steps, e.g. `deposition.steps.describe_steps`): per step its index, kind and tool, and for
a step that lays down a film the film, the recorded quantities holding its rate,
thickness, shutter and source current, its setpoint and target. Whoever reads a run's
structure (the layer plots) reads these rows, never the sequence's text.

For runs made before layout 4 the migration infers the rows ONCE (`inferred`), the way the
layer plots of lipon-hw up to then read a run: from the stored sequence and station text,
the steps as they ran, and the quantity names the run recorded. That reading of older
runs lives here and nowhere else. Quantity names here are the ones those versions
recorded, frozen: a later rename in the engine must not change what an old run means.
"""

from __future__ import annotations

import json
import math

import yaml

from lipon_hw.store_schema import RunStep, StepFilm

#: `recorded` of a row the migration to layout 4 derived from an older run's rows
INFERRED = "inferred by the migration to store layout 4"

COLUMNS = ("run_id", "idx", "kind", "tool", "lays_film", "material", "rate_quantity",
           "filtered_rate_quantity", "thickness_quantity", "shutter_quantity",
           "current_quantity", "rate_setpoint_A_s", "target_nm", "rate_control",
           "smooth_rate", "recorded")

SQL = """
CREATE TABLE planned_steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    tool TEXT,
    lays_film INTEGER NOT NULL,
    material TEXT,
    rate_quantity TEXT,
    filtered_rate_quantity TEXT,
    thickness_quantity TEXT,
    shutter_quantity TEXT,
    current_quantity TEXT,
    rate_setpoint_A_s REAL,
    target_nm REAL,
    rate_control TEXT,
    smooth_rate INTEGER NOT NULL DEFAULT 0,
    recorded TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);"""


def insert(db, run_id: int, steps: list[RunStep]) -> None:
    db.executemany(f"INSERT INTO planned_steps ({', '.join(COLUMNS)}) VALUES"
                   f" ({','.join('?' * len(COLUMNS))})", [_row(run_id, s) for s in steps])


def select(db, run_id: int) -> list[RunStep]:
    rows = db.execute(f"SELECT {', '.join(COLUMNS[1:])} FROM planned_steps WHERE run_id=?"
                      " ORDER BY idx", (run_id,)).fetchall()
    return [_step(r) for r in rows]


def fill(db) -> None:
    """The migration to layout 4: every older run's planned steps, inferred."""
    for (run_id,) in db.execute("SELECT id FROM runs WHERE id NOT IN"
                                " (SELECT run_id FROM planned_steps) ORDER BY id").fetchall():
        insert(db, run_id, inferred(db, run_id))


def _row(run_id: int, s: RunStep) -> tuple:
    f = s.film
    if f is None:
        return (run_id, s.idx, s.kind, s.tool, 0, *[None] * 9, 0, s.recorded)
    return (run_id, s.idx, s.kind, s.tool, 1, f.material, f.rate, f.filtered_rate,
            f.thickness, f.shutter, f.current, f.rate_setpoint_A_s, f.target_nm,
            f.rate_control, int(f.smooth_rate), s.recorded)


def _step(r: tuple) -> RunStep:
    idx, kind, tool, lays, material, rate, filtered, thickness, shutter, current, \
        setpoint, target, control, smooth, recorded = r
    film = StepFilm(material, rate, thickness, shutter, filtered, current, setpoint, target,
                    control, bool(smooth)) if lays else None
    return RunStep(idx, kind, tool, film, recorded)


# --- runs older than layout 4 ----------------------------------------------------------
#: the step kinds that laid down a film in layouts 1 to 3
_FILM_STEPS = ("deposit", "evaporate")
#: what an evaporation's rate loop recorded in layouts 1 to 3
_LOOP = {"rate": "loop.rate_A_s", "filtered": "loop.filtered_rate_A_s",
         "thickness": "loop.thickness_nm", "current": "loop.current_A",
         "shutter": "loop.shutter_open"}
#: a recipe's start tool when its text names none (the recipe schema's default)
_DEFAULT_TOOL = "sputter"


def inferred(db, run_id: int) -> list[RunStep]:
    """An older deposition's steps, from its stored texts, its steps as they ran (which
    win) and the quantities it recorded; none for another kind of run."""
    row = db.execute("SELECT kind, sequence_text, station_text FROM runs WHERE id=?",
                     (run_id,)).fetchone()
    if row is None or row[0] != "deposition":
        return []
    sequence, station = _mapping(row[1]), _mapping(row[2])
    planned: dict[int, tuple[str, dict]] = {}
    raw_steps = sequence.get("steps") if sequence is not None else None
    for i, raw in enumerate(raw_steps if isinstance(raw_steps, list) else []):
        if isinstance(raw, dict) and len(raw) == 1:
            kind, params = next(iter(raw.items()))
            planned[i] = (str(kind), params if isinstance(params, dict) else {})
    for idx, kind, params in db.execute("SELECT idx, kind, params FROM steps WHERE run_id=?",
                                        (run_id,)).fetchall():
        planned[idx] = (kind, _params(kind, params))
    names = {r[0] for r in db.execute(
        "SELECT DISTINCT q.name FROM readings r JOIN quantities q ON q.id = r.quantity_id"
        " WHERE r.run_id=?", (run_id,))}
    tools = station.get("tools") if station is not None else None
    tools = tools if isinstance(tools, dict) else {}
    tool = None
    if sequence is not None:
        tool = sequence.get("tool", _DEFAULT_TOOL)
        tool = tool if isinstance(tool, str) else None
    loaded = None  # the evaporation source's film, loaded last
    steps = []
    for idx in sorted(planned):
        kind, p = planned[idx]
        film = None
        if kind in _FILM_STEPS:
            roles = tools.get(tool)
            monitor = roles.get("thickness_monitor") if isinstance(roles, dict) else None
            film = _film(kind, p, loaded, names, monitor)
        steps.append(RunStep(idx, kind, tool, film, INFERRED))
        if kind == "transfer" and isinstance(p.get("to"), str):
            tool = p["to"]
        elif kind == "source" and isinstance(p.get("film"), str):
            loaded = p["film"]
    return steps


def _film(kind: str, p: dict, loaded: str | None, names: set[str],
          monitor: str | None) -> StepFilm:
    material = p.get("film") if isinstance(p.get("film"), str) else None
    if material is None and kind == "evaporate":
        material = loaded
    found = {role: q for role, q in _LOOP.items() if q in names} if kind == "evaporate" else {}
    if "rate" in found or "thickness" in found:
        q = {**found, "shutter": _LOOP["shutter"]}
    else:
        q = _monitor(names, monitor)
        q["shutter"] = _LOOP["shutter"] if kind == "evaporate" else None
    control = p.get("control")
    return StepFilm(material, q.get("rate"), q.get("thickness"), q["shutter"],
                    q.get("filtered"), q.get("current"), _number(p.get("rate_A_s")),
                    _number(p.get("until_thickness_nm")),
                    control if isinstance(control, str) else None,
                    smooth_rate=kind == "deposit")


def _monitor(names: set[str], monitor: str | None) -> dict[str, str]:
    """The thickness monitor's rate and thickness: the station's monitor of the tool, else
    the first instrument (not the rate loop) that recorded both, else one rate."""
    candidates = sorted(q[: -len(".rate_A_s")] for q in names
                        if q.endswith(".rate_A_s") and not q.startswith("loop."))
    both = [m for m in candidates if f"{m}.thickness_nm" in names]
    if monitor is not None and (f"{monitor}.rate_A_s" in names
                                or f"{monitor}.thickness_nm" in names):
        chosen = monitor
    elif both or candidates:
        chosen = (both or candidates)[0]
    else:
        return {}
    return {role: q for role, q in (("rate", f"{chosen}.rate_A_s"),
                                    ("thickness", f"{chosen}.thickness_nm")) if q in names}


def _params(kind: str, text: str) -> dict:
    """A step's stored parameters (`{kind: {...}}`, as the engine writes them)."""
    try:
        p = json.loads(text)
    except (TypeError, ValueError):
        return {}
    inner = p.get(kind) if isinstance(p, dict) else None
    return inner if isinstance(inner, dict) else (p if isinstance(p, dict) else {})


def _mapping(text: str) -> dict | None:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return doc if isinstance(doc, dict) else None


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None
