"""What every kind of run shares in its lifecycle: the result a run ends with, its clock,
the guard that ends a run which could not start, finding a run to resume (its lock taken
first), where its plots go, and the signal hold around a safe state. The kinds
(`lipon_hw.deposition`, `lipon_hw.celltest`) build their start and resume from these."""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import simpy

from lipon_hw.engine import claims
from lipon_hw.engine.ownership import Ownership
from lipon_hw.errors import InputError, LiponError
from lipon_hw.station import Station, load_station
from lipon_hw.store import Store


@dataclass
class RunResult:
    run_id: int
    status: str
    message: str
    t_s: float
    wall_s: float
    summary: dict = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)  # drawn after the run, beside the store


class Interrupted(LiponError):
    """Ctrl-C or SIGTERM."""

    exit_code = 130


@contextlib.contextmanager
def uninterruptible():
    """A second Ctrl-C (or SIGTERM) must not cut the safe-state sequence short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def open_run(store: Store, owned: Ownership, station: Station, resources, kind: str,
             name: str, sequence, text: str, seed: int | None, sample_id: str | None,
             prepare) -> int:
    """A new run: its resources locked before its row exists (a refusal leaves nothing
    to undo), its row written `running` with the station and the sequence as they were,
    its own lock taken, then `prepare(run_id)` (the kind's rows, the caller's on_start);
    a failure from there on ends the run with its reason (`ends_run_on_failure`)."""
    owned.take(resources)
    run_id = store.create_run(name, kind, str(sequence), text, station.text, seed, sample_id)
    with ends_run_on_failure(store, run_id):
        claims.take_run(owned, run_id)
        prepare(run_id)
    return run_id


def run_seed(station: Station, seed: int | None) -> int | None:
    """The seed a run records: the one asked for, else a simulated station's own."""
    return seed if seed is not None else (station.spec.sim.seed if station.simulated
                                          else None)


def check_speed(speed: float | None) -> None:
    if speed is not None and speed <= 0:
        raise InputError(f"--speed must be above 0, not {speed:g}")


def make_env(station: Station, speed: float | None, initial_time: float = 0.0):
    if speed is None and station.simulated:
        return simpy.Environment(initial_time)
    return simpy.rt.RealtimeEnvironment(initial_time, factor=1.0 / (speed or 1.0), strict=False)


@contextlib.contextmanager
def ends_run_on_failure(store: Store, run_id: int):
    """From the moment a run is `running` until its engine keeps its own books: a failure
    (a station that cannot connect, a port that does not open) ends the run with its
    reason, never leaves it `running` with no engine behind it."""
    try:
        yield
    except KeyboardInterrupt:
        store.set_status(run_id, "interrupted", "stopped by the operator before the engine "
                                                "started")
        raise
    except LiponError as exc:
        store.set_status(run_id, "failed", f"the run could not start: {exc}")
        raise
    except Exception as exc:
        store.set_status(run_id, "failed", f"the run could not start: internal error: "
                                           f"{exc!r}")
        raise


def plots_dir(data_dir: str | Path, run_id: int) -> Path:
    return Path(data_dir) / "runs" / str(run_id)


def run_to_resume(store: Store, run_id: int, resumable: tuple[str, ...],
                  owned: Ownership):
    """A stored run that may continue, and the station it started with. Its lock is
    taken first: a run whose engine lives is refused before anything is read or changed
    (a `running` run whose lock is free was killed, and may continue)."""
    store.run(run_id)  # an unknown run says so before any lock file is made
    claims.take_run(owned, run_id)
    run = store.run(run_id)
    if run.status not in resumable:
        raise InputError(f"run {run_id} is {run.status}; only an unfinished run can resume")
    return run, load_station(text=run.station_text)
