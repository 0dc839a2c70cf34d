"""`lipon-hw`: run, validate, resume and inspect recipes; serve the simulated lab.

Every error a user can cause is printed as one sentence on stderr with a
non-zero exit code (2 for bad input, among it a run database that is not a sound
lipon-hw store; 3 for an aborted run; 1 for a failed run or a store that cannot be
written, e.g. a full disk; 130 when interrupted), never as a traceback. A command
that only reads (`runs`, `alarms`, `sample`, `export`, `report`, `station`) and whose stdout
is closed early (`| head`) ends quietly with 0.
"""

from __future__ import annotations

import json
import signal
import sys

import click

from lipon_hw import cli_cluster, cli_web
from lipon_hw.cli_options import (
    SEED,
    SPEED,
    closed_pipe_ends_quietly,
    data_option,
    json_option,
    reports_errors,
    shipped_sequence,
    store_option,
)
from lipon_hw.errors import InputError, LiponError, OutputError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lipon-hw")
def main() -> None:
    """Instrument control and test automation for LiPON thin-film battery lines.

    With no --station, every command uses the built-in simulated lab.
    """


@main.command()
@click.argument("sequence", type=click.Path(dir_okay=False), callback=shipped_sequence)
@click.option("--station", "station_path", type=click.Path(dir_okay=False),
              help="Station file (default: the built-in simulated lab).")
@data_option
@click.option("--seed", type=SEED, help="Seed of the simulated lab (default: the station's).")
@click.option("--speed", type=SPEED,
              help="Run on a real-time clock at this many times wall speed (1 for hardware; "
                   "0.01 to 1e6). Default for a simulated lab: virtual time, as fast as "
                   "possible.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Cell tests: processes sharing the channels (default: one per core in "
                   "virtual time, one in real time).")
@click.option("--sample", "sample_id",
              help="Recipes: the sample the layers go onto, added to its stack if it has "
                   "one. Default: the recipe's sample, or a new one named after it (-2, -3, "
                   "…) once that holds a stack.")
@cli_cluster.cluster_options
@json_option
@reports_errors
def run(sequence, station_path, data_dir, seed, speed, workers, sample_id, cluster,
        cluster_workers, as_json) -> None:
    """Run a recipe or a cell-test protocol SEQUENCE (YAML) on the station."""
    from lipon_hw import console
    from lipon_hw.kinds import RunOptions, for_sequence

    kind = for_sequence(sequence)
    with _stop_on_sigterm(), cli_cluster.on_cluster(kind, cluster, cluster_workers) as on:
        console.run(kind, sequence, RunOptions(data_dir, station_path, seed, speed, workers,
                                               sample_id, as_json, on, plot_helper=True))


@main.command()
@click.argument("run_id", type=int)
@data_option
@click.option("--speed", type=SPEED, help="As for `run` (0.01 to 1e6).")
@click.option("--workers", type=click.IntRange(min=1), help="As for `run`.")
@cli_cluster.cluster_options
@json_option
@reports_errors
def resume(run_id, data_dir, speed, workers, cluster, cluster_workers, as_json) -> None:
    """Continue a killed or interrupted run from its last checkpoint."""
    from lipon_hw import console
    from lipon_hw.kinds import RunOptions, for_run

    looked = _require_store(data_dir, write=False)
    try:
        kind = for_run(looked.run(run_id))
    finally:  # not held open beside the run's own connection
        looked.close()
    with _stop_on_sigterm(), cli_cluster.on_cluster(kind, cluster, cluster_workers) as on:
        console.resume(kind, run_id, RunOptions(data_dir, speed=speed, workers=workers,
                                                as_json=as_json, cluster=on, plot_helper=True))


@main.command()
@click.argument("sequence", type=click.Path(dir_okay=False), callback=shipped_sequence)
@click.option("--station", "station_path", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", type=click.Path(file_okay=False),
              help="Also check that a protocol's samples are in this data directory.")
@store_option
@json_option
@reports_errors
def validate(sequence, station_path, data_dir, as_json) -> None:
    """Check a recipe or a cell-test protocol against its schema and the station, moving
    nothing."""
    from lipon_hw.kinds import for_sequence
    from lipon_hw.station import load_station

    kind = for_sequence(sequence)
    store = _require_store(data_dir) if data_dir is not None else None
    try:
        station = load_station(station_path)
        as_dict, line = kind.describe(kind.load(sequence, station, store), sequence, station)
    finally:
        if store is not None:
            store.close()
    click.echo(json.dumps(as_dict) if as_json else line)


@main.command()
@data_option
@json_option
@reports_errors
@closed_pipe_ends_quietly
def runs(data_dir, as_json) -> None:
    """List the runs in the data directory."""
    store = _require_store(data_dir, write=False)
    rows = [{"run_id": r.id, "name": r.name, "status": r.status, "sample": r.sample_id,
             "thickness_nm": r.summary.get("thickness_nm"),
             "duration_s": r.summary.get("virtual_s"), "message": r.message}
            for r in store.runs()]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        click.echo(f"{r['run_id']:>4}  {r['status']:<11} {r['sample'] or '-':<10} "
                   f"{_fmt(r['thickness_nm']):>9} nm  {r['name']}")


@main.command()
@click.argument("run_id", type=int, required=False)
@data_option
@click.option("--since", "since",
              help="Only alarms from this time of the run clock on: seconds or h:mm:ss.")
@json_option
@reports_errors
@closed_pipe_ends_quietly
def alarms(run_id, data_dir, since, as_json) -> None:
    """List a run's alarms (default: the latest run), one line each: run clock, severity,
    instrument or source, message, and the rule and reaction behind it."""
    from lipon_hw import alarm_view

    since_s = alarm_view.parse_clock(since) if since is not None else None
    store = _require_store(data_dir, write=False)
    if run_id is None:
        runs = store.runs()
        if not runs:
            raise InputError(f"{data_dir} holds no runs yet")
        run_id = runs[-1].id
    store.run(run_id)  # an unknown run says so
    found = store.alarms(run_id, since_s)
    if as_json:
        click.echo(json.dumps({"run_id": run_id, **alarm_view.as_json(found)}))
        return
    for alarm in found:
        click.echo(alarm_view.line(alarm))
    click.echo(f"run {run_id}: {alarm_view.count_text(found)}"
               + (f" from {alarm_view.clock(since_s)} on" if since_s else ""), err=True)


@main.command()
@click.argument("sample_id")
@data_option
@click.option("--cells", "all_cells", is_flag=True,
              help="List every cell of a sheet with its bins, not only cells per bin.")
@json_option
@reports_errors
@closed_pipe_ends_quietly
def sample(sample_id, data_dir, all_cells, as_json) -> None:
    """Show a sample's film stack, layer by layer, across tools and runs, and its
    genealogy both ways: up to its roll (roll ← sheet ← cell) and the deposition runs,
    its screening bins, down to its sheets and cells, and the cell tests that cycled it."""
    from lipon_hw.genealogy import lineage
    from lipon_hw.genealogy_view import lines

    found = lineage(_require_store(data_dir, write=False), sample_id, cells=all_cells)
    if as_json:
        click.echo(json.dumps(found.to_dict()))
        return
    for line in lines(found):
        click.echo(line)


@main.command()
@click.argument("run_id", type=int)
@data_option
@click.option("--format", "fmt",
              help="csv or parquet; for cell tests also bdf or bdf-parquet (the Battery "
                   "Data Format). Default: csv.")
@click.option("--out", "out_path", type=click.Path(), required=True,
              help="File of a deposition run; directory of a cell test (a file per channel).")
@click.option("--force", is_flag=True, help="Replace output files that exist already.")
@reports_errors
@closed_pipe_ends_quietly
def export(run_id, data_dir, fmt, out_path, force) -> None:
    """Export a run: a deposition's readings (one row per time, one column per quantity),
    or a cell test's samples and impedance spectra, one file per channel. Never over the
    store's own files nor anything but a regular file; an existing file only with --force."""
    from lipon_hw.kinds import for_run

    store = _require_store(data_dir, write=False)
    kind = for_run(store.run(run_id))
    fmt = kind.export_formats[0] if fmt is None else fmt.strip().lower()
    for path in kind.export(store, run_id, fmt, out_path, force):
        click.echo(str(path))


def _operator_request(action: str, doc: str):
    @click.argument("run_id", type=int)
    @data_option
    @reports_errors
    def command(run_id, data_dir) -> None:
        store = _require_store(data_dir)
        run = store.run(run_id)
        if run.status != "running":
            raise InputError(f"run {run_id} is {run.status}, not running")
        from lipon_hw.engine import claims
        from lipon_hw.engine.ownership import held_by

        if held_by(data_dir, claims.run(run_id)) is None:  # queued, it would wait for a resume
            raise InputError(f"run {run_id} is marked running but no engine is driving it (its "
                             f"process was killed or its machine stopped); nothing would act on "
                             f"{action}: `lipon-hw resume {run_id}` continues it")
        from lipon_hw.store_requests import os_user

        store.requests.make(run_id, action, author=os_user())
        click.echo(f"run {run_id}: {action} requested; the engine acts on it at its next sample")

    command.__doc__ = doc
    return main.command(name=action)(command)


_operator_request("pause", "Hold a running run: a deposition's shutter closed, RF off, step "
                           "clocks stopped; a cell test's channels at open circuit, their "
                           "voltage recorded.")
_operator_request("continue", "Release an operator pause: RF ramped back and shutter reopened; "
                              "each channel's cut step goes on with what is left of it.")
_operator_request("abort", "End a running run now, leaving the hardware safe.")


@main.command()
@click.argument("run_id", type=int)
@data_option
@reports_errors
@closed_pipe_ends_quietly
def report(run_id, data_dir) -> None:
    """(Re)draw a run's plots: a deposition's rate and thickness per layer; a cell test's
    voltage vs capacity, capacity and CE per cycle, and Nyquist, for every channel."""
    from lipon_hw.engine.lifecycle import plots_dir
    from lipon_hw.kinds import for_run

    store = _require_store(data_dir, write=False)
    out = plots_dir(data_dir, run_id)
    try:
        paths = for_run(store.run(run_id)).plots(store, run_id, out)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise OutputError(f"the plots of run {run_id} cannot be written to {out} "
                          f"({exc.strerror or exc})") from None
    for path in paths:
        click.echo(str(path))


@main.command()
@click.option("--station", "station_path", type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True,
              help="Ask every instrument its identity (model, serial, firmware) and say "
                   "which do not answer; exit 1 if any does not. Sets nothing.")
@json_option
@reports_errors
@closed_pipe_ends_quietly
def station(station_path, check, as_json) -> None:
    """Print the station file (default: the built-in simulated lab), or with --check ask
    its instruments who they are."""
    from lipon_hw.station import load_station

    loaded = load_station(station_path)
    if not check:
        if as_json:
            click.echo(json.dumps({"name": loaded.spec.name, "text": loaded.text}))
        else:
            click.echo(loaded.text, nl=False)
        return
    from lipon_hw.roll_call import roll_call, table, verdict

    answers = roll_call(loaded)
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in answers]))
    else:
        for line in table(answers):
            click.echo(line)
    problem = verdict(loaded, answers)
    if problem:
        raise LiponError(problem)


@main.command()
@click.argument("kind", default="sequence")
@reports_errors
@closed_pipe_ends_quietly
def schema(kind) -> None:
    """Print the JSON Schema of a KIND of file, for editors: sequence (the default: any
    run kind's file), station, or one run kind's (deposition or recipe, cycling or
    protocol); put `# yaml-language-server: $schema=FILE` on a YAML file's first line to
    use it."""
    from lipon_hw.json_schema import names
    from lipon_hw.json_schema import schema as make

    if kind not in names():
        raise InputError(f"no schema of {kind!r}: choose one of {', '.join(names())}")
    click.echo(json.dumps(make(kind), indent=1, ensure_ascii=False))


@main.group()
def sim() -> None:
    """The simulated lab."""


@sim.command()
@click.option("--station", "station_path", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port-base", type=int, default=5000, show_default=True,
              help="First TCP port; each emulator takes the next one (0: any free ports).")
@click.option("--speed", type=SPEED, default=1.0, show_default=True,
              help="Times real time for the simulated physics (0.01 to 1e6).")
@click.option("--seed", type=SEED)
@json_option
@reports_errors
def serve(station_path, host, port_base, speed, seed, as_json) -> None:
    """Serve every emulator on its own TCP port until SIGINT/SIGTERM."""
    from lipon_hw.sim.serve import run_serve
    from lipon_hw.station import load_station

    if speed <= 0:
        raise InputError(f"--speed must be above 0, not {speed:g}")
    sys.exit(run_serve(load_station(station_path), host, port_base, speed, seed, as_json))


# --- helpers ------------------------------------------------------------------------
def _require_store(data_dir: str, write: bool = True):
    """The store of an earlier run: read-only for commands that only look (they then work
    in a read-only directory and beside a run holding the database locked)."""
    from lipon_hw.store import DB_NAME, Store
    from lipon_hw.store_location import has_store

    if not has_store(data_dir):
        raise InputError(f"{data_dir} holds no lipon-hw data (no {DB_NAME}); "
                         "pass --data DIR of an earlier run")
    return Store(data_dir, read_only=not write)


class _stop_on_sigterm:
    """SIGTERM stops a run like Ctrl-C: the engine then leaves the hardware safe."""

    def __enter__(self):
        def interrupt(_signum, _frame):
            raise KeyboardInterrupt

        self._old = signal.signal(signal.SIGTERM, interrupt)

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._old)
        return False


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _round(value, digits):
    return None if value is None else round(value, digits)


cli_web.register(main)
cli_cluster.register(main)

if __name__ == "__main__":
    main()
