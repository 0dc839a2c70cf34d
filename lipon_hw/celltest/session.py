"""Starting and resuming cell tests: protocol + station + store + clock → channels.

On a lab that can load cells (the simulated lab's `cells` hook) the engine first puts the
protocol's cells on their channels, as an operator loads cells into the holders: built
from the sample's film stack when the channel names a sample (the fab and the test bench
are one world), else from the protocol's cell kind (the seeds' stack), else the station's
own cells are used. On hardware the cells are whatever sits in the holders.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest.channels import ChannelState, run_channels, stop_reason
from lipon_hw.engine import claims
from lipon_hw.engine.guard import needs_guard, start_guard
from lipon_hw.engine.lifecycle import (
    Interrupted,
    RunResult,
    check_speed,
    ends_run_on_failure,
    make_env,
    open_run,
    plots_dir,
    run_seed,
    run_to_resume,
    uninterruptible,
)
from lipon_hw.engine.ownership import Ownership
from lipon_hw.errors import InputError, LiponError, StoreError
from lipon_hw.station import Station, load_station
from lipon_hw.store import Channel, Store

RESUMABLE = ("running", "interrupted", "failed", "aborted")
CHANNEL_RESUMABLE = ("pending", "running", "paused", "interrupted", "aborted")


def sample_capacity_Ah(store: Store, sample_id: str, area_cm2: float) -> float | None:
    """A sample's capacity from the cathode layers of its film stack, if it has any."""
    try:
        layers = store.film_stack(sample_id)
    except LiponError:
        return None
    uah_cm2 = sum(layer.thickness_nm * 1e-3 * pr.CATHODE_UAH_CM2_PER_UM[layer.material]
                  for layer in layers if layer.material in pr.CATHODE_UAH_CM2_PER_UM)
    return uah_cm2 * area_cm2 * 1e-6 if uah_cm2 > 0 else None


def load(sequence: str, station: Station, store: Store | None, text: str | None = None
         ) -> pr.Protocol:
    """The validated protocol; with a store, its channels' samples must be in it (with films,
    on a simulated station, which builds the cells from them)."""
    capacity = (lambda s, a: sample_capacity_Ah(store, s, a)) if store is not None else None
    exists = (lambda s: _sample_known(store, s, station.simulated)) if store is not None \
        else None
    return pr.load_protocol(sequence, station, text=text, sample_capacity=capacity,
                            sample_exists=exists,
                            cell_check=station.cell_check())


def _sample_known(store: Store, sample_id: str, needs_films: bool) -> bool:
    try:
        sample = store.sample(sample_id)
    except InputError:
        return False
    return bool(sample.layers) or not needs_films


def start_cycling(sequence: str, data_dir: str | Path, station_path: str | None = None,
                  seed: int | None = None, speed: float | None = None,
                  notify: Callable[[str], None] | None = None,
                  on_start: Callable[[int, pr.Protocol], None] | None = None,
                  on_cycle=None, workers: int | None = None) -> RunResult:
    station = load_station(station_path)
    store = Store(data_dir)
    owned = Ownership(data_dir)
    try:
        proto = load(sequence, station, store)
        check_speed(speed)
        seed = run_seed(station, seed)

        def prepare(run_id: int) -> None:
            for plan in proto.channels:
                store.add_channel(run_id, plan.channel, proto.potentiostat, plan.sample,
                                  plan.program.name)
            if on_start:
                on_start(run_id, proto)

        run_id = open_run(store, owned, station, claims.cell_test(station, proto), "cycling",
                          proto.name, sequence, proto.text, seed, None, prepare)
        states = {plan.channel: ChannelState() for plan in proto.channels}
        return _drive(store, run_id, proto, station, states, seed, speed, on_cycle, notify,
                      workers)
    finally:
        owned.release()
        store.close()


def resume_cycling(run_id: int, data_dir: str | Path, speed: float | None = None,
                   notify: Callable[[str], None] | None = None,
                   on_start: Callable[[int, pr.Protocol], None] | None = None,
                   on_cycle=None, workers: int | None = None) -> RunResult:
    """Every channel that had not ended continues from its last step boundary."""
    store = Store(data_dir)
    owned = Ownership(data_dir)
    try:
        run, station = run_to_resume(store, run_id, RESUMABLE, owned)
        proto = load(run.sequence_path, station, store, text=run.sequence_text)
        claims.take_cell_resume(owned, store, run_id, station, proto, CHANNEL_RESUMABLE)
        stored = {c.channel: c for c in store.channels(run_id)}
        states = {}
        for plan in proto.channels:
            row = stored.get(plan.channel)
            if row is None or row.status not in CHANNEL_RESUMABLE:
                continue
            state = ChannelState.from_dict(row.state)
            if station.simulated:  # the simulated cell rolls back: what came after never was
                store.rewind_channel(run_id, plan.channel, state.t_s)
            else:  # real cells lived on: the clock goes on from the last sample stored
                state.t_s = max(state.t_s, store.last_cell_sample_t(run_id, plan.channel))
            state.step_count = max(state.step_count,
                                   store.max_step_count(run_id, plan.channel))
            states[plan.channel] = state
        if not states:  # killed after its channels ended, before its status was written
            status, message, summary = _end_run(store, run_id, proto, "completed", "")
            _plots(store, run_id, notify)
            return RunResult(run_id, status, message, summary["virtual_s"], 0.0, summary)
        t0 = min(s.t_s for s in states.values())
        store.requests.take(run_id)  # a resume runs: a pause or abort asked before is done
        store.set_status(run_id, "running", f"resumed from t = {t0:.0f} s")
        with ends_run_on_failure(store, run_id):
            store.add_alarm(run_id, t0, "info", "engine", f"resumed channels "
                            f"{', '.join(map(str, states))} from their last step")
            if on_start:
                on_start(run_id, proto)
        return _drive(store, run_id, proto, station, states, run.seed, speed, on_cycle, notify,
                      workers)
    finally:
        owned.release()
        store.close()


def _drive(store: Store, run_id: int, proto: pr.Protocol, station: Station,
           states: dict[int, ChannelState], seed: int | None, speed: float | None,
           on_cycle, notify=None, workers: int | None = None) -> RunResult:
    """Run the channels in `workers` processes (default: one per core for a simulated
    run in virtual time, one for real time), then summarise from the store."""
    wall0 = time.monotonic()
    realtime = not station.simulated or speed is not None
    groups = _groups([p.channel for p in proto.channels if p.channel in states],
                     workers or (1 if realtime else os.cpu_count() or 1))
    status, message = "failed", ""
    # on real instruments a guard process disconnects the cells should this one be killed
    guard = start_guard(store.data_dir, run_id) if needs_guard(station) else None
    try:
        if len(groups) == 1:
            _run_group(store, run_id, proto, station, states, seed, speed, on_cycle)
        else:
            _run_workers(store, run_id, groups, states, seed, speed, on_cycle)
        status = "completed"
    except KeyboardInterrupt:
        status, message = "interrupted", "stopped by the operator (Ctrl-C / SIGTERM)"
        raise Interrupted(message) from None
    except Exception as exc:
        message = stop_reason(exc)
        raise
    finally:
        with uninterruptible():
            try:
                status, message, summary = _end_run(store, run_id, proto, status, message)
            except (sqlite3.Error, StoreError) as exc:  # what was buffered cannot be written
                lost = store.drop_unwritten_samples()
                failure = stop_reason(exc)
                if failure not in message:
                    message = f"{message}; {failure}" if message else failure
                message += f" ({lost} buffered samples and readings were not stored)"
                status = "failed" if status == "completed" else status
                status, message, summary = _end_run(store, run_id, proto, status, message)
            finally:  # this process ended the run itself (its cells are off): guard not needed
                if guard is not None:
                    guard.release()
    _plots(store, run_id, notify)
    return RunResult(run_id, status, message, summary["virtual_s"], time.monotonic() - wall0,
                     summary)


def _end_run(store: Store, run_id: int, proto: pr.Protocol, status: str, message: str
             ) -> tuple[str, str, dict]:
    """The run's final status, message and summary, from what its channels stored. A run
    whose channels all ran to their end (`status` completed) is judged by them."""
    rows = _mark_lost(store, run_id, store.channels(run_id), status)
    if status == "completed":
        status, message = _judged(rows)
        store.requests.take(run_id)
    summary = _summary(store, run_id, proto, rows)
    store.set_status(run_id, status, message, summary)
    return status, message, summary


def _judged(rows: list[Channel]) -> tuple[str, str]:
    """aborted if the operator stopped a channel; failed if no channel got through its
    protocol (every one tripped or failed); else completed. The message lists them all."""
    outcome = _outcome(rows)
    ended = {row.status for row in rows}
    if "aborted" in ended:
        return "aborted", outcome  # by the operator: channels stopped, cells off
    if ended and ended <= {"tripped", "failed"}:
        first = next((row.message for row in rows if row.message), "")
        return "failed", f"no channel got through its protocol ({outcome}); {first}".rstrip("; ")
    return "completed", outcome


def _groups(channels: list[int], workers: int) -> list[list[int]]:
    n = max(1, min(workers, len(channels)))
    return [channels[k::n] for k in range(n)]


def _run_group(store: Store, run_id: int, proto: pr.Protocol, station: Station,
               states: dict[int, ChannelState], seed: int | None, speed: float | None,
               on_cycle) -> None:
    """Some channels on one clock, in this process; their cells disconnected at the end."""
    proto = replace(proto, channels=[p for p in proto.channels if p.channel in states])
    t0 = min(states[p.channel].t_s for p in proto.channels)
    env = make_env(station, speed, t0)
    lab = station.connect(lambda: env.now, seed=seed)
    pstat = lab.instruments[proto.potentiostat]
    try:
        snapshots = {n: s.cell for n, s in states.items()}
        cells = mount_cells(lab, proto, store, seed, snapshots, run_id) if lab.cells else {}
        run_channels(env, store, run_id, proto, pstat, states, cells,
                     realtime=not station.simulated or speed is not None, on_cycle=on_cycle,
                     operator=OperatorWish(store, run_id))
    finally:
        with uninterruptible():
            failures = _disconnect(pstat, [p.channel for p in proto.channels])
            try:  # a store that fails here does not keep the lab from being closed
                for failure in failures:
                    store.add_alarm(run_id, env.now, "error", proto.potentiostat, failure)
                store.flush()
            finally:
                lab.close()


class OperatorWish:
    """The operator's standing wish for a running cell test, from its pending requests
    (every worker of the run sees them): "abort" once asked, else the last of "pause" and
    "continue", else None. Read from the store at most once a second of wall time."""

    def __init__(self, store: Store, run_id: int, every_s: float = 1.0):
        self.store, self.run_id, self.every_s = store, run_id, every_s
        self._read_at = time.monotonic()
        self._wish: str | None = None

    def __call__(self) -> str | None:
        if time.monotonic() - self._read_at >= self.every_s:
            self._read_at = time.monotonic()
            pending = self.store.requests.pending(self.run_id)
            toggles = [a for a in pending if a in ("pause", "continue")]
            self._wish = "abort" if "abort" in pending else toggles[-1] if toggles else None
        return self._wish


def _disconnect(pstat, channels: list[int]) -> list[str]:
    """Every channel of this group stopped with its cell off, whatever ended the run (the
    channels normally did it themselves; other groups' channels are not touched). Returns
    what failed, one sentence per channel."""
    failures = []
    for channel in channels:
        try:
            pstat.stop(channel)
            pstat.cell_off(channel)
        except Exception as exc:  # noqa: BLE001 - every channel is tried
            failures.append(f"channel {channel}: the cell could not be disconnected ({exc})")
    return failures


def _run_workers(store: Store, run_id: int, groups: list[list[int]],
                 states: dict[int, ChannelState], seed: int | None, speed: float | None,
                 on_cycle) -> None:
    """One process per group of channels (each its own clock, lab and database
    connection); progress is read back from the store."""
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for group in groups:
        args = (str(store.data_dir), run_id, {n: asdict(states[n]) for n in group}, seed, speed,
                os.getpid())
        procs.append(ctx.Process(target=_worker, args=args, name=f"channels {group}"))
    try:
        for proc in procs:
            proc.start()
        while any(p.is_alive() for p in procs):
            for proc in procs:
                proc.join(timeout=0.5 / len(procs))
            if on_cycle:
                for row in store.channels(run_id):
                    on_cycle(row.channel, max(row.cycle - 1, 0))
    except BaseException:  # a SIGTERM that only reached us, or this process failing: no
        for proc in procs:  # worker runs on unwatched; each disconnects its cells and says so
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            if proc.pid is not None:
                proc.join()
        raise
    failed = [p for p in procs if p.exitcode not in (0, None)]
    for proc in failed:
        store.add_alarm(run_id, 0.0, "error", "engine",
                        f"the process of {proc.name} ended with exit code {proc.exitcode}")


def _worker(data_dir: str, run_id: int, states: dict, seed: int | None,
            speed: float | None, parent_pid: int) -> None:
    """A worker process: its channels of the run, to their end."""
    claims.join_workers(data_dir, run_id)  # first: a resume waits for it until we end
    if not _die_with_parent(parent_pid):
        return  # the parent died while this worker was starting: touch nothing

    def interrupt(_signum, _frame):
        # one stop is enough: a second signal (Ctrl-C reaches the whole process group, then
        # the parent passes SIGTERM on) must not cut the cells' disconnection short
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    store = Store(data_dir)
    try:
        run = store.run(run_id)
        station = load_station(text=run.station_text)
        proto = load(run.sequence_path, station, store, text=run.sequence_text)
        mine = {int(n): ChannelState.from_dict(s) for n, s in states.items()}
        _run_group(store, run_id, proto, station, mine, seed, speed, None)
    except KeyboardInterrupt:
        pass  # every channel has recorded itself as interrupted
    finally:
        store.close()


def _die_with_parent(parent_pid: int) -> bool:
    """If the parent is killed (even with SIGKILL), Linux sends this worker SIGTERM, so
    it disconnects its cells and stops instead of running on unwatched. False if the
    parent is already gone (it died before the request could be made)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    return os.getppid() == parent_pid


def _mark_lost(store: Store, run_id: int, rows: list[Channel], status: str
               ) -> list[Channel]:
    """Channels whose process died without saying so, marked failed; the rows as now."""
    for i, row in enumerate(rows):
        if row.status in ("running", "pending") and status == "completed":
            rows[i] = row = replace(row, status="failed", message="its worker process died")
            store.update_channel(run_id, row.channel, "failed", row.message, row.cycle,
                                 row.step_count, row.t_s, row.state)
    store.flush()
    return rows


def _summary(store: Store, run_id: int, proto: pr.Protocol, rows: list[Channel]) -> dict:
    """Per channel: status, completed cycles, last discharge capacity, mean CE (the first
    cycle left out: formation), retention; and the film's conductivities where the
    protocol measured them (the first such channel's also at the top level)."""
    from lipon_hw.analysis.cycles import CycleStats, summarize
    from lipon_hw.celltest.cycle_counter import reference_discharge_Ah
    from lipon_hw.celltest.results import film_figures

    plans = {p.channel: p for p in proto.channels}
    summary: dict = {"virtual_s": max((r.t_s for r in rows), default=0.0)}
    out = []
    for row in rows:
        stats = [CycleStats(**c) for c in store.cycles(run_id, row.channel)]
        plan = plans.get(row.channel)
        figures = summarize(stats, from_cycle=stats[0].cycle + 1 if stats else None)
        ref = reference_discharge_Ah(stats, plan.program.termination.reference_cycle
                                     if plan else 1)
        last = figures.last_discharge_Ah
        entry = {"channel": row.channel, "status": row.status, "message": row.message,
                 "cycles": max(row.cycle - 1, 0), "steps": row.step_count,
                 "last_discharge_uAh": _scaled(last, 1e6),
                 "mean_coulombic_efficiency": figures.mean_coulombic_efficiency,
                 "retention": last / ref if last and ref else None}
        if plan is not None:
            film = film_figures(store, run_id, plan)
            entry.update(film)
            if film and "film_thickness_nm" not in summary:
                summary.update(film)
        out.append(entry)
    summary["channels"] = out
    return summary


def _scaled(value: float | None, k: float) -> float | None:
    return None if value is None else value * k


def _outcome(rows: list[Channel]) -> str:
    ended: dict[str, list[int]] = {}
    for row in rows:
        ended.setdefault(row.status, []).append(row.channel)
    return "; ".join(f"{status}: channel{'s' * (len(nums) > 1)} "
                     f"{', '.join(map(str, nums))}" for status, nums in sorted(ended.items()))


def mount_cells(lab, proto: pr.Protocol, store: Store, seed: int | None,
                snapshots: dict, run_id: int) -> dict[int, object]:
    """Each channel's cell physics (restored to its snapshot), the cells loaded by the
    lab's `cells` hook from the sample's films or the protocol's declared cell."""
    cells = {}
    for plan in proto.channels:
        spec = plan.cell
        if spec.kind is not None or plan.sample is not None:
            try:
                lab.cells.mount(store, run_id, proto.potentiostat, plan.channel, spec,
                                plan.sample, seed)
            except ValueError as exc:
                raise InputError(f"channel {plan.channel}: cannot build a simulated "
                                 f"{spec.kind or 'full'} cell ({exc})") from None
        cells[plan.channel] = lab.cells.channel(proto.potentiostat, plan.channel)
        if snapshots.get(plan.channel):
            cells[plan.channel].restore(snapshots[plan.channel])
    return cells


def _plots(store: Store, run_id: int, notify) -> None:
    """The first channel's plots beside the database (`lipon-hw report RUN` draws every
    channel's). A plot that cannot be drawn is reported, never fatal."""
    from lipon_hw.celltest.results import write_cell_plots

    try:
        write_cell_plots(store, run_id, plots_dir(store.data_dir, run_id), max_channels=1)
    except Exception as exc:  # noqa: BLE001 - plots are a by-product of the run
        if notify:
            notify(f"warning: plots of run {run_id} were not written ({exc})")

