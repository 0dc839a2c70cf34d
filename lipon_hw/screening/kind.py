"""The sheet-screening run kind (`kind: screening` recipes on a prober): its schema,
validation, the prober's stepping (`session`), the summary and its `--json` fields,
exports (every cell's results as CSV or Parquet, a wafer map as STDF) and plots (a heat
map per metric, the bin map). The lifecycle itself is the engine's, as for every kind."""

from __future__ import annotations

import sys
from pathlib import Path

from lipon_hw.kinds import KindBase, Notes


class ScreeningKind(KindBase):
    name = "screening"
    document_kind = "screening"
    export_formats = ("csv", "parquet", "stdf")
    resumable = ("running", "interrupted", "failed", "aborted")

    def schema(self) -> dict:
        from lipon_hw.screening.recipe import ScreeningModel

        return ScreeningModel.model_json_schema()

    def load(self, sequence: str, station, store, text: str | None = None):
        from lipon_hw.screening.recipe import load_screening

        return load_screening(sequence, station, text=text)

    def describe(self, plan, sequence: str, station) -> tuple[dict, str]:
        from lipon_hw.screening.layout import touchdowns
        from lipon_hw.screening.measure import physical_limit_s

        s, card = plan.sheet, plan.card
        n = len(touchdowns(s, card))
        return ({"valid": True, "name": plan.name, "kind": self.name, "sheet": s.id,
                 "rows": s.rows, "cols": s.cols, "sites": card.sites, "touchdowns": n,
                 "metrics": list(plan.metrics), "bins": plan.bins.definitions(),
                 "physical_limit_per_cell_s": physical_limit_s(plan)},
                f"{sequence}: valid (screening of sheet {s.id}, {s.rows}×{s.cols} cells, "
                f"{card.sites} sites in {n} touchdowns, on {station.spec.name})")

    def lanes(self, plan) -> tuple[str, ...]:
        """Its prober tool, and the potentiostat whose channels its sites are (which a
        cell test may also use)."""
        return tuple(dict.fromkeys((plan.tool, plan.potentiostat)))

    def opening(self, store, station, plan, options):
        from lipon_hw.screening.session import opening

        return opening(store, station, plan, options)

    def resumption(self, store, owned, run, station, plan):
        from lipon_hw.screening.session import resumption

        return resumption(store, owned, run, station, plan)

    def execute(self, running):
        from lipon_hw.screening.session import execute

        return execute(running)

    def progress(self, quiet: bool):
        return TouchdownProgress(quiet)

    def summary_lines(self, result) -> list[str]:
        s = result.summary
        lines = []
        if s.get("cells_screened") is not None:
            y = s.get("yield")
            lines.append(f"  sheet {s['sheet']}: {s['cells_screened']} of {s['cells']} cells "
                         f"screened, {s['passed']} passed"
                         + (f" (yield {y:.1%}" if y is not None else "")
                         + (f", {s['tester_faults']} tester faults)" if y is not None else ""))
            for key, count in sorted(s.get("hard_bins", {}).items(),
                                     key=lambda kv: int(kv[0].split()[0])):
                lines.append(f"    hard bin {key}: {count}")
            if s.get("test_time_per_cell_s"):
                lines.append(f"  test time per cell {s['test_time_per_cell_s']:.2f} s, "
                             f"physical limit {s['physical_limit_per_cell_s']:.2f} s "
                             f"({s['test_time_over_limit']:.2f}×); "
                             f"{s['cells_per_hour']:.0f} cells/h with {s['sites']} sites")
        lines.append(f"run {result.run_id} {result.status}: {result.message}; "
                     f"{result.t_s:.0f} s of prober time in {result.wall_s:.1f} s")
        return lines

    def json_fields(self, result) -> dict:
        return {k: v for k, v in result.summary.items() if k != "virtual_s"}

    def make_safe(self, run, station, lab, done: list[str], failed: list[str]) -> None:
        """Every site's cell off, the needles lifted: one round (the guard's)."""
        from lipon_hw.screening.recipe import load_screening
        from lipon_hw.screening.safety import make_prober_safe

        plan = load_screening(run.sequence_path, station, text=run.sequence_text)
        made, failures = make_prober_safe(lab, plan, lambda s: None, patience_s=0.0)
        done.extend(made)
        failed.extend(failures)

    def last_stored_t(self, store, run_id: int) -> float:
        point = store.last_checkpoint(run_id)
        return point.t_s if point else 0.0

    def export(self, store, run_id: int, fmt: str, out: str, force: bool) -> list[Path]:
        from lipon_hw.screening.outputs import export_screening

        return export_screening(store, run_id, fmt, out, force)

    def plots(self, store, run_id: int, out: Path, brief: bool = False) -> list[Path]:
        from lipon_hw.screening.outputs import write_screening_outputs

        return write_screening_outputs(store, run_id, out, brief=brief)


class TouchdownProgress(Notes):
    """One bar over the sheet's touchdowns, with the cells screened so far."""

    def __init__(self, quiet: bool):
        super().__init__(quiet)
        self.bar = None

    def start(self, run_id: int, plan) -> None:
        from tqdm import tqdm

        from lipon_hw.screening.layout import touchdowns

        self.run_id = run_id
        if self.quiet or not sys.stderr.isatty():
            return
        self.bar = tqdm(total=len(touchdowns(plan.sheet, plan.card)), unit="touchdown",
                        file=sys.stderr, desc=f"run {run_id} sheet {plan.sheet.id}",
                        dynamic_ncols=True, leave=False, mininterval=0.5)

    def update(self, touchdown: int, touchdowns: int, cells: int) -> None:
        if self.bar is not None:
            self.bar.n = touchdown
            self.bar.set_postfix_str(f"{cells} cells", refresh=False)
            self.bar.refresh()

    def close(self, completed: bool = False) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


KIND = ScreeningKind()
