"""The `lipon-hw` commands of the operator's web view: `serve` (the server, extra
`[web]`), and `submit` and `queue`, which talk to a running server over its REST API
(standard library only)."""

from __future__ import annotations

import sys

import click

from lipon_hw.cli_options import (
    SEED,
    SPEED,
    closed_pipe_ends_quietly,
    data_option,
    json_option,
    reports_errors,
    shipped_sequence,
)


@click.command(name="serve")
@click.option("--bind", "bind_text", default="localhost:8765", show_default=True,
              help="HOST:PORT to listen on (localhost: 127.0.0.1 and ::1; [::1]:PORT for "
                   "IPv6; port 0: any free one). Beyond loopback, tokens are required.")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="Users, one `NAME ROLE TOKEN` a line (role viewer or operator), a file "
                   "only its owner may read. Default: LIPON_HW_TOKEN, one operator; neither: "
                   "local requests act as the local operator (loopback only).")
@click.option("--station", "station_path", type=click.Path(dir_okay=False),
              help="Station the queue's sequences are validated against and run on "
                   "(default: the built-in simulated lab).")
@data_option
@reports_errors
def serve_web(bind_text, token_file, station_path, data_dir) -> None:
    """Serve the operator's web view of the data directory (runs, readings, channels,
    alarms, samples; pause, continue, abort; the run queue) until SIGINT/SIGTERM."""
    from lipon_hw.extras import needs

    with needs("web", "`lipon-hw serve`"):
        from lipon_hw.web.server import serve as run_server
    sys.exit(run_server(bind_text, token_file, data_dir, echo=click.echo,
                        station_path=station_path))


server_option = click.option("--server", help="URL of the `lipon-hw serve` (default: the one "
                                              "serving --data, else http://localhost:8765).")
token_option = click.option("--token", envvar="LIPON_HW_TOKEN", show_envvar=True,
                            help="The server's token for you (none: a loopback server's "
                                 "local operator).")


@click.command()
@click.argument("sequence", type=click.Path(dir_okay=False), callback=shipped_sequence)
@server_option
@token_option
@data_option
@click.option("--seed", type=SEED, help="As for `run`.")
@click.option("--speed", type=SPEED, help="As for `run` (0.01 to 1e6).")
@json_option
@reports_errors
def submit(sequence, server, token, data_dir, seed, speed, as_json) -> None:
    """Queue a recipe or protocol on a `lipon-hw serve`: validated there against its
    station, then run when its tool (or potentiostat) is free."""
    from lipon_hw import queue_client as qc

    for line in qc.submit_command(server, token, data_dir, sequence, seed, speed, as_json):
        click.echo(line)


@click.command(name="queue")
@server_option
@token_option
@data_option
@click.option("--move", "move_to", type=(int, click.IntRange(min=1)), metavar="ID POS",
              help="Put queued entry ID at position POS (1: next) of its lane.")
@click.option("--cancel", "cancel_id", type=int, metavar="ID",
              help="Cancel entry ID: take it out if queued, abort its run if running.")
@json_option
@reports_errors
@closed_pipe_ends_quietly
def queue_cmd(server, token, data_dir, move_to, cancel_id, as_json) -> None:
    """List a `lipon-hw serve`'s run queue (each lane's running and queued entries, then
    the latest ended), or move or cancel an entry."""
    from lipon_hw import queue_client as qc

    for line in qc.queue_command(server, token, data_dir, move_to, cancel_id, as_json):
        click.echo(line)


def register(group: click.Group) -> None:
    for command in (serve_web, submit, queue_cmd):
        group.add_command(command)
