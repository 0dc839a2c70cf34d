"""The guard: a second process that makes the hardware safe when the engine dies unable to.

`kill -9`, the OOM killer or a power-cut of the host's process leave no code of the
engine's own to run, and none of the station's instruments offers a host watchdog that
would switch its output off on its own when the host falls silent: the AE Bus "host port
timeout" (command 40, Apex manual 5708009-C Table 4-6, p. 4-39) is the gap allowed
*between the bytes of one packet* (0.02–5 s), after which the unit drops that packet,
not a loss-of-communication watchdog; the Genesys, Alicat and Modbus relay protocols
list none either. So a run on real instruments starts this guard, a child process in its
own session (a Ctrl-C at the terminal is the engine's to handle, not the guard's), that
waits on a pipe whose other end only the engine holds:

- the engine ends its run (safe state reached, status written) and writes `done`: the
  guard exits without touching anything;
- the engine's process dies first: the kernel closes its end of the pipe, the guard reads
  end-of-file at once (no polling, no timeout), opens the station's instruments itself,
  makes every one safe, power first, and stores what it did in the run's alarms and, if
  the run was still marked running, its status.

What is made safe is the run kind's to say (`RunKind.make_safe`): a deposition's own
instruments, power first; a cell test's own channels, stopped with their cells off.
Stations whose every address is `sim://` need no guard: their simulated lab lives and
dies with the engine's process.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

DONE = b"done\n"


class Guard:
    """The engine's end of the pipe to a running guard process."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def release(self) -> None:
        """The run ended under the engine's control: the guard has nothing to do."""
        with contextlib.suppress(OSError):
            self.proc.stdin.write(DONE)
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def needs_guard(station) -> bool:
    """True when some instrument is outside this process (any address but sim://)."""
    return not station.in_process


def start_guard(data_dir: str | Path, run_id: int) -> Guard:
    proc = subprocess.Popen([sys.executable, "-m", "lipon_hw.engine.guard", str(data_dir),
                             str(run_id)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            start_new_session=True)
    return Guard(proc)


def make_station_safe(data_dir: str | Path, run_id: int) -> str:
    """Open the run's station, let the run's kind make its hardware safe (its own
    instruments, power first; a cell test's own channels), store what was done; returns
    it."""
    import time

    from lipon_hw.kinds import for_run
    from lipon_hw.station import load_station
    from lipon_hw.store import Store

    store = Store(data_dir)
    try:
        run = store.run(run_id)
        kind = for_run(run)
        station = load_station(text=run.station_text)
        done, failed = [], []
        lab = None
        try:
            lab = station.connect(time.monotonic)
            kind.make_safe(run, station, lab, done, failed)
        except Exception as exc:  # noqa: BLE001 - the station could not even be opened
            failed.append(f"the station ({exc})")
        finally:
            if lab is not None:
                lab.close()
        what = f"{', '.join(done)} made safe" + (f"; FAILED for {', '.join(failed)}"
                                                 if failed else "")
        verdict = "made the hardware safe" if not failed else "could NOT make all hardware safe"
        message = (f"the engine's process died without ending run {run_id} (killed?); "
                   f"the guard process {verdict}: {what}")
        store.add_alarm(run_id, kind.last_stored_t(store, run_id), "error", "guard",
                        f"safe state: {what} (by the guard process)")
        if store.run(run_id).status == "running":
            store.set_status(run_id, "failed", message)
        return message
    finally:
        store.close()


def main(argv: list[str]) -> int:
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # only the engine's end of the pipe counts
    data_dir, run_id = argv[0], int(argv[1])
    if sys.stdin.buffer.read() == DONE:
        return 0
    print(make_station_safe(data_dir, run_id), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
