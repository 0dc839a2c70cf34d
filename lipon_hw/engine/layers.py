"""Recording a finished layer in the sample's film stack (its genealogy across tools)."""

from __future__ import annotations


def record_layer(ctx, material: str, thickness_nm: float, rate_A_s: float | None,
                 **properties) -> None:
    sample = ctx.recipe.sample
    if sample is None:
        return
    props = {"process": {k: v for k, v in ctx.setpoints.items() if k != "shutter_open"},
             **properties}
    if ctx.engine.lab.sim is not None:
        stack = ctx.engine.lab.sim.world.film_stack()
        if stack and stack[-1]["material"] == material:
            props["sim_truth"] = stack[-1]
    ctx.store.ensure_sample(sample.id, sample.substrate)
    ctx.store.add_layer(sample.id, ctx.run_id, material, thickness_nm, rate_A_s, ctx.tool,
                        ctx.now, props)
