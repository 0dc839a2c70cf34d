"""A cell test's own part of the lifecycle (`engine.lifecycle`): the channels' rows of a
new run, where a resumed run's channels take up, and `execute` — the channels run in one
process or several (`groups`, `workers`), then the run judged by how its channels ended
and summarised from the store. `start_cycling` and `resume_cycling` are the lifecycle
with this kind, for Python callers."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest.channels import ENDED, ChannelState, stop_reason
from lipon_hw.celltest.groups import run_group, split
from lipon_hw.celltest.workers import run_workers
from lipon_hw.engine import claims, lifecycle
from lipon_hw.engine.lifecycle import (
    OPERATOR_STOP,
    Interrupted,
    Outcome,
    Resumption,
    Running,
    RunResult,
    Watch,
    uninterruptible,
    unsafe_sentence,
)
from lipon_hw.engine.trouble import AlarmRelay
from lipon_hw.errors import InputError, InstrumentError, RunTakenOver, StoreError
from lipon_hw.kinds import RunOptions
from lipon_hw.station import Station
from lipon_hw.store import Channel, Store

__all__ = ["start_cycling", "resume_cycling"]


RESUMABLE = ("running", "interrupted", "failed", "aborted")
CHANNEL_RESUMABLE = ("pending", "running", "paused", "interrupted", "aborted")


def start_cycling(sequence: str, data_dir: str | Path, station_path: str | None = None,
                  seed: int | None = None, speed: float | None = None,
                  notify: Callable[[str], None] | None = None,
                  on_start: Callable[[int, pr.Protocol], None] | None = None,
                  on_cycle=None, workers: int | None = None, cluster=None) -> RunResult:
    """Run a cell-test protocol (the lifecycle with this kind, for Python callers);
    `cluster`: a connected `lipon_hw.cluster.connect.Cluster` to spread the channels over."""
    from lipon_hw.celltest.kind import KIND

    return lifecycle.start(KIND, sequence, RunOptions(str(data_dir), station_path, seed, speed,
                                                      workers, cluster=cluster),
                           Watch(notify, on_start, on_cycle))


def resume_cycling(run_id: int, data_dir: str | Path, speed: float | None = None,
                   notify: Callable[[str], None] | None = None,
                   on_start: Callable[[int, pr.Protocol], None] | None = None,
                   on_cycle=None, workers: int | None = None, cluster=None) -> RunResult:
    """Every channel that had not ended continues from its last step boundary."""
    from lipon_hw.celltest.kind import KIND

    return lifecycle.resume(KIND, run_id, RunOptions(str(data_dir), speed=speed,
                                                     workers=workers, cluster=cluster),
                            Watch(notify, on_start, on_cycle))


def opening(store: Store, station: Station, proto: pr.Protocol, options: RunOptions,
            sequence: str) -> lifecycle.Opening:
    if options.sample_id is not None:
        raise InputError(f"a sample to deposit on (--sample) is for recipes; {sequence} is "
                         "a cell-test protocol, which names each channel's sample itself "
                         "(sample: per channel)")

    def prepare(run_id: int) -> None:
        for plan in proto.channels:
            store.add_channel(run_id, plan.channel, proto.potentiostat, plan.sample,
                              plan.program.name)

    return lifecycle.Opening(claims.cell_test(station, proto), None, [], prepare)


def resumption(store: Store, owned, run, station: Station, proto: pr.Protocol
               ) -> Resumption:
    """Each channel that had not ended, from its last step boundary. Where the station's
    world lives in this process its cells roll back to that boundary (what came after
    never was); real cells lived on, so their clock goes on from the last sample stored.
    Step counts stay monotonic either way."""
    claims.take_cell_resume(owned, store, run.id, station, proto, CHANNEL_RESUMABLE)
    stored = {c.channel: c for c in store.channels(run.id)}
    states = {}
    for plan in proto.channels:
        row = stored.get(plan.channel)
        if row is None or row.status not in CHANNEL_RESUMABLE:
            continue
        if row.sample_id != plan.sample:  # a cell picked from a screening newer than the run
            raise InputError(f"run {run.id} channel {plan.channel} tested {row.sample_id}, "
                             f"but its protocol now picks {plan.sample} from a newer "
                             "screening of the sheet: the run cannot go on with other cells "
                             "(start a new run; from_screening.run pins a screening)")
        states[plan.channel] = take_up(store, run.id, plan.channel,
                                       ChannelState.from_dict(row.state), station.in_process)
    if not states:  # killed after its channels ended, before its status was written
        return Resumption(0.0, {}, "", finished=True)
    return Resumption(min(s.t_s for s in states.values()), states,
                      f"resumed channels {', '.join(map(str, states))} from their last step")


def take_up(store: Store, run_id: int, channel: int, state: ChannelState,
            in_process: bool) -> ChannelState:
    """A channel taken up from its last step boundary stored (`state`). Where the world
    lives in the process that runs it, its cell rolls back to that boundary and what the
    store holds after it is forgotten; real cells lived on, so their clock goes on from
    the last sample stored. Step counts stay monotonic either way."""
    if in_process:
        store.rewind_channel(run_id, channel, state.t_s)
    else:
        state.t_s = max(state.t_s, store.last_cell_sample_t(run_id, channel))
    state.step_count = max(state.step_count, store.max_step_count(run_id, channel))
    return state


def execute(running: Running) -> Outcome:
    """Run the channels in `workers` processes (default: one per core for a run in
    virtual time, one for real time; one for a run with rules on the potentiostat as a
    whole) — or in as many shards on the run's Dask cluster (default: one per worker
    thread) — then judge and summarise the run from the store."""
    store, run_id, proto = running.store, running.run_id, running.plan
    if running.resumed is None:
        states = {plan.channel: ChannelState() for plan in proto.channels}
    else:
        states = running.resumed.state
    if not states:
        status, message, summary = _end_run(store, run_id, proto, "completed", "")
        return Outcome(status, message, summary, summary["virtual_s"])
    cluster = running.cluster
    # rules on the potentiostat as a whole need one view of all its channels: one process
    workers = 1 if proto.rules else running.workers or (
        cluster.slots if cluster is not None else
        1 if running.realtime else os.cpu_count() or 1)
    groups = split([p.channel for p in proto.channels if p.channel in states], workers)
    status, message = "failed", ""
    figures: dict[int, dict] = {}  # the film figures the shards worked out themselves
    try:
        if cluster is not None:  # shards on a Dask cluster (`lipon_hw.cluster`)
            from lipon_hw.cluster.campaign import run_shards

            relay = AlarmRelay(store, run_id)
            try:
                for report in run_shards(cluster, store, run_id, groups, states,
                                         running.seed, running.speed,
                                         running.watch.progress, relay.poll):
                    figures.update(report["figures"])
            finally:
                relay.poll(force=True)
        elif len(groups) == 1:
            run_group(store, run_id, proto, running.station, states, running.seed,
                       running.speed, running.watch.progress)
        else:  # their alarms are stored by the workers: read back as the run goes on
            relay = AlarmRelay(store, run_id)
            try:
                figures = run_workers(store, run_id, groups, states, running.seed,
                                      running.speed, running.watch.progress, relay.poll)
            finally:
                relay.poll(force=True)
        status = "completed"
    except KeyboardInterrupt:
        status, message = "interrupted", OPERATOR_STOP
        raise Interrupted(message) from None
    except Interrupted as exc:  # a Ctrl-C the channels said more of (a cell not safe)
        status, message = "interrupted", str(exc)
        raise
    except Exception as exc:
        message = stop_reason(exc)
        raise
    finally:
        with uninterruptible():
            try:
                status, message, summary = _end_run(store, run_id, proto, status, message,
                                                    set(states), figures)
            except RunTakenOver as exc:  # the run's end is its new driver's to store
                if message.startswith(unsafe_sentence([])):
                    raise InstrumentError(message) from None  # (the take-over said in it)
                if message and str(exc) not in message:  # what stopped it, not stored
                    raise RunTakenOver(f"{exc}; this engine stopped: {message}") from None
                raise
            except StoreError as exc:  # what was buffered cannot be written
                lost = store.drop_unwritten_samples()
                failure = stop_reason(exc)
                if failure not in message:
                    message = f"{message}; {failure}" if message else failure
                message += f" ({lost} buffered samples and readings were not stored)"
                status = "failed" if status == "completed" else status
                status, message, summary = _end_run(store, run_id, proto, status, message,
                                                    set(states), figures)
    return Outcome(status, message, summary, summary["virtual_s"])


def _end_run(store: Store, run_id: int, proto: pr.Protocol, status: str, message: str,
             meant: set[int] = frozenset(), figures: dict | None = None
             ) -> tuple[str, str, dict]:
    """The run's final status, message and summary, from what its channels stored. A run
    whose channels all ran to their end (`status` completed) is judged by them. `figures`:
    channels' film figures worked out already (by the cluster's shards or the worker
    processes)."""
    rows = _mark_lost(store, run_id, store.channels(run_id), status, meant)
    if status == "completed":
        status, message = _judged(rows)
        store.requests.take(run_id)
    summary = _summary(store, run_id, proto, rows, figures or {})
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


def _mark_lost(store: Store, run_id: int, rows: list[Channel], status: str,
               meant: set[int] = frozenset()) -> list[Channel]:
    """Channels whose process died without saying so, or never ran one that this engine
    was to run (`meant`), marked failed — never judged by a status left from before;
    the rows as now."""
    for i, row in enumerate(rows):
        unrun = row.channel in meant and row.status not in ENDED
        if (row.status in ("running", "pending") or unrun) and status == "completed":
            why = "its worker process died" if not unrun else \
                f"its worker process ended without running it (it was {row.status})"
            rows[i] = row = replace(row, status="failed", message=why)
            store.update_channel(run_id, row.channel, "failed", row.message, row.cycle,
                                 row.step_count, row.t_s, row.state)
    store.flush()
    return rows


def _summary(store: Store, run_id: int, proto: pr.Protocol, rows: list[Channel],
             films: dict) -> dict:
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
            film = films[row.channel] if row.channel in films else \
                film_figures(store, run_id, plan)
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
