"""The plot helper: a run's plots drawn by a process readied while the run goes
(`lipon_hw.engine.plot_helper`). The helper is a real child process in every test; what
it draws is checked against what the engine draws itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_report import assert_sensible_png

from lipon_hw.deposition.kind import KIND
from lipon_hw.deposition.session import start_run
from lipon_hw.engine import lifecycle, plot_helper
from lipon_hw.engine.plot_helper import PlotHelper
from lipon_hw.store import Store

from recipes import short_recipe

#: a helper's warm-up (interpreter, matplotlib, the kinds, a throwaway figure) on a slow box
READY_WAIT_S = 60.0


@pytest.fixture
def finished_run(tmp_path):
    """A short deposition drawn by the engine itself: (data dir, run id, its plots)."""
    data = tmp_path / "data"
    result = start_run(str(short_recipe(tmp_path)), data)
    assert result.status == "completed" and result.plots
    return data, result.run_id, [Path(p) for p in result.plots]


def started(helper: PlotHelper) -> PlotHelper:
    """The helper, once its process exists (its timer is 0 s)."""
    deadline = time.monotonic() + READY_WAIT_S
    while not helper.started:
        assert time.monotonic() < deadline, "the plot helper was never started"
        time.sleep(0.01)
    return helper


def test_a_helper_draws_the_plots_the_engine_draws(finished_run, tmp_path):
    data, run_id, own = finished_run
    store = Store(data)
    try:
        with started(PlotHelper("deposition", store, after_s=0.0)) as helper:
            drawn = helper.draw(store, run_id, tmp_path / "by_helper")
        assert drawn is not None, "the helper gave no plots"
        assert [p.name for p in drawn] == [p.name for p in own]
        for path in drawn:
            assert path.parent == tmp_path / "by_helper"
            assert_sensible_png(path)
    finally:
        store.close()


@pytest.mark.parametrize("trouble", ["died", "cannot_draw"])
def test_a_helper_that_dies_or_cannot_draw_leaves_the_plots_to_the_engine(
        finished_run, tmp_path, trouble):
    data, run_id, own = finished_run
    for path in own:
        path.unlink()
    store = Store(data)
    said = []
    try:
        kind_name = "deposition" if trouble == "died" else "no-such-kind"
        with started(PlotHelper(kind_name, store, after_s=0.0)) as helper:
            proc = helper._proc
            if trouble == "died":
                proc.kill()
                proc.wait()
            plots = lifecycle.draw_plots(KIND, store, run_id, lifecycle.Watch(said.append),
                                         helper)
        assert proc.poll() is not None, "the helper was left running"
        assert said == [], said
        assert [p.name for p in plots] == [p.name for p in own]
        for path in plots:
            assert_sensible_png(path)
    finally:
        store.close()


def test_a_run_that_ends_before_the_helper_is_due_starts_none(finished_run):
    data, _, _ = finished_run
    store = Store(data)
    try:
        with PlotHelper("deposition", store, after_s=30.0) as helper:
            pass
        time.sleep(0.05)
        assert not helper.started
        # and one not wanted, or with matplotlib imported here already, never has a timer
        assert plot_helper.later("deposition", store, wanted=False)._timer is None
        assert "matplotlib" in sys.modules
        assert plot_helper.later("deposition", store, wanted=True)._timer is None
    finally:
        store.close()


@pytest.mark.parametrize("idle_ticks, starts", [(10, False), (190, True)])
def test_a_helper_starts_only_if_the_machine_had_an_idle_core(finished_run, monkeypatch,
                                                               idle_ticks, starts):
    """Over the timer's wait, 200 ticks of a two-core machine: 10 idle (0.1 core spare:
    the helper's CPU would be taken from busy cores) → none; 190 idle (1.9) → one."""
    data, _, _ = finished_run
    readings = iter([(1000, 5000, 2), (1000 + idle_ticks, 5200, 2)])
    monkeypatch.setattr(plot_helper, "cpu_times", lambda: next(readings))
    store = Store(data)
    try:
        with PlotHelper("deposition", store, after_s=0.0, on_spare_core=True) as helper:
            helper._timer.join(READY_WAIT_S)
            assert helper.started is starts
    finally:
        store.close()


def test_the_machine_s_cpu_times_are_read_where_linux_gives_them():
    before = plot_helper.cpu_times()
    if not Path("/proc/stat").exists():
        assert before is None
        return
    time.sleep(0.05)
    after = plot_helper.cpu_times()
    assert 0 <= before[0] <= before[1] and 1 <= before[2] <= 4096
    assert after[0] >= before[0] and after[1] >= before[1] and after[2] == before[2]


def test_a_helper_exits_when_its_engine_is_killed(finished_run, tmp_path):
    """kill -9 of the engine: the helper reads end-of-file on its stdin and exits."""
    data, _, _ = finished_run
    engine = textwrap.dedent(f"""
        import sys, time
        from lipon_hw.engine.plot_helper import PlotHelper
        from lipon_hw.store import Store
        helper = PlotHelper("deposition", Store({str(data)!r}), after_s=0.0)
        while not helper.started:
            time.sleep(0.01)
        print(helper._proc.pid, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", engine], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + READY_WAIT_S
    while _alive(pid):
        assert time.monotonic() < deadline, f"the plot helper {pid} outlived its engine"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its new parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"
