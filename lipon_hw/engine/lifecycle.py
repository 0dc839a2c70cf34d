"""The run lifecycle, written once for every kind of run.

`start(kind, sequence, options)` and `resume(kind, run_id, options)` do what every run
does, in this order, whatever its kind:

1. the station loaded, the sequence read and checked by the kind (`kind.load`), the
   clock's speed checked — before anything is locked or stored;
2. the run's resources locked, then its row written `running` with the station and the
   sequence as they were (a refusal leaves nothing to undo), its own lock taken, the
   kind's rows added (`Opening.prepare`); a resume instead takes the run's lock first,
   lets the kind find where it takes up (`kind.resumption`: its resources, its rewind)
   and records that it resumed;
3. a guard process started where an instrument is outside this process, so a killed
   engine still leaves the hardware safe;
4. the kind's `execute`: connect, run, make safe on every exit, store how it ended (only
   the kind knows when its hardware is safe, and it stores nothing before that);
5. the plots drawn (never allowed to change how the run ended), how the run ended told
   (`trouble`: its log file and the station's notification hooks), the store closed,
   and a `RunResult` with the run's alarms.

A failure from step 2 on ends the run with its reason (`ends_run_on_failure`): no run is
ever left `running` with no engine behind it. What the operator sees — progress, the
summary line, `--json` — is the console's (`lipon_hw.console`), also written once. From
the moment the run exists to its end, `engine.trouble` hears its notes and each alarm as
the store is given it (`Store.on_alarm`), and passes them on: to the watch, to the run's
log file (`<data>/runs/<id>/run.log`) and to the station's notification hooks.

The clock: a station whose instruments all live in this process runs in virtual time by
default (as fast as the host allows); `speed` puts a run on a real-time clock at that
many times wall speed. A station with anything outside runs at speed 1 unless told.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import operator
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import simpy

from lipon_hw import interrupts
from lipon_hw.engine import claims, plot_helper
from lipon_hw.engine.guard import needs_guard, start_guard
from lipon_hw.engine.ownership import Ownership
from lipon_hw.engine.trouble import RunTrouble
from lipon_hw.errors import InputError, InstrumentError, LiponError
from lipon_hw.station import Station, load_station
from lipon_hw.store import Store

#: after a failed run, how long closing the store waits for a lock (the engine waited already)
LAST_TRY_S = 0.5


@dataclass
class RunResult:
    run_id: int
    status: str
    message: str
    t_s: float
    wall_s: float
    summary: dict = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)  # drawn after the run, beside the store
    alarms: list = field(default_factory=list)  # the run's, `store_schema.Alarm`, in order


@dataclass
class Outcome:
    """How a kind's `execute` ended its run (status and summary already stored)."""

    status: str
    message: str
    summary: dict
    t_s: float  # the run clock at the end


@dataclass
class Watch:
    """Who watches a run: `note` gets sentences for the operator, `start` the run id and
    the plan once the run exists, `progress` the kind's own progress calls (a deposition's
    sample context; a cell test's channel and completed cycles), `alarm` each alarm
    (`store_schema.Alarm`) as it is stored — without it, alarms come to `note` as
    `alarm: ...` sentences."""

    note: Callable[[str], None] | None = None
    start: Callable[[int, Any], None] | None = None
    progress: Callable[..., None] | None = None
    alarm: Callable[[Any], None] | None = None

    def say(self, message: str) -> None:
        if self.note is not None:
            self.note(message)


@dataclass
class Opening:
    """What a kind says about a new run before it exists: what it locks, the sample it
    runs on, sentences for the operator, and the rows it adds once the run exists."""

    resources: list
    sample_id: str | None = None
    notes: list[str] = field(default_factory=list)
    prepare: Callable[[int], None] | None = None


@dataclass
class Resumption:
    """Where a resumed run takes up: the run clock, the kind's own state (a checkpoint, a
    channel's step), and the sentence stored as the resume's alarm. `finished`: nothing
    was left to run (killed after its work ended, before its status was written)."""

    t_s: float
    state: Any
    note: str
    finished: bool = False


@dataclass
class Running:
    """One run as `execute` gets it: opened (row, locks, guard) by the lifecycle."""

    plan: Any
    station: Station
    store: Store
    run_id: int
    seed: int | None
    speed: float | None
    workers: int | None
    watch: Watch
    resumed: Resumption | None = None
    cluster: Any = None  # `RunOptions.cluster`
    plot_helper: bool = False  # `RunOptions.plot_helper`

    @property
    def realtime(self) -> bool:
        return self.speed is not None or not self.station.in_process

    def env(self, initial_time: float = 0.0):
        return make_env(self.station, self.speed, initial_time)

    def lab(self, env):
        """The station connected on `env`'s clock; a failure ends the run with its reason."""
        with ends_run_on_failure(self.store, self.run_id):
            return self.station.connect(env_clock(env), seed=self.seed)


class Interrupted(LiponError):
    """Ctrl-C or SIGTERM."""

    exit_code = 130


#: what a run stopped by a Ctrl-C or SIGTERM says
OPERATOR_STOP = "stopped by the operator (Ctrl-C / SIGTERM)"


def unsafe_sentence(failures: list[str]) -> str:
    """What was not made safe, in the one wording of every kind of run (its message
    starts with it when nothing else stopped the run)."""
    return "the hardware was NOT all made safe: " + "; ".join(failures)


def not_safe_error(sentence: str, during: BaseException | None) -> LiponError:
    """The error of a run whose safe state left something unsafe, `sentence` saying so,
    whatever else stopped the run (`during`): in that error's class where it matters
    (Interrupted after a Ctrl-C) and with its exit code, else an InstrumentError."""
    if isinstance(during, KeyboardInterrupt | Interrupted):
        return Interrupted(sentence)
    error = InstrumentError(sentence)
    if isinstance(during, LiponError):
        error.exit_code = during.exit_code
    return error


def load_to_resume(kind, run, station, store):
    """The run's stored sequence read back to resume it; a kind's `load` that takes
    `resuming` (`kinds.RunKind.load`) is told which run it is."""
    extra = {"resuming": run.id} if "resuming" in inspect.signature(kind.load).parameters \
        else {}
    return kind.load(run.sequence_path, station, store, text=run.sequence_text, **extra)


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


# --- the lifecycle ----------------------------------------------------------------------
def start(kind, sequence: str, options, watch: Watch | None = None) -> RunResult:
    """Run `sequence` as a new run of `kind` (see the module docstring for the order)."""
    watch = watch or Watch()
    station = load_station(options.station_path)
    store = Store(options.data_dir)
    trouble = RunTrouble(watch, store)
    owned = Ownership(options.data_dir)
    with _released(store, owned, trouble):
        plan = kind.load(sequence, station, store)
        check_speed(options.speed)
        opening = kind.opening(store, station, plan, options)
        seed = run_seed(station, options.seed)

        def prepare(run_id: int) -> None:
            trouble.open(run_id, station, plan.name, resumed=False)
            if opening.prepare is not None:
                opening.prepare(run_id)
            for note in opening.notes:
                trouble.watch.say(note)
            if watch.start is not None:
                watch.start(run_id, plan)

        run_id = open_run(store, owned, station, opening.resources, kind.name, plan.name,
                          sequence, plan.text, seed, opening.sample_id, prepare)
        return _drive(kind, Running(plan, station, store, run_id, seed, options.speed,
                                    options.workers, trouble.watch,
                                    cluster=options.cluster,
                                    plot_helper=options.plot_helper), trouble)


def resume(kind, run_id: int, options, watch: Watch | None = None) -> RunResult:
    """Continue an unfinished run of `kind` where the kind says it can take up, with the
    sequence and the station it started with."""
    watch = watch or Watch()
    store = Store(options.data_dir)
    trouble = RunTrouble(watch, store)
    owned = Ownership(options.data_dir)
    with _released(store, owned, trouble):
        run, station = run_to_resume(store, run_id, kind.resumable, owned)
        plan = load_to_resume(kind, run, station, store)
        point = kind.resumption(store, owned, run, station, plan)
        trouble.open(run_id, station, run.name, resumed=True)
        if not point.finished:
            store.requests.take(run_id)  # a resume runs: a pause or abort asked before is done
            store.set_status(run_id, "running", f"resumed from t = {point.t_s:.0f} s")
            with ends_run_on_failure(store, run_id):
                store.add_alarm(run_id, point.t_s, "info", "engine", point.note,
                                reaction="resume")
                if watch.start is not None:
                    watch.start(run_id, plan)
        return _drive(kind, Running(plan, station, store, run_id, run.seed, options.speed,
                                    options.workers, trouble.watch, point,
                                    options.cluster, options.plot_helper), trouble)


@contextlib.contextmanager
def _released(store: Store, owned: Ownership, trouble: RunTrouble):
    """Around a start or a resume: its locks let go whatever happens; on a failure the end
    told (log, hooks) and the store given one short last try to close. While it runs,
    the store's writes check that the claims in a shared store are still held."""
    store.after_write.append(owned.keep)
    try:
        yield
    except BaseException as exc:
        trouble.end_after_failure(exc)
        _last_try_to_close(store)
        raise
    finally:
        owned.release()


def _drive(kind, running: Running, trouble: RunTrouble) -> RunResult:
    """Guard, execute, plots, the end told, store closed: the part of every run after its
    row exists. The end is told (log, notification hooks) only once the kind has made the
    hardware safe and stored how the run ended."""
    store, run_id = running.store, running.run_id
    wall0 = time.monotonic()
    guard = None
    with ends_run_on_failure(store, run_id):
        guard = start_guard(store.data_dir, run_id) if needs_guard(running.station) else None
    with plot_helper.later(kind.name, store, running.plot_helper) as helper:
        try:
            try:
                with interrupts.deferring_run():  # never inside a simulated instrument
                    outcome = kind.execute(running)
            finally:  # the run ended under this process's control: the guard is not needed
                if guard is not None:
                    guard.release()
        except BaseException as exc:
            _never_left_running(store, run_id, exc)
            draw_plots(kind, store, run_id, running.watch, helper)
            alarms = trouble.end_after_failure(exc)
            with contextlib.suppress(AttributeError):
                exc.alarms = alarms  # what the console may list of the run's alarms
            raise
        plots = draw_plots(kind, store, run_id, running.watch, helper)
        alarms = run_alarms(store, run_id)  # while the helper exits
        trouble.end(outcome.status, outcome.message, alarms)
        store.close()
    return RunResult(run_id, outcome.status, outcome.message, outcome.t_s,
                     time.monotonic() - wall0, outcome.summary, [str(p) for p in plots],
                     alarms)


def run_alarms(store: Store, run_id: int) -> list:
    """The run's alarms, or none when the store cannot answer (its error is the run's)."""
    with contextlib.suppress(LiponError):
        return store.alarms(run_id)
    return []


def _never_left_running(store: Store, run_id: int, exc: BaseException) -> None:
    """A kind's `execute` stores how its run ended; should one raise without doing so, the
    run is ended here with its error — never left `running` with no engine behind it."""
    with contextlib.suppress(LiponError):
        if store.run(run_id).status != "running":
            return
        if isinstance(exc, KeyboardInterrupt | Interrupted):
            store.set_status(run_id, "interrupted", OPERATOR_STOP, wait_s=LAST_TRY_S)
        else:
            why = str(exc) if isinstance(exc, LiponError) else f"internal error: {exc!r}"
            store.set_status(run_id, "failed", why, wait_s=LAST_TRY_S)


def draw_plots(kind, store: Store, run_id: int, watch: Watch,
               helper: plot_helper.PlotHelper | None = None) -> list[Path]:
    """The kind's plots of a run that just ended, beside the database: by the run's
    plot helper if it has one ready, else here. A plot that cannot be drawn is reported,
    never allowed to change how the run ended."""
    if store.unwritable_since is not None:
        watch.say(f"warning: plots of run {run_id} were not drawn: {store.unavailable()}")
        return []
    out = plots_dir(store.data_dir, run_id)
    try:
        drawn = helper.draw(store, run_id, out) if helper is not None else None
        return drawn if drawn is not None else kind.plots(store, run_id, out, brief=True)
    except Exception as exc:  # noqa: BLE001 - plots are a by-product of the run
        watch.say(f"warning: plots of run {run_id} were not written ({exc})")
        return []


def _last_try_to_close(store: Store) -> None:
    """After a failed run (whose error already says what the store took) a store that still
    refuses writes gets one short last try, never a 30 s wait, and cannot replace that
    error."""
    with contextlib.suppress(LiponError):
        store.close(wait_s=LAST_TRY_S)


# --- the parts ----------------------------------------------------------------------------
def open_run(store: Store, owned: Ownership, station: Station, resources, kind: str,
             name: str, sequence, text: str, seed: int | None, sample_id: str | None,
             prepare) -> int:
    """A new run: its resources locked before its row exists (a refusal leaves nothing
    to undo), its row written `running` with the station and the sequence as they were,
    its own lock taken, then `prepare(run_id)` (the kind's rows, the caller's on_start);
    a failure from there on ends the run with its reason (`ends_run_on_failure`)."""
    owned.take(resources)
    run_id = store.create_run(name, kind, str(sequence), text, station.text, seed, sample_id)
    store.take_over(run_id, new=True)
    with ends_run_on_failure(store, run_id):
        claims.take_run(owned, run_id)
        prepare(run_id)
    return run_id


def run_seed(station: Station, seed: int | None) -> int | None:
    """The seed a run records: the one asked for, else the station's own."""
    return seed if seed is not None else station.default_seed


def check_speed(speed: float | None) -> None:
    if speed is not None and speed <= 0:
        raise InputError(f"--speed must be above 0, not {speed:g}")


def env_clock(env) -> Callable[[], float]:
    """`env.now` as a function of no arguments, for the station's clock. The lab reads it at
    every touch of the simulated world (tens of times a sample), so a simpy environment's
    time is read without a Python frame (its `now` is the attribute `_now`); any other
    environment through its property."""
    if type(env).now is simpy.Environment.now and "_now" in vars(env):
        return functools.partial(operator.attrgetter("_now"), env)
    return lambda: env.now


def make_env(station: Station, speed: float | None, initial_time: float = 0.0):
    if speed is None and station.in_process:
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
    (a `running` run whose lock is free was killed, and may continue). Then this engine
    takes it over (`Store.take_over`) before anything says where to go on from."""
    store.run(run_id)  # an unknown run says so before any lock file is made
    claims.take_run(owned, run_id)
    run = store.run(run_id)
    if run.status not in resumable:
        raise InputError(f"run {run_id} is {run.status}; only an unfinished run can resume")
    store.take_over(run_id)
    return run, load_station(text=run.station_text)
