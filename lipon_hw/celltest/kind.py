"""The cell-test run kind (`kind: cycling` protocols on potentiostat channels):
validation, running and resuming with a bar per channel, the summary and `--json`,
exports (Battery Data Format, CSV, Parquet) and the per-channel plots. The lifecycle
itself is the engine's (`engine.cell_session`); this is what the command line shows."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from lipon_hw.errors import InputError, RunAborted
from lipon_hw.kinds import RunOptions


class CellTestKind:
    name = "cycling"
    document_kind = "cycling"
    export_formats = ("csv", "parquet", "bdf", "bdf-parquet")

    def validate(self, sequence: str, station_path: str | None, store
                 ) -> tuple[dict, str]:
        from lipon_hw.celltest.session import load
        from lipon_hw.station import load_station

        station = load_station(station_path)
        proto = load(sequence, station, store)
        channels = [p.channel for p in proto.channels]
        return ({"valid": True, "name": proto.name, "kind": self.name,
                 "potentiostat": proto.potentiostat, "channels": channels},
                f"{sequence}: valid (cell test on {len(channels)} channel"
                f"{'s' * (len(channels) > 1)} of {proto.potentiostat}, {station.spec.name})")

    def run(self, sequence: str, options: RunOptions) -> None:
        from lipon_hw.celltest.session import start_cycling

        o = options
        if o.sample_id is not None:
            raise InputError(f"--sample is for recipes; {sequence} is a cell-test protocol, "
                             "which names each channel's sample itself (sample: per channel)")
        with ChannelProgress(quiet=o.as_json) as progress:
            result = start_cycling(sequence, o.data_dir, o.station_path, seed=o.seed,
                                   speed=o.speed, notify=progress.note, on_start=progress.start,
                                   on_cycle=progress.cycle, workers=o.workers)
        print_summary(result, o.as_json)

    def resume(self, run_id: int, options: RunOptions) -> None:
        from lipon_hw.celltest.session import resume_cycling

        o = options
        with ChannelProgress(quiet=o.as_json) as progress:
            result = resume_cycling(run_id, o.data_dir, speed=o.speed, notify=progress.note,
                                    on_start=progress.start, on_cycle=progress.cycle,
                                    workers=o.workers)
        print_summary(result, o.as_json)

    def export(self, store, run_id: int, fmt: str, out: str, force: bool) -> list[Path]:
        from lipon_hw.celltest.results import export_cell_run

        return export_cell_run(store, run_id, fmt, out, force=force)

    def plots(self, store, run_id: int, out: Path) -> list[Path]:
        from lipon_hw.celltest.results import write_cell_plots

        return write_cell_plots(store, run_id, out)

    def make_safe(self, run, station, lab, done: list[str], failed: list[str]) -> None:
        """The protocol's channels, each stopped with its cell off (the potentiostat's
        other channels may test another run's cells: they are left alone)."""
        from lipon_hw.celltest.session import _disconnect, load

        proto = load(run.sequence_path, station, None, text=run.sequence_text)
        channels = [plan.channel for plan in proto.channels]
        failures = _disconnect(lab.instruments[proto.potentiostat], channels)
        failed.extend(failures)
        if not failures:
            done.append(f"{proto.potentiostat} channels {', '.join(map(str, channels))}")

    def last_stored_t(self, store, run_id: int) -> float:
        return max([store.last_cell_sample_t(run_id, row.channel)
                    for row in store.channels(run_id)], default=0.0)


def expected_cycles(plan) -> int | None:
    """Cycles the protocol will run if nothing ends it early: every loop closes a cycle
    per pass (loops one after the other), at most the termination's count."""
    prog = plan.program
    passes = sum(s.loop.times for s in prog.steps if s.loop is not None) or None
    limits = [n for n in (passes, prog.termination.cycles) if n]
    return min(limits) if limits else None


class ChannelProgress:
    """One bar per channel, advanced at each new cycle."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bars: dict[int, object] = {}
        self.run_id = None
        self._drawn = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self, run_id: int, proto) -> None:
        from tqdm import tqdm

        self.run_id = run_id
        if self.quiet or not sys.stderr.isatty():
            return
        for pos, plan in enumerate(proto.channels):
            self.bars[plan.channel] = tqdm(
                total=expected_cycles(plan), unit="cycle", file=sys.stderr, position=pos,
                desc=f"run {run_id} ch {plan.channel:>2}", dynamic_ncols=True, leave=False,
                mininterval=0.5)

    def cycle(self, channel: int, completed: int) -> None:
        """A channel's completed cycles; the bars are redrawn at most twice a second."""
        bar = self.bars.get(channel)
        if bar is None or bar.n == completed:
            return
        bar.n = completed
        now = time.monotonic()
        if now - self._drawn >= 0.5:
            self._drawn = now
            for each in self.bars.values():
                each.refresh()

    def note(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}


def summary_json(result) -> dict:
    channels = result.summary.get("channels", [])
    out = {"run_id": result.run_id, "status": result.status, "message": result.message,
           "duration_s": round(result.t_s, 3), "wall_s": round(result.wall_s, 3)}
    out.update({k: v for k, v in result.summary.items() if k not in ("channels", "virtual_s")})
    out["channels"] = [{k: _round(v) for k, v in ch.items()} for ch in channels]
    return out


def print_summary(result, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary_json(result)))
    else:
        for ch in result.summary.get("channels", []):
            ce = ch.get("mean_coulombic_efficiency")
            click.echo(f"  ch {ch['channel']:>2} {ch['status']:<10} {ch['cycles']:>4} cycles"
                       f"  last discharge {_fmt(ch.get('last_discharge_uAh'), 4)} µAh"
                       f"  mean CE {_fmt(ce * 100 if ce else None, 3)} %  {ch['message']}")
        for key in ("ionic_conductivity_S_cm", "electronic_conductivity_S_cm"):
            if result.summary.get(key) is not None:
                u = result.summary.get(key.replace("_S_cm", "_rel_uncertainty"))
                click.echo(f"  {key} = {result.summary[key]:.3g}"
                           + (f" (± {u:.1%}, 1 s.d.)" if u else ""))
        if result.summary.get("ionic_conductivity_note"):
            click.echo("  ionic conductivity not reported: "
                       f"{result.summary['ionic_conductivity_note']}")
        click.echo(f"run {result.run_id} {result.status}: {result.message}; "
                   f"{result.t_s / 3600:.1f} h of testing in {result.wall_s:.1f} s")
    if result.status != "completed":
        raise RunAborted(result.message)


def _round(v):
    return float(f"{v:.7g}") if isinstance(v, float) else v


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


KIND = CellTestKind()
