"""A run's plots drawn by a process of its own, made ready while the run goes.

Drawing a run's plots at its end starts with importing matplotlib: about half a second
of CPU on the core a run in virtual time keeps busy, a tenth of a 22 h deposition's
wall time. A run asked to (`RunOptions.plot_helper`: the command line, whose process
runs one run and exits) that still goes after `WARM_AFTER_S` of wall time starts a
helper, `python -m lipon_hw.engine.plot_helper KIND DATA STORE`, which on another core,
while the run goes, imports matplotlib and the run kinds, draws a throwaway figure (the
first figure a process draws loads its fonts) and opens the run's store read-only, then
waits on its stdin for one job. At the end the engine writes out what its store buffers
and sends the job as one JSON line (the run, the directory to draw into); the helper
draws what the kind draws at a run's end (`kind.plots(..., brief=True)`) and answers one
JSON line: the plots' paths, or the sentence saying why it could not draw them.

Nothing changes for a run that ends sooner (no helper is started), nor where matplotlib
is imported already (nothing to hide) or not installed (drawn here, the kind's sentence
names the extra), nor on a machine whose cores were all busy over that first second
(`spare_cores` < `SPARE_CORES_MIN`: the helper's ~1 s of CPU would be taken from the run
or from the machine's other work, not from an idle core). A helper that cannot be
started, cannot draw, dies or answers what is not an answer costs only time: the plots
are drawn here, as without it (and a plot that cannot be drawn here either is told as it
always is). It never outlives its engine: in a session of its own (a Ctrl-C at the
terminal is the engine's), it reads end-of-file on its stdin once the engine's process
has gone, and exits.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

from lipon_hw.errors import LiponError

#: wall seconds a run goes before its plots' helper is started (a shorter run draws here)
WARM_AFTER_S = 1.0
#: idle cores the machine must have had over the run's first WARM_AFTER_S for a helper
#: to start (/proc/stat; elsewhere the load average)
SPARE_CORES_MIN = 0.5
#: how long the engine waits for the helper's answer before it draws the plots itself
ANSWER_WAIT_S = 300.0
#: how long a helper has to exit once its stdin is closed, before it is killed
EXIT_WAIT_S = 2.0


class PlotHelper:
    """The helper of one run: started by a timer `after_s` into the run (only if drawing
    would have to import matplotlib; with `on_spare_core`, only if the machine had an idle
    core meanwhile), given the job by `draw`, closed by `close`."""

    def __init__(self, kind_name: str, store, after_s: float | None = WARM_AFTER_S,
                 on_spare_core: bool = False):
        self.kind_name = kind_name
        location = store.location
        #: what the helper is started with: the kind, the data directory, its store
        self.args = [kind_name, str(store.data_dir),
                     location.target if location.is_postgresql else "sqlite"]
        self._lock = threading.Lock()  # the timer's start against the engine's end
        self._proc: subprocess.Popen | None = None
        self._exiting: subprocess.Popen | None = None  # answered, exiting
        self._done = after_s is None  # None: never started
        self._timer = None
        #: the machine's CPU times when the timer was set (`on_spare_core`)
        self._cpu_before = cpu_times() if on_spare_core and after_s is not None else None
        self._on_spare_core = on_spare_core
        if after_s is not None:
            self._timer = threading.Timer(after_s, self._start)
            self._timer.daemon = True
            self._timer.start()

    def __enter__(self) -> PlotHelper:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def started(self) -> bool:
        return self._proc is not None

    def _start(self) -> None:
        if self._on_spare_core and spare_cores(self._cpu_before) < SPARE_CORES_MIN:
            return  # no idle core to hide the import on: the engine draws the plots
        with self._lock:
            if self._done:
                return
            with contextlib.suppress(OSError):
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", __name__, *self.args], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                    start_new_session=True)

    def _take(self) -> subprocess.Popen | None:
        """The helper process, if one was started; none will be after this."""
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()
            proc, self._proc = self._proc, None
        return proc

    def draw(self, store, run_id: int, out: Path) -> list[Path] | None:
        """The run's plots, drawn by the helper; None when the helper has none to give (not
        started, could not draw them, died, answered nonsense, or nothing within
        ANSWER_WAIT_S): the caller draws them itself. The helper is left to exit while
        the run's end goes on (`close` waits for it)."""
        proc = self._take()
        if proc is None:
            return None
        self._exiting = proc
        store.flush()  # the helper reads the store: everything the run stored in it
        stop = threading.Timer(ANSWER_WAIT_S, proc.kill)
        stop.daemon = True
        stop.start()
        try:
            proc.stdin.write(json.dumps({"run_id": run_id, "out": str(out)}) + "\n")
            proc.stdin.close()
            said = json.loads(proc.stdout.readline())
        except (OSError, ValueError):  # died, killed, or not an answer
            return None
        finally:
            stop.cancel()
        plots = said.get("plots") if isinstance(said, dict) else None
        if not isinstance(plots, list) or not all(isinstance(p, str) for p in plots):
            return None
        return [Path(p) for p in plots]

    def close(self) -> None:
        """No more plots from the helper: it is let go (and waited for)."""
        for proc in (self._take(), self._exiting):
            if proc is not None:
                _stop(proc)
        self._exiting = None


def _stop(proc: subprocess.Popen) -> None:
    """End a helper: its stdin closed (it exits on end-of-file), killed if it lingers."""
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.close()
    try:
        proc.wait(timeout=EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    with contextlib.suppress(OSError, ValueError):
        proc.stdout.close()


def later(kind_name: str, store, wanted: bool) -> PlotHelper:
    """The helper of a run of `kind_name` kept in `store`, started if the run lasts, when
    it is `wanted` and would hide an import (matplotlib installed and not imported here
    yet); else one that never starts."""
    return PlotHelper(kind_name, store, WARM_AFTER_S if wanted and _hides_import() else None,
                      on_spare_core=True)


def _hides_import() -> bool:
    """matplotlib installed, and not imported in this process yet."""
    if "matplotlib" in sys.modules:
        return False
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a finder that refuses it outright
        return False


def cpu_times() -> tuple[int, int, int] | None:
    """(idle, all) clock ticks of the whole machine so far and its number of cores, from
    /proc/stat (Linux); None elsewhere or if it cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
        head = lines[0].split()
        ticks = [int(x) for x in head[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, IndexError, ValueError):
        return None
    cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    if head[0] != "cpu" or len(ticks) < 5 or cores < 1:
        return None
    return ticks[3] + ticks[4], sum(ticks), cores


def spare_cores(before: tuple[int, int, int] | None) -> float:
    """How many cores the machine left idle since `before` (`cpu_times`), or, without
    /proc/stat, now by the load average (cores less the runnable processes); inf if
    neither can be told (the helper is then started, as it would be on an idle machine)."""
    now = cpu_times()
    if before is not None and now is not None and now[1] > before[1]:
        return (now[0] - before[0]) / (now[1] - before[1]) * now[2]
    try:
        return (os.cpu_count() or 1) - os.getloadavg()[0]
    except (AttributeError, OSError):
        return math.inf


# --- the helper's side ---------------------------------------------------------------------
def _warm_up() -> None:
    """Import what drawing needs (most of the cost of a first plot) and draw one small
    figure, as a first plot would."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.0, 1.5), dpi=50, layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    axes[0].plot([0.0, 1.0], [0.0, 1.0], label="warm-up")
    axes[0].set_ylabel("rate (Å/s)")
    axes[1].twinx().set_ylabel("I (µA)")
    axes[0].legend()
    FigureCanvasAgg(fig).print_png(io.BytesIO())


def main(argv: list[str]) -> int:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine's to handle
    kind_name, data_dir, store_arg = argv
    store = kind = None
    with contextlib.suppress(Exception):  # what fails here is met again, and told, below
        _warm_up()
    with contextlib.suppress(Exception):
        from lipon_hw.kinds import all_kinds
        from lipon_hw.store import Store

        kind = all_kinds()[kind_name]
        store = Store(data_dir, read_only=True, store=store_arg)
    line = sys.stdin.readline()
    try:
        if not line.strip():
            return 0  # the engine drew its plots itself, or is gone
        try:
            if kind is None or store is None:
                raise LiponError(f"the plot helper could not open the {kind_name} run's "
                                 f"store in {data_dir}")
            job = json.loads(line)
            plots = kind.plots(store, int(job["run_id"]), Path(job["out"]), brief=True)
            said = {"plots": [str(p) for p in plots]}
        except Exception as exc:  # noqa: BLE001 - every failure is told to the engine
            said = {"error": str(exc) or type(exc).__name__}
        print(json.dumps(said), flush=True)
        return 0
    finally:
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
