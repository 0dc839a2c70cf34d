"""The deposition run kind (recipes on the sputter and evaporation tools): its schema,
validation, the sample a run goes onto, its execution (`session`), a thickness progress
bar, the summary line and its `--json` fields, exports of the readings and the layer
plots. The lifecycle itself is the engine's (`engine.lifecycle`), the same for every
kind."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lipon_hw.errors import InputError
from lipon_hw.extras import needs
from lipon_hw.kinds import KindBase


class DepositionKind(KindBase):
    name = "deposition"
    document_kind = "deposition"
    export_formats = ("csv", "parquet")
    resumable = ("running", "interrupted", "aborted", "failed")

    def schema(self) -> dict:
        from lipon_hw.deposition.recipe_json import recipe_schema

        return recipe_schema()

    def load(self, sequence: str, station, store, text: str | None = None):
        from lipon_hw.deposition.recipe import load_recipe

        return load_recipe(sequence, station, text=text)

    def describe(self, recipe, sequence: str, station) -> tuple[dict, str]:
        return ({"valid": True, "name": recipe.name, "kind": self.name, "tool": recipe.tool,
                 "steps": [s.describe() for s in recipe.steps]},
                f"{sequence}: valid ({len(recipe.steps)} steps on {recipe.tool} of "
                f"{station.spec.name})")

    def lanes(self, recipe) -> tuple[str, ...]:
        """Its tools: where it starts and every one it is transferred to."""
        return tuple(recipe.tool_roles)

    def opening(self, store, station, recipe, options):
        from lipon_hw.deposition.session import opening

        return opening(store, station, recipe, options)

    def resumption(self, store, owned, run, station, recipe):
        from lipon_hw.deposition.session import resumption

        return resumption(store, owned, run, station, recipe)

    def execute(self, running):
        from lipon_hw.deposition.session import execute

        return execute(running)

    def export(self, store, run_id: int, fmt: str, out: str, force: bool) -> list[Path]:
        from lipon_hw.export import export_run

        if fmt not in self.export_formats:
            raise InputError(f"run {run_id} is a deposition; export it as "
                             f"{' or '.join(self.export_formats)}, not {fmt} (the Battery "
                             "Data Format is for cell tests)")
        return [export_run(store, run_id, fmt, out, force=force)]

    def plots(self, store, run_id: int, out: Path, brief: bool = False) -> list[Path]:
        with needs("plots", "drawing plots"):
            from lipon_hw.deposition.report import write_layer_plots

            return write_layer_plots(store, run_id, out)

    def progress(self, quiet: bool):
        return _Progress(quiet)

    def summary_lines(self, result) -> list[str]:
        summary = result.summary
        layers = summary.get("layers", [])
        made = (", ".join(f"{la['material']} {la['thickness_nm']:.1f}" +
                          (" (partial)" if la["properties"].get("partial") else "")
                          for la in layers)
                if len(layers) > 1 else _fmt(summary.get("thickness_nm")))
        partial = " (partial)" if len(layers) == 1 and layers[0]["properties"].get("partial") \
            else ""
        on = f" on sample {summary['sample_id']}" if summary.get("sample_id") else ""
        rate = (f" at {summary['mean_rate_A_s']:.3f} Å/s" if len(layers) == 1
                and summary.get("mean_rate_A_s") is not None else "")
        return [f"run {result.run_id} {result.status}: {made} nm{partial}{rate}{on}, "
                f"{result.t_s / 3600:.2f} h of process time in {result.wall_s:.1f} s"]

    def json_fields(self, result) -> dict:
        summary = result.summary
        return {"sample_id": summary.get("sample_id"),
                "thickness_nm": _round(summary.get("thickness_nm"), 3),
                "mean_rate_A_s": _round(summary.get("mean_rate_A_s"), 4),
                "layers": [{"material": la["material"],
                            "thickness_nm": round(la["thickness_nm"], 3),
                            "rate_A_s": _round(la["rate_A_s"], 4),
                            "partial": bool(la["properties"].get("partial"))}
                           for la in summary.get("layers", [])]}

    def make_safe(self, run, station, lab, done: list[str], failed: list[str]) -> None:
        """The instruments of the recipe's own tools (the station's others may serve
        another run; all of them when the recipe cannot be read), power first: one round
        of the engine's safe state (`safe_retry`), with no clock to wait on."""
        from lipon_hw.deposition.safety import safe_order
        from lipon_hw.link_health import instrument_links
        from lipon_hw.safe_retry import SafeCall, retry_safe_state

        roles = _run_roles(run, station)
        names = safe_order(roles, [n for n in lab.instruments if n in roles])
        failures = retry_safe_state([SafeCall(n, lab.instruments[n].make_safe,
                                              instrument_links(lab, n)) for n in names],
                                    wait=lambda _s: None, patience_s=0.0)
        done.extend(n for n in names if n not in failures)
        failed.extend(f"{n} ({failures[n]})" for n in names if n in failures)

    def last_stored_t(self, store, run_id: int) -> float:
        return store.last_reading_t(run_id) or 0.0


def _run_roles(run, station) -> dict[str, str]:
    """Instrument → role for the instruments of the run's own tools."""
    from lipon_hw.deposition.recipe import load_recipe
    from lipon_hw.deposition.safety import recipe_roles

    try:
        return recipe_roles(load_recipe(run.sequence_path, station, text=run.sequence_text))
    except Exception:  # noqa: BLE001 - a guard errs on the side of switching off
        return {inst: role for tool in station.spec.tools.values()
                for role, inst in tool.items()}


KIND = DepositionKind()


class _Progress:
    """A progress bar of thickness toward the deposit target, with virtual and wall time."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.run_id = None
        self.step = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False

    def start(self, run_id: int, recipe) -> None:
        from tqdm import tqdm

        from lipon_hw.deposition.steps import describe_steps

        self.run_id = run_id
        self.films = [step.film for step in describe_steps(recipe)]
        self.targets = [(film.target_nm or 0.0) if film else 0.0 for film in self.films]
        self.bar = tqdm(total=round(sum(self.targets) or 1.0, 1), unit="nm", file=sys.stderr,
                        disable=True if self.quiet else None, dynamic_ncols=True,
                        desc=f"run {run_id}",
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} nm "
                                   "[{elapsed} wall]")

    def note(self, message: str) -> None:
        self.step = message.split(":")[-1].strip() if message.startswith("step") else self.step
        if self.quiet:
            return
        if self.bar is not None and not self.bar.disable:
            self.bar.write(message, file=sys.stderr)
        else:
            click.echo(message, err=True)

    def update(self, ctx) -> None:
        if self.bar is None or self.bar.disable:
            return
        self.bar.n = min(sum(self.targets[:ctx.step_idx]) + self._layer_nm(ctx), self.bar.total)
        h, rem = divmod(int(ctx.now), 3600)
        self.bar.set_description_str(f"run {self.run_id} {self.step:<12} "
                                     f"process {h}:{rem // 60:02d}:{rem % 60:02d}", refresh=False)
        self.bar.update(0)  # redraws at most every mininterval

    def _layer_nm(self, ctx) -> float:
        """Thickness of the layer growing now (0 between layers, or behind a shutter), from
        the quantities its step records (as the run stored them at its start)."""
        film = self.films[min(ctx.step_idx, len(self.films) - 1)]
        if film is None or film.thickness is None:
            return 0.0
        if film.shutter is not None and not ctx.latest.get(film.shutter):
            return 0.0
        return max(ctx.latest.get(film.thickness, 0.0), 0.0)

    def close(self, completed: bool = False) -> None:
        """Show where the run ended, then let the summary line have the terminal."""
        if self.bar is not None:
            if completed:
                self.bar.n = self.bar.total
            self.bar.refresh()
            self.bar.close()
            self.bar = None


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _round(value, digits):
    return None if value is None else round(value, digits)
