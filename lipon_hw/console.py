"""What the operator sees of a run at the terminal, the same for every kind: the kind's
progress while it runs, each alarm as it is stored (an `alarm: ...` line on stderr), then
its summary lines and a line counting the run's alarms — or, with `--json`, one JSON
object on stdout: `run_id`, `status`, `message`, `duration_s` (run clock), `wall_s`,
`plots`, `alarms` (count, by severity, and each), and the kind's own fields; no alarm line
is printed then. A run that did not complete prints what it can and exits with its
error's code; a run refused before it existed (bad input) prints nothing on stdout."""

from __future__ import annotations

import json

import click

from lipon_hw import alarm_view
from lipon_hw.engine import lifecycle
from lipon_hw.errors import InputError, LiponError, RunAborted
from lipon_hw.kinds import RunOptions

#: an error's exit code → the status its run was left in
_STATUS_OF_EXIT = {3: "aborted", 130: "interrupted"}


def run(kind, sequence: str, options: RunOptions) -> None:
    _show(kind, options, lambda watch: lifecycle.start(kind, sequence, options, watch))


def resume(kind, run_id: int, options: RunOptions) -> None:
    _show(kind, options, lambda watch: lifecycle.resume(kind, run_id, options, watch))


def envelope(kind, result) -> dict:
    """The `--json` object of a run that ended (completed or not)."""
    return {"run_id": result.run_id, "status": result.status, "message": result.message,
            "duration_s": round(result.t_s, 3), "wall_s": round(result.wall_s, 3),
            "plots": list(result.plots), "alarms": alarm_view.as_json(result.alarms),
            **kind.json_fields(result)}


def _show(kind, options: RunOptions, go) -> None:
    heard: list = []  # the alarms of this session, should the run end without a result

    with kind.progress(quiet=options.as_json) as progress:
        def alarm(a) -> None:
            heard.append(a)
            progress.note(f"alarm: {alarm_view.line(a)}")  # nothing when quiet (--json)

        watch = lifecycle.Watch(progress.note, progress.start, progress.update, alarm)
        try:
            result = go(watch)
        except LiponError as exc:
            progress.close()
            if progress.run_id is not None and options.as_json and \
                    not isinstance(exc, InputError):
                alarms = getattr(exc, "alarms", None)
                click.echo(json.dumps({"run_id": progress.run_id,
                                       "status": _STATUS_OF_EXIT.get(exc.exit_code, "failed"),
                                       "message": str(exc),
                                       "alarms": alarm_view.as_json(
                                           heard if alarms is None else alarms)}))
            elif progress.run_id is not None and not options.as_json:
                alarms = getattr(exc, "alarms", None)
                click.echo(alarm_view.summary_line(progress.run_id, heard if alarms is None
                                                   else alarms, _data_hint(options)),
                           err=True)
            raise
        progress.close(completed=result.status == "completed")
    if options.as_json:
        click.echo(json.dumps(envelope(kind, result)))
    else:
        for line in kind.summary_lines(result):
            click.echo(line)
        click.echo(alarm_view.summary_line(result.run_id, result.alarms, _data_hint(options)))
        if result.plots:  # plots, and the data files a kind writes beside them
            label = "plots" if all(p.endswith(".png") for p in result.plots) else "written"
            click.echo(f"{label}: {', '.join(result.plots)}")
    if result.status != "completed":
        raise RunAborted(result.message)


def _data_hint(options: RunOptions) -> str | None:
    """`--data DIR` for the `lipon-hw alarms` hint, unless DIR is the default."""
    from lipon_hw.cli_options import DEFAULT_DATA

    return None if options.data_dir == DEFAULT_DATA else options.data_dir
