"""Starting and resuming runs: station + recipe + store + clock → Engine.

The clock: simulated stations run in virtual time by default (as fast as the
host allows); `speed` puts the run on a real-time clock at that many times
wall speed. A station with real hardware always runs at speed 1.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from lipon_hw.deposition.recipe import Recipe, load_recipe
from lipon_hw.deposition.runner import Context, Engine
from lipon_hw.deposition.steps import describe_steps
from lipon_hw.engine import claims
from lipon_hw.engine.guard import needs_guard, start_guard
from lipon_hw.engine.lifecycle import (
    RunResult,
    check_speed,
    ends_run_on_failure,
    make_env,
    open_run,
    plots_dir,
    run_seed,
    run_to_resume,
)
from lipon_hw.engine.ownership import Ownership
from lipon_hw.errors import InputError, LiponError
from lipon_hw.station import Station, load_station
from lipon_hw.store import Store

RESUMABLE = ("running", "interrupted", "aborted", "failed")
#: after a failed run, how long closing the store waits for a lock (the engine waited already)
LAST_TRY_S = 0.5


def validate(sequence: str, station_path: str | None = None) -> tuple[Recipe, Station]:
    station = load_station(station_path)
    return load_recipe(sequence, station), station


def start_run(sequence: str, data_dir: str | Path, station_path: str | None = None,
              seed: int | None = None, speed: float | None = None,
              notify: Callable[[str], None] | None = None,
              on_sample: Callable[[Context], None] | None = None,
              on_start: Callable[[int, Recipe], None] | None = None,
              sample_id: str | None = None) -> RunResult:
    """Run a recipe. Its layers go onto `sample_id` (added to whatever stack that sample
    has), else onto the recipe's sample — or, when that one already holds a film stack, a
    new sample named after it (`choose_sample`)."""
    recipe, station = validate(sequence, station_path)
    check_speed(speed)
    store = Store(data_dir)
    owned = Ownership(data_dir)
    try:
        sample, why = choose_sample(store, recipe, sample_id)
        seed = run_seed(station, seed)

        def prepare(run_id: int) -> None:
            store.add_run_steps(run_id, describe_steps(recipe))
            if sample is not None:
                store.ensure_sample(sample, recipe.sample.substrate if recipe.sample else "")
            if why and notify:
                notify(why)
            if on_start:
                on_start(run_id, recipe)

        run_id = open_run(store, owned, station, claims.deposition(station, recipe, sample),
                          "deposition", recipe.name, sequence, recipe.text, seed, sample,
                          prepare)
        with ends_run_on_failure(store, run_id):
            env = make_env(station, speed)
        return _drive(station, store, run_id, env, seed, lambda lab: Engine(
            recipe, lab, store, run_id, env, notify, on_sample).run(), notify)
    except BaseException:
        _last_try_to_close(store)
        raise
    finally:
        owned.release()


def choose_sample(store: Store, recipe: Recipe, sample_id: str | None
                  ) -> tuple[str | None, str | None]:
    """The sample a run deposits on, and a sentence when it is not the one the recipe
    names. An explicit `sample_id` is taken as is (its stack grows by this run's layers).
    Else the recipe's sample, while its stack holds none of the films this recipe lays
    down: so LiPON, then Cu, then Au, then Li recipes naming one sample build one stack.
    A recipe run again finds its film there already and goes on to the next sample of
    the series, `<id>-2`, `<id>-3`, … (the first without that film): never a second
    layer of the same film on one sample by accident."""
    if sample_id is not None:
        return check_sample_id(sample_id), None
    if recipe.sample is None:
        return None, None
    base, films = recipe.sample.id, recipe.deposited_films
    candidate, k, holders = base, 1, []
    while True:
        stack = store.film_stack(candidate)
        if not films & {layer.material for layer in stack}:
            break
        holders.append(candidate)
        k += 1
        candidate = f"{base}-{k}"
    if candidate == base:
        return base, None
    if len(candidate) > 64:
        raise InputError(f"sample {base} already holds {', '.join(sorted(films))} and its id "
                         "is too long to number a new one; name the sample with --sample")
    have = ", ".join(holders)
    return candidate, (f"{have} already hold{'s' * (len(holders) == 1)} "
                       f"{', '.join(sorted(films))}; this run deposits on sample {candidate} "
                       f"(name the sample with --sample to choose)")


def check_sample_id(value: str) -> str:
    from lipon_hw.engine.ranges import SAMPLE_ID_PATTERN, SAMPLE_ID_RULE

    if not SAMPLE_ID_PATTERN.fullmatch(value):
        raise InputError(f"--sample {value!r} is not a sample id: {SAMPLE_ID_RULE}")
    return value


def _drive(station: Station, store: Store, run_id: int, env, seed, run, notify,
           prepare=None) -> RunResult:
    """Connect the station under a guard process (it makes the instruments safe should this
    process die without doing it, kill -9), run the engine, close links, plots and store."""
    guard = None
    with ends_run_on_failure(store, run_id):
        guard = start_guard(store.data_dir, run_id) if needs_guard(station) else None
    try:
        with ends_run_on_failure(store, run_id):
            lab = station.connect(lambda: env.now, seed=seed)
            try:
                if prepare is not None:
                    prepare(lab)
            except BaseException:
                lab.close()
                raise
        try:
            result = run(lab)
        except BaseException:
            _close(lab, store, run_id, notify, failed=True)
            raise
    finally:
        if guard is not None:
            guard.release()
    plots = _close(lab, store, run_id, notify, failed=False)
    if isinstance(result, RunResult):
        result.plots = [str(p) for p in plots]
    return result


def _last_try_to_close(store: Store) -> None:
    with contextlib.suppress(LiponError, sqlite3.Error):
        store.close(wait_s=LAST_TRY_S)


def _close(lab, store: Store, run_id: int, notify, failed: bool) -> list[Path]:
    """Links, plots, store; returns the plots drawn. After a failed run (whose error
    already says what the store took) a store that still refuses writes gets one short
    last try, never a 30 s wait, and cannot replace that error."""
    lab.close()
    plots = write_plots(store, run_id, notify)
    if not failed:
        store.close()
        return plots
    _last_try_to_close(store)
    return plots


def write_plots(store: Store, run_id: int, notify: Callable[[str], None] | None = None
                ) -> list[Path]:
    """Rate and thickness against time for each layer, beside the database. A plot that
    cannot be drawn is reported, never allowed to change how the run ended."""
    from lipon_hw.deposition.report import write_layer_plots

    if store.unwritable_since is not None:
        if notify:
            notify(f"warning: plots of run {run_id} were not drawn: {store.unavailable()}")
        return []
    try:
        return write_layer_plots(store, run_id, plots_dir(store.data_dir, run_id))
    except Exception as exc:  # noqa: BLE001 - plots are a by-product of the run
        if notify:
            notify(f"warning: plots of run {run_id} were not written ({exc})")
        return []


def resume_run(run_id: int, data_dir: str | Path, speed: float | None = None,
               notify: Callable[[str], None] | None = None,
               on_sample: Callable[[Context], None] | None = None,
               on_start: Callable[[int, Recipe], None] | None = None) -> RunResult:
    """Continue a run from its last checkpoint, with the recipe and station it started with."""
    store = Store(data_dir)
    owned = Ownership(data_dir)
    try:
        run, station = run_to_resume(store, run_id, RESUMABLE, owned)
        recipe = load_recipe(run.sequence_path, station, text=run.sequence_text)
        owned.take(claims.deposition(station, recipe, run.sample_id))
        cp = store.last_checkpoint(run_id)
        t0 = cp.t_s if cp else 0.0
        if station.simulated:
            # the simulated world rolls back to the checkpoint: what came after never happened
            store.rewind(run_id, t0)
        else:
            t0 = max(t0, store.last_reading_t(run_id) or 0.0)
        store.set_status(run_id, "running", f"resumed from t = {t0:.0f} s")
        with ends_run_on_failure(store, run_id):
            store.add_alarm(run_id, t0, "info", "engine",
                            f"resumed from checkpoint at t = {t0:.0f} s")
            if on_start:
                on_start(run_id, recipe)
            env = make_env(station, speed, t0)
        state = cp.state if cp else {"step_idx": 0, "step_state": {}, "setpoints": {}}

        def restore(lab) -> None:
            physics = state.get("physics", state.get("sim"))  # "sim": lipon-hw 0.1.0
            if lab.physics is not None and physics:
                lab.physics.restore(physics)

        return _drive(station, store, run_id, env, run.seed, lambda lab: Engine(
            recipe, lab, store, run_id, env, notify, on_sample).run(
            state["step_idx"], state["step_state"], state["setpoints"], resumed=True),
            notify, prepare=restore)
    except BaseException:
        _last_try_to_close(store)
        raise
    finally:
        owned.release()
