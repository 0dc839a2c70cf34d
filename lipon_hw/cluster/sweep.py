"""A design-of-experiment sweep: one sequence file, some of its values varied (`vary`),
the product of the variations run as runs of their own (each its own run id), one after
the other on this machine or side by side on a Dask cluster.

Every variant is built and checked (its kind's `load`, against the station and the
store) before any runs: a bad one is the file's own `file:line: field:` sentence with
the variant's values after it, and nothing has started.

On a cluster each variant is a task that runs the whole lifecycle in its worker. Runs
side by side cannot share what a run claims, so on a simulated station each variant gets
its own simulated lab (its `sim://NAME` addresses become `sim://vK/NAME` in the station
it runs with, as stored with the run) and a deposition its own sample (the recipe's
sample series, `<id>`, `<id>-2`, …, the first that hold none of its films). A variant
whose worker dies is resumed (`lifecycle.resume`) by the task's next attempt: the run
id is kept by the scheduler (a Dask `Variable`) the moment the run exists. Real
instruments run one variant at a time: a sweep on a station that is not all simulated
refuses --cluster.

All variants share the seed (the station's, or --seed): their differences are the
variations', not the dice's.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from lipon_hw.cluster.vary import Target, apply, locate, typed
from lipon_hw.errors import InputError, LiponError
from lipon_hw.yamlfile import Doc, read_text

#: the most runs one sweep makes
MAX_VARIANTS = 1000
_SIM = re.compile(r"sim://(?=[A-Za-z0-9_.\-/{])")


@dataclass
class Variant:
    """One run of the sweep: its values by key, its sequence text, its sample."""

    index: int
    values: dict
    text: str
    sample_id: str | None = None

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass
class Sweep:
    sequence: str
    kind: object
    targets: list[Target]
    variants: list[Variant] = field(default_factory=list)


def parse_vary(options: list[str]) -> dict[str, list]:
    """`--vary KEY=V1,V2` options → {KEY: [values]}, each KEY once."""
    out: dict[str, list] = {}
    for option in options:
        key, sep, values = option.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--vary {option!r} is not KEY=VALUE,VALUE… "
                             "(e.g. power_W=25,50,100)")
        items = [v.strip() for v in values.split(",")]
        if not all(items):
            raise InputError(f"--vary {option!r}: a value is empty")
        if key in out:
            raise InputError(f"--vary {key} is given twice; give its values once, "
                             "comma-separated")
        out[key] = [typed(v) for v in items]
    return out


def vary_file(path: str) -> dict[str, list]:
    """A sweep file: `vary: {KEY: [values…], …}` (file:line: field sentences)."""
    from lipon_hw.yamlfile import load

    doc: Doc = load(path)
    data = doc.data
    if not isinstance(data, dict) or set(data) != {"vary"} or not isinstance(data["vary"], dict):
        raise doc.error((), "a sweep file holds one key, vary: a mapping of KEY: [values]")
    out = {}
    for key, values in data["vary"].items():
        values = values if isinstance(values, list) else [values]
        if not values or any(isinstance(v, list | dict) or v is None for v in values):
            raise doc.error(("vary", key), "must be a value or a list of values")
        out[str(key)] = values
    return out


def plan(kind, sequence: str, varied: dict[str, list], station, store) -> Sweep:
    """Every variant built and checked; InputError (one sentence) for the first bad one."""
    if not varied:
        raise InputError("a sweep varies something: give --vary KEY=V1,V2… or --vary-file")
    count = 1
    for values in varied.values():
        count *= len(values)
    if count > MAX_VARIANTS:
        raise InputError(f"the variations make {count} runs, more than {MAX_VARIANTS}")
    text = read_text(sequence)
    targets = [locate(text, sequence, key) for key in varied]
    seen: dict[tuple, str] = {}
    for target in targets:
        if target.loc in seen:
            raise InputError(f"--vary {target.key} and {seen[target.loc]} both address "
                             f"{sequence}:{target.line}: {target.field}")
        seen[target.loc] = target.key
    sweep = Sweep(sequence, kind, targets)
    name = _name_target(text, sequence)
    for index, combo in enumerate(itertools.product(*varied.values()), start=1):
        values = dict(zip(varied, combo, strict=True))
        variant = Variant(index, values, "")
        edits = list(zip(targets, combo, strict=True))
        if name is not None and name.loc not in seen:
            edits.append((name, f"{_scalar_text(text, name)} [{variant.label}]"))
        variant.text = apply(text, edits)
        try:
            variant_plan = kind.load(sequence, station, store, text=variant.text)
        except InputError as exc:
            raise InputError(f"{exc} (variant {index} of {count}: {variant.label})") from None
        variant.sample_id = _sample_of(variant_plan)
        sweep.variants.append(variant)
    _number_samples(sweep, store)
    return sweep


def _name_target(text: str, sequence: str) -> Target | None:
    try:
        target = locate(text, sequence, "name")
    except InputError:
        return None
    return target if target.loc == ("name",) else None


def _scalar_text(text: str, target: Target) -> str:
    import yaml

    return str(yaml.safe_load(text[target.start:target.end]))


def _sample_of(plan) -> tuple | None:
    """(sample id, films it deposits) of a plan that deposits on a sample, else None."""
    sample = getattr(plan, "sample", None)
    films = getattr(plan, "deposited_films", None)
    return (sample.id, frozenset(films)) if sample is not None and films else None


def _number_samples(sweep: Sweep, store) -> None:
    """Each depositing variant its own sample: the recipe's series, the first ids that
    hold none of its films (as a run again would take them one at a time)."""
    taken: set[str] = set()
    for variant in sweep.variants:
        if variant.sample_id is None:
            continue
        base, films = variant.sample_id
        n = 1
        while True:
            candidate = base if n == 1 else f"{base}-{n}"
            n += 1
            if candidate in taken:
                continue
            stack = store.film_stack(candidate) if store is not None else []
            if not films & {layer.material for layer in stack}:
                break
        if len(candidate) > 64:
            raise InputError(f"the sweep's samples of {base} need ids longer than 64 "
                             "characters; name the recipe's sample shorter")
        taken.add(candidate)
        variant.sample_id = candidate


def has_store(data_dir: str) -> bool:
    """Whether `data_dir` holds a store already (its SQLite file, or a PostgreSQL store it
    names: `store_location`, where that back end is installed)."""
    try:
        from lipon_hw.store_location import has_store as found
    except ModuleNotFoundError:
        from lipon_hw.store import DB_NAME

        return (Path(data_dir) / DB_NAME).is_file()
    return found(data_dir)


def own_lab(station_text: str, index: int) -> str:
    """The station with every simulated address its variant's own (`sim://vK/NAME`)."""
    return _SIM.sub(f"sim://v{index}/", station_text)


# --- running ------------------------------------------------------------------------------
@dataclass(frozen=True)
class VariantOrder:
    """What a variant's task is sent: the files' texts, where the store is, the options."""

    data_dir: str
    store: str | None
    sweep: str
    index: int
    label: str
    sequence_name: str
    text: str
    station_text: str
    seed: int | None
    speed: float | None
    sample_id: str | None
    workers: int | None = 1


def run_variant(order: VariantOrder) -> dict:
    """A variant's run, in this process (a Dask worker, or the sweep's own process): its
    files written under the data directory's `sweeps/`, then the lifecycle — resumed if
    an earlier attempt of this task had made the run."""
    from lipon_hw.engine import lifecycle
    from lipon_hw.kinds import RunOptions, for_sequence
    from lipon_hw.store import Store

    folder = Path(order.data_dir) / "sweeps" / order.sweep
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{order.index:03d}-{Path(order.sequence_name).name}"
    path.write_text(order.text, encoding="utf-8")
    station = folder / f"{order.index:03d}-station.yaml"
    station.write_text(order.station_text, encoding="utf-8")
    kind = for_sequence(str(path))
    keeper = _RunKeeper(order)
    options = RunOptions(order.data_dir, str(station), order.seed, order.speed,
                         workers=order.workers, sample_id=order.sample_id)
    earlier = keeper.earlier()
    outcome = {"variant": order.index, "values": order.label, "run_id": earlier}
    try:
        with store_pinned(order.store):
            if earlier is not None:
                result = lifecycle.resume(kind, earlier, replace(options, station_path=None))
            else:
                result = lifecycle.start(kind, str(path), options,
                                         lifecycle.Watch(start=lambda run_id, _plan:
                                                         keeper.made(run_id)))
    except lifecycle.Interrupted:
        raise
    except LiponError as exc:  # the run's end (as stored), or why it never began
        run_id = keeper.run_id or earlier
        status = "not run"
        if run_id is not None:
            looked = Store(order.data_dir, read_only=True, store=order.store or "sqlite")
            try:
                status = looked.run(run_id).status
            finally:
                looked.close()
        return {**outcome, "run_id": run_id, "status": status, "message": str(exc)}
    return {**outcome, "run_id": result.run_id, "status": result.status,
            "message": result.message}


@contextlib.contextmanager
def store_pinned(address: str | None) -> Iterator[None]:
    """The run's store for the lifecycle, which opens it by the environment: the sweep's
    own, whatever the worker's LIPON_HW_STORE says (a worker runs one task at a time:
    start workers with one thread each)."""
    from lipon_hw.store_location import STORE_ENV

    before = os.environ.get(STORE_ENV)
    os.environ[STORE_ENV] = address or "sqlite"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(STORE_ENV, None)
        else:
            os.environ[STORE_ENV] = before


class _RunKeeper:
    """The run id of a variant, kept where a later attempt of its task finds it: the
    scheduler's metadata (on a worker), else nowhere (the sweep's own process runs it
    once)."""

    def __init__(self, order: VariantOrder):
        self.key = ["lipon-hw sweep", order.sweep, order.index]
        self.run_id: int | None = None
        self.client = None
        try:
            import distributed

            distributed.get_worker()
            self.client = distributed.get_client()
        except (ImportError, ValueError):
            pass

    def earlier(self) -> int | None:
        if self.client is None:
            return None
        found = self.client.get_metadata(self.key, default=None)
        return int(found) if found is not None else None

    def made(self, run_id: int) -> None:
        self.run_id = run_id
        if self.client is not None:
            self.client.set_metadata(self.key, run_id)


def sweep_token() -> str:
    return uuid.uuid4().hex[:8]


def orders(sweep: Sweep, data_dir: str, store: str | None, station_text: str,
           seed: int | None, speed: float | None, workers: int | None,
           own_labs: bool) -> list[VariantOrder]:
    token = sweep_token()
    return [VariantOrder(data_dir, store, token, v.index, v.label, sweep.sequence, v.text,
                         own_lab(station_text, v.index) if own_labs else station_text,
                         seed, speed, v.sample_id, workers)
            for v in sweep.variants]


def run_here(todo: list[VariantOrder], heard) -> list[dict]:
    """One variant after the other in this process; `heard(outcome)` after each."""
    done = []
    for order in todo:
        done.append(run_variant(order))
        heard(done[-1])
    return done


def run_on(cluster, todo: list[VariantOrder], heard) -> list[dict]:
    """Every variant a task on `cluster`, in the order they end; `heard` as each does.
    A task whose workers kept dying is a variant that did not run to its end."""
    import distributed

    futures = {cluster.client.submit(run_variant, order, pure=False,
                                     key=f"lipon-hw sweep {order.sweep} variant {order.index}"):
               order for order in todo}
    done = []
    for future in distributed.as_completed(futures):
        order = futures[future]
        if future.status == "finished":
            outcome = future.result()
        else:
            exc = future.exception()
            outcome = {"variant": order.index, "values": order.label, "run_id": None,
                       "status": "not run", "message": f"{type(exc).__name__}: {exc}"}
        done.append(outcome)
        heard(outcome)
    return sorted(done, key=lambda o: o["variant"])
