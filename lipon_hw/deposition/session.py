"""A deposition run's own part of the lifecycle (`engine.lifecycle`): which sample it goes
onto, where a resumed run takes up, and `execute` — the station connected on the run's
clock, the simulated world restored to a checkpoint where the lab keeps one, the engine
(`runner.Engine`) run to its end, the links closed. `start_run` and `resume_run` are the
lifecycle with this kind, for Python callers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lipon_hw.deposition.downtime import Away, time_away
from lipon_hw.deposition.recipe import Recipe
from lipon_hw.deposition.runner import Context, Engine
from lipon_hw.deposition.steps import describe_steps
from lipon_hw.engine import claims, lifecycle
from lipon_hw.engine.lifecycle import Outcome, Resumption, Running, RunResult, Watch
from lipon_hw.errors import InputError
from lipon_hw.kinds import RunOptions
from lipon_hw.station import Station
from lipon_hw.store import Store

RESUMABLE = ("running", "interrupted", "aborted", "failed")


def start_run(sequence: str, data_dir: str | Path, station_path: str | None = None,
              seed: int | None = None, speed: float | None = None,
              notify: Callable[[str], None] | None = None,
              on_sample: Callable[[Context], None] | None = None,
              on_start: Callable[[int, Recipe], None] | None = None,
              sample_id: str | None = None) -> RunResult:
    """Run a recipe. Its layers go onto `sample_id` (added to whatever stack that sample
    has), else onto the recipe's sample — or, when that one already holds a film stack, a
    new sample named after it (`choose_sample`)."""
    from lipon_hw.deposition.kind import KIND

    return lifecycle.start(KIND, sequence, RunOptions(str(data_dir), station_path, seed, speed,
                                                      sample_id=sample_id),
                           Watch(notify, on_start, on_sample))


def resume_run(run_id: int, data_dir: str | Path, speed: float | None = None,
               notify: Callable[[str], None] | None = None,
               on_sample: Callable[[Context], None] | None = None,
               on_start: Callable[[int, Recipe], None] | None = None) -> RunResult:
    """Continue a run from its last checkpoint, with the recipe and station it started with."""
    from lipon_hw.deposition.kind import KIND

    return lifecycle.resume(KIND, run_id, RunOptions(str(data_dir), speed=speed),
                            Watch(notify, on_start, on_sample))


def opening(store: Store, station: Station, recipe: Recipe, options: RunOptions
            ) -> lifecycle.Opening:
    sample, why = choose_sample(store, recipe, options.sample_id)

    def prepare(run_id: int) -> None:
        if sample is not None:
            store.ensure_sample(sample, recipe.sample.substrate if recipe.sample else "")
        store.add_run_steps(run_id, describe_steps(recipe))

    return lifecycle.Opening(claims.deposition(station, recipe, sample), sample,
                             [why] if why else [], prepare)


def resumption(store: Store, owned, run, station: Station, recipe: Recipe) -> Resumption:
    """From the last checkpoint. Where the station's world lives in this process it rolls
    back to that checkpoint (what came after never happened); a world outside went on,
    so the run clock does too: from the last reading stored, on by the wall time the
    host was away (`downtime`), which the interrupted step then accounts for."""
    owned.take(claims.deposition(station, recipe, run.sample_id))
    cp = store.last_checkpoint(run.id)
    t0 = cp.t_s if cp else 0.0
    state = cp.state if cp else {"step_idx": 0, "step_state": {}, "setpoints": {}}
    note = f"resumed from checkpoint at t = {t0:.0f} s"
    if station.in_process:
        store.rewind(run.id, t0)
    else:
        t0 = max(t0, store.last_reading_t(run.id) or 0.0)
        away = time_away(cp.t_s, cp.state, t0) if cp else None
        if away is not None:
            t0 = away.to_t_s
            state = {**state, "away": away.to_dict()}
            note += f"; {away.sentence()}"
    return Resumption(t0, state, note)


def execute(running: Running) -> Outcome:
    """The recipe's steps on the connected station; the engine makes the hardware safe and
    stores the end itself (raising the run's error when it did not complete)."""
    point = running.resumed
    env = running.env(point.t_s if point else 0.0)
    lab = running.lab(env)
    try:
        with lifecycle.ends_run_on_failure(running.store, running.run_id):
            physics = point.state.get("physics", point.state.get("sim")) if point else None
            if lab.physics is not None and physics:  # "sim": a checkpoint of lipon-hw 0.1.0
                lab.physics.restore(physics)
        engine = Engine(running.plan, lab, running.store, running.run_id, env,
                        running.watch.note, running.watch.progress)
        if point is None:
            result = engine.run()
        else:
            result = engine.run(point.state["step_idx"], point.state["step_state"],
                                point.state["setpoints"], resumed=True,
                                away=Away.from_dict(point.state.get("away")))
    finally:
        lab.close()
    return Outcome(result.status, result.message, result.summary, result.t_s)


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
    from lipon_hw.ranges import SAMPLE_ID_PATTERN, SAMPLE_ID_RULE

    if not SAMPLE_ID_PATTERN.fullmatch(value):
        raise InputError(f"--sample {value!r} is not a sample id: {SAMPLE_ID_RULE}")
    return value
