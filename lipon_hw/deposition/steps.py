"""Deposition steps: the registry of step kinds, the description of a run's steps it
gives, the checks made at every sample, and holding and restoring the process.

A step is a generator function `step(ctx, params, state)` on the engine's clock, in the
module of its tool: `chamber_steps` (pump down, wait, vent, transfer), `sputtering`,
`evaporation`. Each step keeps what it must remember across a crash in `state`
(checkpointed with it), so a resumed step continues rather than starts over: a deposit
that already zeroed the monitor and opened the shutter does not do so again.
`ctx.setpoints` is the process as commanded (valves, flow, RF, shutter); a resume
re-establishes it before the interrupted step continues.

A step kind that lays down a film says so in its registry entry (`lays`): which film, and
the recorded quantities that hold its rate, thickness and shutter. `describe_steps` gives
that for every step of a recipe; the run stores it as it starts (`Store.add_run_steps`),
and whoever reads a run's layers (the layer plots) reads it there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lipon_hw.deposition import chamber_steps, downtime, evaporation, sputtering
from lipon_hw.deposition.recipe import Recipe
from lipon_hw.deposition.sputtering import ramp_rf, wait_for_match
from lipon_hw.store_schema import RunStep, StepFilm


@dataclass(frozen=True)
class StepKind:
    #: the step: a generator function `run(ctx, params, state)`
    run: Callable
    #: for a step that lays down a film: `lays(params, roles of its tool, the film loaded
    #: on that tool or None)` -> the film and the quantities holding its readings
    lays: Callable[..., StepFilm] | None = None
    #: for a step that loads a film into its tool (a source): `loads(params)` -> the film
    #: the tool's later steps lay down, until the sample leaves the tool
    loads: Callable[..., str] | None = None
    #: for a step whose work the hardware may go on with while the host is away: called
    #: on a resume after time away, before the process is restored, as
    #: `resumes(ctx, params, state, away)` (`downtime`)
    resumes: Callable | None = None


STEPS: dict[str, StepKind] = {
    "pump_down": StepKind(chamber_steps.pump_down), "gas": StepKind(sputtering.gas),
    "rf": StepKind(sputtering.rf), "presputter": StepKind(sputtering.presputter),
    "deposit": StepKind(sputtering.deposit, lays=sputtering.deposit_film,
                        resumes=downtime.account_deposit),
    "wait": StepKind(chamber_steps.wait), "vent": StepKind(chamber_steps.vent),
    "transfer": StepKind(chamber_steps.transfer),
    "source": StepKind(evaporation.source, loads=evaporation.source_film),
    "precondition": StepKind(evaporation.precondition),
    "evaporate": StepKind(evaporation.evaporate, lays=evaporation.evaporate_film),
    "source_off": StepKind(evaporation.source_off),
    "calibrate_tooling": StepKind(evaporation.calibrate_tooling)}


def describe_steps(recipe: Recipe) -> list[RunStep]:
    """Every step of the recipe: its kind, its tool, and the film it lays down, if any.
    A film loaded by a source is the one a later step of that tool lays down; it is
    forgotten when the sample moves (the next tool's process starts afresh)."""
    described, loaded, tool = [], None, None
    for idx, step in enumerate(recipe.steps):
        kind = STEPS[step.kind]
        if step.tool != tool:
            loaded, tool = None, step.tool
        film = None
        if kind.lays is not None:
            film = kind.lays(step.params, recipe.tool_roles[step.tool], loaded)
        if kind.loads is not None:
            loaded = kind.loads(step.params)
        described.append(RunStep(idx, step.kind, step.tool, film))
    return described

#: checked at every sample of every run, whatever the step (a tool's own limits)
SAMPLE_CHECKS = (evaporation.check_tool_limits,)


# --- holds and resumes ----------------------------------------------------------------
def safe_hold(ctx) -> None:
    """Stop growing film without losing the process: shutter closed, RF (or source) off."""
    roles = ctx.roles
    if "shutter" in roles:
        ctx.role("shutter").close()
    if "rf_supply" in roles and ctx.setpoints.get("rf_on"):
        ctx.role("rf_supply").set_output(False)
    if "source_supply" in roles and ctx.setpoints.get("source_on"):
        ctx.role("source_supply").set_output(False)


def resume_after_hold(ctx):
    yield from _restore_rf_and_shutter(ctx)


def account_time_away(ctx, away) -> None:
    """On a resume after the host was away (`downtime.Away`; None: a world that rolled
    back), before anything is switched back on: the interrupted step accounts for what
    the hardware did meanwhile."""
    steps = ctx.recipe.steps
    if away is None or ctx.step_idx >= len(steps):
        return
    step = steps[ctx.step_idx]
    if STEPS[step.kind].resumes is not None:
        STEPS[step.kind].resumes(ctx, step.params, ctx.step_state, away)


def restore_process(ctx):
    """Re-establish the commanded process after a crash: valves, gas, RF (ramped), shutter."""
    sp = ctx.setpoints
    roles = ctx.roles
    if "valves" in roles and sp.get("valves"):
        getattr(ctx.role("valves"), sp["valves"])()
    if "gas_flow" in roles and "flow_sccm" in sp:
        ctx.role("gas_flow").set_flow_sccm(sp["flow_sccm"])
    ctx.engine.notify("resume: process setpoints restored")
    yield from _restore_rf_and_shutter(ctx)


def _restore_rf_and_shutter(ctx):
    sp = ctx.setpoints
    roles = ctx.roles
    if "shutter" in roles:
        ctx.role("shutter").close()
    if "rf_supply" in roles and sp.get("rf_on"):
        supply = ctx.role("rf_supply")
        if sp.get("regulation"):
            supply.set_regulation_mode(sp["regulation"])
        target = sp.get("rf_power_W", 0.0)
        level = supply.forward_power_W() if supply.status().output_on else 0.0
        sp["rf_on"] = level > 0
        yield from ramp_rf(ctx, target, 5.0, {"level_W": min(level, target)}, restoring=True)
        yield from wait_for_match(ctx, 10.0, 5.0)
    if "source_supply" in roles and sp.get("source_on"):
        supply = ctx.role("source_supply")
        supply.set_current_A(sp.get("source_A", 0.0))
        supply.set_output(True)
    if "shutter" in roles and sp.get("shutter_open"):
        ctx.role("shutter").open()
