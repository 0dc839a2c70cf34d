"""What every `lipon-hw` command shares: the data and JSON options, the seed and speed
types, shipped sequences by bare name, and the decorators that turn an error into one
sentence and its exit code (`cli`'s docstring says which) and a closed pipe into a quiet
exit."""

from __future__ import annotations

import functools
import os
import sys

import click

from lipon_hw.errors import LiponError

DEFAULT_DATA = "lipon-data"

_data = click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True,
                     type=click.Path(file_okay=False),
                     help="Data directory holding the run database (or naming it: store.url).")


def _store_for_every_process(_ctx, _param, value: str | None) -> None:
    """--store is LIPON_HW_STORE for the command and every process it starts (a cell test's
    workers, the guard, the queue's runs), which all open the store by themselves."""
    from lipon_hw.store_location import STORE_ENV

    if value is not None:
        os.environ[STORE_ENV] = value


store_option = click.option("--store", expose_value=False, callback=_store_for_every_process,
                            metavar="postgresql://…|sqlite",
                            help="The run database: a shared PostgreSQL database, or the data "
                                 "directory's SQLite file (default; also LIPON_HW_STORE). A "
                                 "data directory remembers a PostgreSQL store it was used "
                                 "with.")


def data_option(fn):
    """--data DIR and --store: where a command's runs are."""
    return _data(store_option(fn))


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Machine-readable output on stdout.")


class _FiniteFloatRange(click.FloatRange):
    """click's FloatRange, which lets nan through (nan < min is false); this does not."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number.", param, ctx)
        return number


#: numpy seeds with any non-negative integer; 32 bits are what the store and every
#: generator of the simulated lab take the same way
SEED = click.IntRange(0, 2**32 - 1)
#: times wall speed on a real-time clock: 0.01 is a hundredfold slow motion (slower is a
#: stopped lab); at 1e6 a 22-hour deposition takes 0.08 s, past which the clock's sleeps
#: are below the scheduler's resolution and the run is virtual time in all but name
SPEED = _FiniteFloatRange(0.01, 1e6)


def shipped_sequence(_ctx, _param, value: str) -> str:
    """A bare name of a shipped sequence (`lipon_rf_sputter`) is that file; a path is itself."""
    from lipon_hw.shipped import find_sequence

    return find_sequence(value)


def reports_errors(fn):
    """Turn LiponError into one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LiponError as exc:
            click.echo(f"error: {exc}{_safe_state_unless_ok(exc)}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug of ours: say so in one line (LIPON_HW_DEBUG for more)
            if os.environ.get("LIPON_HW_DEBUG"):
                raise
            # only the engine knows what it made safe: say it when it says so, else nothing
            safe = getattr(exc, "safe_state", None)
            hardware = f"; the run was stopped and {safe.sentence()}" if safe else ""
            click.echo(f"error: internal error ({type(exc).__name__}: {exc}){hardware}; set "
                       "LIPON_HW_DEBUG=1 to see the traceback", err=True)
            sys.exit(1)

    return wrapper


def closed_pipe_ends_quietly(fn):
    """A listing or export whose reader has gone (`lipon-hw runs | head -2`) has done what
    was asked: exit 0 without a word, as `head` wanted no more. stdout is pointed at
    /dev/null so the interpreter's own last flush cannot fail again. Only for commands that
    change nothing: a run reports its end whatever became of its stdout."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            sys.exit(0)

    return wrapper


def _safe_state_unless_ok(exc: LiponError) -> str:
    """A run whose safe state failed somewhere says so with its error, whatever the error."""
    safe = getattr(exc, "safe_state", None)
    return f"; {safe.sentence()}" if safe is not None and not safe.ok and \
        safe.sentence() not in str(exc) else ""
