"""The Python API: instruments, stations and runs from a script or a notebook.

Three things, each one call:

    from lipon_hw import open_instrument, connect, run

    qcm = open_instrument("sqm160", "socket://127.0.0.1:5001")   # one driver on its own
    qcm.rate_A_s(); qcm.thickness_nm(); close_instrument(qcm)

    with connect() as lab:                  # a station; default: the simulated lab
        lab["valves"].pump()
        lab.advance(600)                    # ten simulated minutes
        lab["chamber_gauge"].pressure_torr()

    result = run("au_seed", data_dir="lipon-data")   # a recipe or a cell-test protocol
    result.readings()                      # a pyarrow Table (.to_pandas() with pandas)

`run` goes through the same lifecycle (`engine.lifecycle.start`) as `lipon-hw run`: the same
validation, store records, safe state on every exit and summary. Errors are the CLI's
(`lipon_hw.errors.InputError` for bad input, with file, line and field).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipon_hw.errors import InputError, InstrumentError

DEFAULT_DATA = "lipon-data"


# --- one instrument ------------------------------------------------------------------------
def open_instrument(driver: str, address: str | None = None, *, station: Any = None,
                    timeout_s: float | None = None, **settings) -> Any:
    """A driver on its own link, as a PyMeasure instrument is opened by its address.

    `open_instrument("sqm160", "socket://127.0.0.1:5001")` builds the `sqm160` driver
    (a short name of `lipon_hw.drivers.DRIVERS` or a plug-in) on that address — any
    pyserial URL (`serial:///dev/ttyUSB0?baud=19200`, `socket://host:port`) or VISA
    resource — with `settings` as the station file's `settings:` would give them.
    `open_instrument("qcm", station="my_station.yaml")` opens the instrument of that
    name with its station entry's driver, address, timeout, settings and limits.

    The driver is returned as it is (its methods are the capability it implements, see
    `lipon_hw.interfaces`); `close_instrument` closes its link. A `sim://` address has no
    simulated lab behind it here: `connect()` a simulated station instead, or serve it
    (`lipon-hw sim serve`) and open its `socket://` address.
    """
    from lipon_hw.links import LinkPool
    from lipon_hw.station import InstrumentSpec, driver_class, driver_kwargs, load_station

    if station is not None:
        loaded = station if hasattr(station, "spec") else load_station(station)
        if driver not in loaded.spec.instruments:
            raise InputError(f"station {loaded.spec.name!r} has no instrument {driver!r} "
                             f"(it has {', '.join(loaded.spec.instruments)})")
        spec = loaded.instrument(driver)
        if address is not None or settings:
            spec = spec.model_copy(update={
                "address": address or spec.address, "settings": {**spec.settings, **settings}})
    else:
        if address is None:
            raise InputError(f"open_instrument({driver!r}) needs an address, or station=")
        spec = InstrumentSpec(driver=driver, address=address, settings=settings)
    if timeout_s is not None:
        spec = spec.model_copy(update={"timeout_s": timeout_s})
    sims = [a for a in spec.addresses if a.startswith("sim://")]
    if sims:
        raise InputError(f"{sims[0]} is served by a simulated lab: use connect() for the "
                         "whole simulated station, or `lipon-hw sim serve` and its "
                         "socket:// address")
    cls = driver_class(spec.driver)
    pool = LinkPool()
    links = [pool.open(a, getattr(cls, "SERIAL_DEFAULTS", {}), spec.timeout_s)
             for a in spec.addresses]
    try:
        return cls(driver, links if len(links) > 1 else links[0], **driver_kwargs(cls, spec))
    except BaseException:
        pool.close()
        raise


def close_instrument(instrument: Any) -> None:
    """Close the link(s) of a driver from `open_instrument` (made safe first: a driver's
    `make_safe()` turns its outputs off)."""
    links = getattr(instrument, "links", None) or [instrument.link]
    try:
        instrument.make_safe()
    finally:
        for link in links:
            link.close()


# --- a station ----------------------------------------------------------------------------
class _StepClock:
    """Virtual seconds that move only when told (`ConnectedStation.advance`)."""

    def __init__(self) -> None:
        self.t_s = 0.0

    def __call__(self) -> float:
        return self.t_s


@dataclass
class ConnectedStation:
    """A station's instruments, connected; on a simulated station, a clock you move.

    `station["rf"]` (or `.instruments["rf"]`) is a live driver; `advance(s)` lets that
    much simulated time pass (pumps pump, films grow, cells charge) — the physics
    integrates lazily to `now` when an instrument is next read. On real hardware time is
    the wall clock and `advance` refuses.
    """

    lab: Any  # lipon_hw.station.Lab
    clock: _StepClock | None
    instruments: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.instruments = self.lab.instruments

    @property
    def station(self):
        return self.lab.station

    @property
    def simulated(self) -> bool:
        return self.clock is not None

    @property
    def now(self) -> float:
        """Seconds on the station's clock (virtual on a simulated station)."""
        import time

        return self.clock() if self.clock is not None else time.monotonic()

    def __getitem__(self, name: str) -> Any:
        if name not in self.instruments:
            raise KeyError(f"station {self.station.spec.name!r} has no instrument {name!r} "
                           f"(it has {', '.join(self.instruments)})")
        return self.instruments[name]

    def for_role(self, tool: str, role: str) -> Any:
        """The instrument playing `role` (e.g. "rf_supply") on `tool` (e.g. "sputter")."""
        return self.lab.for_role(tool, role)

    def advance(self, seconds: float) -> float:
        """Let `seconds` of simulated time pass; returns the new time."""
        if self.clock is None:
            raise InputError(f"station {self.station.spec.name!r} has real instruments: its "
                             "clock is the wall clock and cannot be advanced")
        if not seconds >= 0 or seconds == float("inf"):
            raise InputError(f"advance() takes a finite number of seconds ≥ 0, not {seconds}")
        self.clock.t_s += float(seconds)
        return self.clock.t_s

    def close(self) -> None:
        """Every instrument made safe (each tried, whatever another one did), then every
        link closed; the first instrument that could not be made safe is then raised."""
        failures = []
        for name, instrument in self.instruments.items():
            try:
                instrument.make_safe()
            except Exception as exc:  # noqa: BLE001 - the others must still be made safe
                failures.append((name, exc))
        self.lab.close()
        if failures:
            name, exc = failures[0]
            raise InstrumentError(f"{name} could not be made safe ({exc})") from exc

    def __enter__(self) -> ConnectedStation:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(station: str | Path | None = None, seed: int | None = None) -> ConnectedStation:
    """Connect a station file (default: the built-in simulated lab) and every instrument
    on it. `seed` overrides a simulated station's seed."""
    from lipon_hw.station import load_station

    loaded = load_station(station)
    clock = _StepClock() if loaded.in_process else None  # its world keeps our clock
    lab = loaded.connect(clock if clock is not None else _wall_clock, seed)
    return ConnectedStation(lab, clock)


def _wall_clock() -> float:
    import time

    return time.monotonic()


# --- runs ---------------------------------------------------------------------------------
@dataclass
class Run:
    """A run in a data directory: its outcome, and its readings as tables."""

    run_id: int
    data_dir: Path
    kind: str  # "deposition" or "cycling"
    status: str
    message: str = ""
    summary: dict = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)

    def readings(self):
        """A pyarrow Table. A deposition: one row per time, `t_s`, one column per recorded
        quantity (`<instrument>.<quantity>`, e.g. `qcm.thickness_nm`), `step`, `step_kind`
        — the columns of `lipon-hw export`. A cell test: one row per sample, `channel`
        then `t_s`, `voltage_V`, `current_A`, `cycle`, `step_count`, `step_id`,
        `step_type`. `.to_pandas()` gives a DataFrame when pandas is installed."""
        with self._store() as store:
            if self.kind == "cycling":
                return _cell_table(store, self.run_id)
            return _deposition_table(store, self.run_id)

    def spectra(self):
        """A cell test's impedance points as a pyarrow Table: `channel`, `t_s`, `cycle`,
        `step_count`, `f_Hz`, `z_re_ohm`, `z_im_ohm` (empty for a deposition)."""
        import pyarrow as pa

        names = ("t_s", "cycle", "step_count", "f_Hz", "z_re_ohm", "z_im_ohm")
        rows: list[tuple] = []
        with self._store() as store:
            if self.kind == "cycling":
                for ch in store.channels(self.run_id):
                    rows += [(ch.channel, *r) for r in store.spectra(self.run_id,
                                                                          ch.channel)]
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(7)]
        return pa.table(dict(zip(("channel", *names), columns, strict=True)))

    def _store(self):
        from lipon_hw.store import Store

        return _Closing(Store(self.data_dir, read_only=True))


class _Closing:
    def __init__(self, store) -> None:
        self.store = store

    def __enter__(self):
        return self.store

    def __exit__(self, *exc) -> None:
        self.store.close()


def run(sequence: str | Path, data_dir: str | Path = DEFAULT_DATA, *,
        station: str | Path | None = None, seed: int | None = None,
        speed: float | None = None, sample: str | None = None,
        workers: int | None = None, notify=None) -> Run:
    """Run a recipe or a cell-test protocol as `lipon-hw run` does and return it.

    `sequence` is a file, or the bare name of a shipped one (`"lipon_rf_sputter"`).
    A simulated station runs in virtual time unless `speed` is given. `sample` names a
    recipe's sample (`--sample`); `workers` the processes of a cell test (default: one
    per core). `notify(str)` receives the progress lines the CLI prints. A run that ends
    aborted or failed is returned with that status (see `.message`); bad input raises
    `InputError`.
    """
    from lipon_hw.engine import lifecycle
    from lipon_hw.kinds import RunOptions, for_sequence
    from lipon_hw.shipped import find_sequence

    path = find_sequence(sequence)
    kind = for_sequence(path)
    options = RunOptions(str(data_dir), None if station is None else str(station), seed, speed,
                         workers, sample)
    result = lifecycle.start(kind, path, options, lifecycle.Watch(note=notify))
    return Run(result.run_id, Path(data_dir), kind.name, result.status, result.message,
               result.summary, list(result.plots))


def open_run(run_id: int, data_dir: str | Path = DEFAULT_DATA) -> Run:
    """An earlier run of the data directory (read only), e.g. one `lipon-hw run` made."""
    from lipon_hw.store import DB_NAME, Store
    from lipon_hw.store_location import has_store

    if not has_store(data_dir):
        raise InputError(f"{data_dir} holds no lipon-hw data (no {DB_NAME})")
    with _Closing(Store(data_dir, read_only=True)) as store:
        stored = store.run(run_id)
    return Run(stored.id, Path(data_dir), stored.kind, stored.status, stored.message,
               stored.summary)


#: rows turned into one Arrow record batch at a time: memory follows the table, not Python
CHUNK_ROWS = 50_000


def _deposition_table(store, run_id: int):
    import pyarrow as pa

    # the export's own pivot, so a table and `lipon-hw export` never disagree
    from lipon_hw.export import _StepLocator, _wide_chunks

    names = sorted(store.quantity_names(run_id))
    schema = pa.schema([("t_s", pa.float64()), *((n, pa.float64()) for n in names),
                        ("step", pa.int32()), ("step_kind", pa.string())])
    chunks = _wide_chunks(store, run_id, names, _StepLocator(store.steps(run_id)), CHUNK_ROWS)
    return pa.Table.from_batches([_batch([ts, *cols, steps, kinds], schema)
                                  for ts, cols, steps, kinds in chunks], schema=schema)


def _cell_table(store, run_id: int):
    import itertools

    import pyarrow as pa

    from lipon_hw.store_schema import CELL_SAMPLE_COLUMNS

    types = {"t_s": pa.float64(), "voltage_V": pa.float64(), "current_A": pa.float64(),
             "cycle": pa.int64(), "step_count": pa.int64(), "step_id": pa.int64(),
             "step_type": pa.string()}
    schema = pa.schema([("channel", pa.int32()),
                        *((n, types[n]) for n in CELL_SAMPLE_COLUMNS)])
    batches = []
    for ch in store.channels(run_id):
        rows = store.cell_samples(run_id, ch.channel)
        while chunk := list(itertools.islice(rows, CHUNK_ROWS)):
            columns = [list(c) for c in zip(*chunk, strict=True)]
            batches.append(_batch([[ch.channel] * len(chunk), *columns], schema))
    return pa.Table.from_batches(batches, schema=schema)


def _batch(columns: list[list], schema):
    import pyarrow as pa

    return pa.RecordBatch.from_arrays(
        [pa.array(c, f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)
