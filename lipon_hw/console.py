"""What the operator sees of a run at the terminal, the same for every kind: the kind's
progress while it runs, then its summary lines — or, with `--json`, one JSON object on
stdout: `run_id`, `status`, `message`, `duration_s` (run clock), `wall_s`, `plots`, and
the kind's own fields. A run that did not complete prints what it can and exits with its
error's code; a run refused before it existed (bad input) prints nothing on stdout."""

from __future__ import annotations

import json

import click

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
            "plots": list(result.plots), **kind.json_fields(result)}


def _show(kind, options: RunOptions, go) -> None:
    with kind.progress(quiet=options.as_json) as progress:
        watch = lifecycle.Watch(progress.note, progress.start, progress.update)
        try:
            result = go(watch)
        except LiponError as exc:
            progress.close()
            if progress.run_id is not None and options.as_json and \
                    not isinstance(exc, InputError):
                click.echo(json.dumps({"run_id": progress.run_id,
                                       "status": _STATUS_OF_EXIT.get(exc.exit_code, "failed"),
                                       "message": str(exc)}))
            raise
        progress.close(completed=result.status == "completed")
    if options.as_json:
        click.echo(json.dumps(envelope(kind, result)))
    else:
        for line in kind.summary_lines(result):
            click.echo(line)
        if result.plots:
            click.echo(f"plots: {', '.join(result.plots)}")
    if result.status != "completed":
        raise RunAborted(result.message)
