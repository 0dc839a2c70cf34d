"""Run kinds: what a deposition, a cell test — and any kind added later — each do their own
way, behind one interface. The command line and the Python API look a kind up here (by the
`kind:` of a sequence file, or by the kind stored with a run) and never branch on it.

A kind is an object with the `RunKind` attributes. Kinds register with `register()`, or
from another package through the `lipon_hw.run_kinds` entry point group (each entry point
names a zero-argument callable returning the kind). The two built in:

    deposition   recipes (`kind: deposition`, or no `kind:`): sputter and evaporation tools
    cycling      cell-test protocols (`kind: cycling`) on potentiostat channels
"""

from __future__ import annotations

import importlib
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


class RunKind(Protocol):
    name: str  # stored as the run's kind
    document_kind: str  # the `kind:` of its sequence files
    export_formats: tuple[str, ...]  # the first is `export`'s default

    def validate(self, sequence: str, station_path: str | None, store
                 ) -> tuple[dict, str]:
        """Check a sequence against its schema and the station (and, given the store of
        a data directory, against what it holds); (JSON, one line)."""

    def run(self, sequence: str, options: RunOptions) -> None:
        """Run it with progress on stderr and its summary on stdout; raises the run's
        LiponError (its exit code) when it did not complete."""

    def resume(self, run_id: int, options: RunOptions) -> None:
        """Continue an unfinished run of this kind; as `run` for the output."""

    def export(self, store, run_id: int, fmt: str, out: str, force: bool) -> list[Path]:
        ...

    def plots(self, store, run_id: int, out: Path) -> list[Path]:
        ...

    def make_safe(self, run, station, lab, done: list[str], failed: list[str]) -> None:
        """For the guard process, when the engine died without ending `run`: make the
        run's own hardware safe on the freshly connected `lab`, appending what was made
        safe to `done` and each failure (one phrase) to `failed`; never raise."""

    def last_stored_t(self, store, run_id: int) -> float:
        """The run-clock time of the last thing the run stored (when its engine died)."""


_BUILT_IN = {"deposition": "lipon_hw.deposition.kind:KIND",
             "cycling": "lipon_hw.celltest.kind:KIND"}
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


def for_sequence(path: str) -> RunKind:
    """The kind a sequence file is written for, by its `kind:` (a file without one is a
    recipe). A file that cannot be read as a mapping goes to the recipe loader, which says
    what is wrong with it, naming file and line."""
    from lipon_hw.yamlfile import load

    kinds = all_kinds()
    by_document = {k.document_kind: k for k in kinds.values()}
    default = by_document[UNTYPED]
    try:
        doc = load(path)
    except Exception:  # noqa: BLE001 - the default kind's loader reports it properly
        return default
    if not isinstance(doc.data, dict) or "kind" not in doc.data:
        return default
    wanted = doc.data["kind"]
    if isinstance(wanted, str) and wanted in by_document:
        return by_document[wanted]
    raise doc.error(("kind",), f"{str(wanted)[:40]!r} is not a kind of run this lipon-hw knows "
                               f"(it knows {', '.join(sorted(by_document))})")
