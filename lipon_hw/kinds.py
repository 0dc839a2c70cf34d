"""Run kinds: what a deposition, a cell test — and any kind added later — each do their own
way, behind one interface. The command line and the Python API look a kind up here (by the
`kind:` of a sequence file, or by the kind stored with a run) and never branch on it.

A kind is an object with the `RunKind` attributes. Kinds register with `register()`, or
from another package through the `lipon_hw.run_kinds` entry point group (each entry point
names a zero-argument callable returning the kind). The two built in:

    deposition   recipes (`kind: deposition`, or no `kind:`): sputter and evaporation tools
    cycling      cell-test protocols (`kind: cycling`) on potentiostat channels
    screening    sheet-screening recipes (`kind: screening`) on a prober's parallel sites
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

from lipon_hw.errors import InputError

ENTRY_POINT_GROUP = "lipon_hw.run_kinds"
#: the kind of a sequence file that says none (recipes came first)
UNTYPED = "deposition"


@dataclass(frozen=True)
class RunOptions:
    """What the command line (or a caller) asks of a run; a kind uses what applies to it
    and refuses, in one sentence, an option that cannot (`--sample` for a cell test)."""

    data_dir: str
    station_path: str | None = None
    seed: int | None = None
    speed: float | None = None
    workers: int | None = None
    sample_id: str | None = None
    as_json: bool = False
    #: a connected Dask cluster (`lipon_hw.cluster.connect.Cluster`) for the kinds that
    #: spread over one (`spreads_on_cluster`); None: this machine's worker processes
    cluster: object | None = None
    #: draw the plots at the end of a run that lasts in a process of its own, readied while
    #: the run goes (`lipon_hw.engine.plot_helper`): for a process that runs one run
    plot_helper: bool = False


class RunKind(Protocol):
    """What a kind of run supplies; the lifecycle (`lipon_hw.engine.lifecycle`) and the
    console (`lipon_hw.console`) do the rest, the same way for every kind. `KindBase`
    gives the optional parts a default."""

    name: str  # stored as the run's kind
    document_kind: str  # the `kind:` of its sequence files
    export_formats: tuple[str, ...]  # the first is `export`'s default
    resumable: tuple[str, ...]  # the statuses from which a run of this kind may continue

    def schema(self) -> dict:
        """The JSON Schema of its sequence files (`lipon-hw schema`)."""

    def load(self, sequence: str, station, store, text: str | None = None):
        """The sequence read and checked against its schema and the station (and, given a
        store, what it holds): the plan, with `.name` and `.text`. Raises InputError
        naming file, line and field. A kind whose plan depends on what other runs hold
        (the cell tests: cells picked from a screening, none another run's channel names)
        also takes `resuming=RUN_ID` when the plan is its stored sequence read back to
        resume that run (`lifecycle.resume` passes it to a `load` that takes it)."""

    def describe(self, plan, sequence: str, station) -> tuple[dict, str]:
        """What `validate` prints of a valid plan: (JSON, one line)."""

    def opening(self, store, station, plan, options: RunOptions):
        """`lifecycle.Opening`: what a new run locks, its sample, its own rows; refuses, in
        one sentence, an option that does not apply to the kind."""

    def resumption(self, store, owned, run, station, plan):
        """`lifecycle.Resumption`: where an unfinished run takes up (its resources taken,
        the store rewound where the world rolls back)."""

    def execute(self, running):
        """Run it (`lifecycle.Running`): connect, drive, make the hardware safe on every
        exit, then store the end; return `lifecycle.Outcome`, or raise the run's
        LiponError when it did not complete."""

    def plots(self, store, run_id: int, out: Path, brief: bool = False) -> list[Path]:
        """Draw a run's plots into `out` (`brief`: those worth drawing at every run's end)."""

    def export(self, store, run_id: int, fmt: str, out: str, force: bool) -> list[Path]:
        ...

    def progress(self, quiet: bool):
        """What the operator sees while it runs: a context manager with `note(str)`,
        `start(run_id, plan)`, `update(...)` (the kind's progress calls), `run_id` and
        `close(completed=False)`."""

    def summary_lines(self, result) -> list[str]:
        """The summary printed when a run ends (the last line says how it ended)."""

    def json_fields(self, result) -> dict:
        """The kind's fields of `--json`, beside run_id, status, message, duration_s,
        wall_s and plots."""

    def make_safe(self, run, station, lab, done: list[str], failed: list[str]) -> None:
        """For the guard process, when the engine died without ending `run`: make the
        run's own hardware safe on the freshly connected `lab`, appending what was made
        safe to `done` and each failure (one phrase) to `failed`; never raise."""

    def last_stored_t(self, store, run_id: int) -> float:
        """The run-clock time of the last thing the run stored (when its engine died)."""

    def lanes(self, plan) -> tuple[str, ...]:
        """The queue lanes a run of the plan stands in (`lipon-hw serve`'s queue): the
        tools or potentiostats it needs, one run of each lane at a time."""


class KindBase:
    """Defaults for a kind's optional parts."""

    resumable: tuple[str, ...] = ("running", "interrupted", "failed", "aborted")
    export_formats: tuple[str, ...] = ("csv",)
    #: its `execute` spreads a run over a Dask cluster (`RunOptions.cluster`)
    spreads_on_cluster: bool = False

    def schema(self) -> dict:
        return {"type": "object", "required": ["kind"],
                "properties": {"kind": {"const": self.document_kind}}}

    def describe(self, plan, sequence: str, station) -> tuple[dict, str]:
        return ({"valid": True, "name": plan.name, "kind": self.name},
                f"{sequence}: valid ({self.name} on {station.spec.name})")

    def resumption(self, store, owned, run, station, plan):
        raise InputError(f"run {run.id}: a {self.name} run cannot resume")

    def plots(self, store, run_id: int, out: Path, brief: bool = False) -> list[Path]:
        return []

    def progress(self, quiet: bool):
        return Notes(quiet)

    def summary_lines(self, result) -> list[str]:
        return [f"run {result.run_id} {result.status}: {result.message}; "
                f"{result.t_s:.0f} s of run time in {result.wall_s:.1f} s"]

    def json_fields(self, result) -> dict:
        return {}

    def make_safe(self, run, station, lab, done: list[str], failed: list[str]) -> None:
        pass

    def last_stored_t(self, store, run_id: int) -> float:
        return store.last_reading_t(run_id) or 0.0

    def lanes(self, plan) -> tuple[str, ...]:
        return (self.name,)


class Notes:
    """The plainest progress: notes on stderr, nothing drawn."""

    def __init__(self, quiet: bool):
        self.quiet, self.run_id = quiet, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def note(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr)

    def start(self, run_id: int, plan) -> None:
        self.run_id = run_id

    def update(self, *args) -> None:
        pass

    def close(self, completed: bool = False) -> None:
        pass


_BUILT_IN = {"deposition": "lipon_hw.deposition.kind:KIND",
             "cycling": "lipon_hw.celltest.kind:KIND",
             "screening": "lipon_hw.screening.kind:KIND"}
_kinds: dict[str, RunKind] = {}


def register(kind: RunKind) -> RunKind:
    """Make a kind known (a later one of the same name replaces the earlier)."""
    _kinds[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _kinds.pop(name, None)


def all_kinds() -> dict[str, RunKind]:
    """Every known kind by name: the built-in ones, the registered, the plug-ins."""
    for name, where in _BUILT_IN.items():
        if name not in _kinds:
            module, attr = where.split(":")
            _kinds[name] = getattr(importlib.import_module(module), attr)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _kinds:
            _kinds[ep.name] = ep.load()()
    return _kinds


def for_run(run) -> RunKind:
    """The kind of a stored run."""
    kinds = all_kinds()
    if run.kind not in kinds:
        raise InputError(f"run {run.id} is of kind {run.kind!r}, which this lipon-hw does not "
                         f"know (it knows {', '.join(sorted(kinds))})")
    return kinds[run.kind]


def for_sequence(path: str, text: str | None = None) -> RunKind:
    """The kind a sequence file is written for, by its `kind:` (a file without one is a
    recipe); `text`: the file's text, given (`path` then only names it). A file that cannot
    be read as a mapping goes to the recipe loader, which says what is wrong with it,
    naming file and line."""
    from lipon_hw.yamlfile import load, loads

    kinds = all_kinds()
    by_document = {k.document_kind: k for k in kinds.values()}
    default = by_document[UNTYPED]
    try:
        doc = load(path) if text is None else loads(text, path)
    except Exception:  # noqa: BLE001 - the default kind's loader reports it properly
        return default
    if not isinstance(doc.data, dict) or "kind" not in doc.data:
        return default
    wanted = doc.data["kind"]
    if isinstance(wanted, str) and wanted in by_document:
        return by_document[wanted]
    raise doc.error(("kind",), f"{str(wanted)[:40]!r} is not a kind of run this lipon-hw knows "
                               f"(it knows {', '.join(sorted(by_document))})")
