"""The cell-test run kind (`kind: cycling` protocols on potentiostat channels): its schema,
validation, the channels' execution (`session`), a bar per channel, the summary and its
`--json` fields, exports (Battery Data Format, CSV, Parquet) and the per-channel plots.
The lifecycle itself is the engine's (`engine.lifecycle`), the same for every kind."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from lipon_hw.extras import needs
from lipon_hw.kinds import KindBase


class CellTestKind(KindBase):
    name = "cycling"
    document_kind = "cycling"
    export_formats = ("csv", "parquet", "bdf", "bdf-parquet")
    resumable = ("running", "interrupted", "failed", "aborted")
    spreads_on_cluster = True  # its channels, in shards (`lipon_hw.cluster.campaign`)

    def schema(self) -> dict:
        from lipon_hw.celltest.protocol_json import protocol_schema

        return protocol_schema()

    def load(self, sequence: str, station, store, text: str | None = None,
             resuming: int | None = None):
        from lipon_hw.celltest.plan import load

        return load(sequence, station, store, text=text, resuming=resuming)

    def describe(self, proto, sequence: str, station) -> tuple[dict, str]:
        channels = [p.channel for p in proto.channels]
        samples = {p.channel: p.sample for p in proto.channels if p.sample is not None}
        unpicked = sorted({p.screening.sheet for p in proto.channels
                           if p.screening is not None and p.sample is None})
        note = (f"; its cells come from the screening of {', '.join(unpicked)}, picked when "
                "it runs (--data picks them now)") if unpicked else ""
        return ({"valid": True, "name": proto.name, "kind": self.name,
                 "potentiostat": proto.potentiostat, "channels": channels,
                 "samples": {str(k): v for k, v in samples.items()},
                 "unpicked_from": unpicked},
                f"{sequence}: valid (cell test on {len(channels)} channel"
                f"{'s' * (len(channels) > 1)} of {proto.potentiostat}, {station.spec.name})"
                + note)

    def lanes(self, proto) -> tuple[str, ...]:
        """Its potentiostat: one cell test at a time on each."""
        return (proto.potentiostat,)

    def opening(self, store, station, proto, options):
        from lipon_hw.celltest.session import opening

        return opening(store, station, proto, options, proto.path)

    def resumption(self, store, owned, run, station, proto):
        from lipon_hw.celltest.session import resumption

        return resumption(store, owned, run, station, proto)

    def execute(self, running):
        from lipon_hw.celltest.session import execute

        return execute(running)

    def export(self, store, run_id: int, fmt: str, out: str, force: bool) -> list[Path]:
        from lipon_hw.celltest.results import export_cell_run

        return export_cell_run(store, run_id, fmt, out, force=force)

    def plots(self, store, run_id: int, out: Path, brief: bool = False) -> list[Path]:
        """Every channel's plots; at the end of a run (`brief`) the first channel's only
        (`lipon-hw report RUN` draws them all)."""
        with needs("plots", "drawing plots"):
            from lipon_hw.celltest.results import write_cell_plots

            return write_cell_plots(store, run_id, out, max_channels=1 if brief else None)

    def progress(self, quiet: bool):
        return ChannelProgress(quiet)

    def summary_lines(self, result) -> list[str]:
        lines = []
        for ch in result.summary.get("channels", []):
            ce = ch.get("mean_coulombic_efficiency")
            lines.append(f"  ch {ch['channel']:>2} {ch['status']:<10} {ch['cycles']:>4} cycles"
                         f"  last discharge {_fmt(ch.get('last_discharge_uAh'), 4)} µAh"
                         f"  mean CE {_fmt(ce * 100 if ce else None, 3)} %  {ch['message']}")
        for key in ("ionic_conductivity_S_cm", "electronic_conductivity_S_cm"):
            if result.summary.get(key) is not None:
                u = result.summary.get(key.replace("_S_cm", "_rel_uncertainty"))
                lines.append(f"  {key} = {result.summary[key]:.3g}"
                             + (f" (± {u:.1%}, 1 s.d.)" if u else ""))
        if result.summary.get("ionic_conductivity_note"):
            lines.append("  ionic conductivity not reported: "
                         f"{result.summary['ionic_conductivity_note']}")
        lines.append(f"run {result.run_id} {result.status}: {result.message}; "
                     f"{result.t_s / 3600:.1f} h of testing in {result.wall_s:.1f} s")
        return lines

    def json_fields(self, result) -> dict:
        out = {k: v for k, v in result.summary.items() if k not in ("channels", "virtual_s")}
        out["channels"] = [{k: _round(v) for k, v in ch.items()}
                           for ch in result.summary.get("channels", [])]
        return out

    def make_safe(self, run, station, lab, done: list[str], failed: list[str]) -> None:
        """The protocol's channels, each stopped with its cell off (the potentiostat's
        other channels may test another run's cells: they are left alone)."""
        from lipon_hw.celltest.groups import disconnect
        from lipon_hw.celltest.protocol import load_protocol

        # read back for its channels only: cells picked from a screening stay unpicked
        proto = load_protocol(run.sequence_path, station, text=run.sequence_text)
        channels = [plan.channel for plan in proto.channels]
        failures = disconnect(lab, proto.potentiostat, channels)
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

    def update(self, channel: int, completed: int) -> None:
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

    def close(self, completed: bool = False) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}


def _round(v):
    return float(f"{v:.7g}") if isinstance(v, float) else v


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


KIND = CellTestKind()
