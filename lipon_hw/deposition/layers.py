"""A sample's film stack (its genealogy across tools and runs): the layers a run deposits.

A step opens a layer when its shutter opens on a film (`layer_opened`) and records it when
the shutter closes on the finished film (`record_layer`). A run that ends with a layer
still open (aborted, failed, interrupted) records it as partial, with the thickness the
monitor last read (`record_partial_layer`); a resumed run that finishes that layer
replaces the partial one (one layer per run and step).

The run's sample is the one its row names (`runs.sample_id`), chosen when it started.
"""

from __future__ import annotations


def layer_opened(ctx, film: str, state: dict, reading: str) -> None:
    """The shutter opened on `film`; `reading` names the quantity holding its thickness."""
    state["layer"] = {"film": film, "t_open": ctx.now, "reading": reading}


def record_layer(ctx, material: str, thickness_nm: float, rate_A_s: float | None,
                 **properties) -> None:
    ctx.step_state.pop("layer", None)
    _add(ctx, material, thickness_nm, rate_A_s, properties)


def record_partial_layer(ctx, status: str, message: str) -> None:
    """The open layer of a run that ended before closing it, marked partial; nothing when
    no layer is open or its thickness was never read."""
    layer = ctx.step_state.pop("layer", None)
    if layer is None:
        return
    thickness = ctx.latest.get(layer["reading"])
    if thickness is None:
        return
    seconds = ctx.now - layer["t_open"]
    _add(ctx, layer["film"], thickness, thickness * 10 / seconds if seconds > 0 else None,
         {"partial": True, "ended": f"{status}: {message}"})


def _add(ctx, material: str, thickness_nm: float, rate_A_s: float | None,
         properties: dict) -> None:
    sample = ctx.sample_id
    if sample is None:
        return
    props = {"step": ctx.step_idx,
             "process": {k: v for k, v in ctx.setpoints.items() if k != "shutter_open"},
             **properties}
    recipe_sample = ctx.recipe.sample
    ctx.store.ensure_sample(sample, recipe_sample.substrate if recipe_sample else "")
    ctx.store.add_layer(sample, ctx.run_id, material, thickness_nm, rate_A_s, ctx.tool,
                        ctx.now, props)
    truth = ctx.engine.lab.film_truth  # a simulated lab keeps the true film, apart
    if truth is not None:
        truth.record_film(ctx.store, ctx.run_id, sample, ctx.step_idx, material)
