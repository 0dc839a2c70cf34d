"""Some channels of a cell test on one clock, in this process: the station connected, the
cells loaded where the lab can load them (the simulated lab's `cells` hook: built from
the sample's film stack when the channel names a sample, else from the protocol's cell
kind, else the station's own; on hardware the cells are whatever sits in the holders),
the channels run to their end with the operator's wishes read from the store, and every
cell disconnected on the way out, whatever ended it."""

from __future__ import annotations

from dataclasses import replace

from lipon_hw import collector
from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest.all_channels import run_channels
from lipon_hw.celltest.channels import ChannelState, stop_reason
from lipon_hw.engine.lifecycle import (
    OPERATOR_STOP,
    Interrupted,
    make_env,
    not_safe_error,
    uninterruptible,
    unsafe_sentence,
)
from lipon_hw.engine.operator import OperatorWish
from lipon_hw.errors import InputError, InstrumentError, LiponError, RunTakenOver
from lipon_hw.link_health import instrument_links
from lipon_hw.station import Station
from lipon_hw.store import Store


def split(channels: list[int], workers: int) -> list[list[int]]:
    n = max(1, min(workers, len(channels)))
    return [channels[k::n] for k in range(n)]


def run_group(store: Store, run_id: int, proto: pr.Protocol, station: Station,
               states: dict[int, ChannelState], seed: int | None, speed: float | None,
               on_cycle, operator=None) -> None:
    """Some channels on one clock, in this process; their cells disconnected at the end.
    `operator`: the operator's wish, asked between stretches of the clock (default: the
    store's requests, `OperatorWish`)."""
    proto = replace(proto, channels=[p for p in proto.channels if p.channel in states])
    t0 = min(states[p.channel].t_s for p in proto.channels)
    env = make_env(station, speed, t0)
    lab = station.connect(lambda: env.now, seed=seed)
    pstat = lab.instruments[proto.potentiostat]
    during: BaseException | None = None  # what stops the channels, if anything does
    try:
        snapshots = {n: s.cell for n, s in states.items()}
        cells = mount_cells(lab, proto, store, seed, snapshots, run_id) if lab.cells else {}
        with collector.rarely():  # the lab, its cells and all before: never scanned again
            run_channels(env, store, run_id, proto, pstat, states, cells,
                         realtime=not station.in_process or speed is not None,
                         on_cycle=on_cycle, operator=operator or OperatorWish(store, run_id),
                         links=instrument_links(lab, proto.potentiostat))
    except BaseException as exc:
        during = exc
        raise
    finally:
        with uninterruptible():
            failures = disconnect(lab, proto.potentiostat, [p.channel for p in proto.channels])
            try:  # a store that fails here does not keep the lab from being closed
                for failure in failures:
                    store.add_alarm(run_id, env.now, "error", proto.potentiostat, failure,
                                    reaction="safe state")
                store.flush()
            except RunTakenOver as exc:  # nothing of the run is this engine's to store now:
                if failures:  # what is not safe is said here, before anything else
                    raise not_safe(failures, exc) from None
                raise
            finally:
                lab.close()
        if failures:  # a cell not known to be off is said, whatever ended the channels
            raise not_safe_after(failures, during) from during


def not_safe_after(failures: list[str], during: BaseException | None) -> LiponError:
    """The error of channels whose cells are not all known to be off: the sentence of what
    stopped them (if anything did: never "completed"), then what is not safe; in the class
    (and exit code) of that error: Interrupted after a Ctrl-C."""
    unsafe = unsafe_sentence(failures)
    if during is None:
        return InstrumentError(unsafe)
    stopped = OPERATOR_STOP if isinstance(during, KeyboardInterrupt | Interrupted) else \
        stop_reason(during)
    return not_safe_error(f"{stopped}; {unsafe}", during)


def not_safe(failures: list[str], taken: RunTakenOver) -> InstrumentError:
    """The cells not known to be off, said in the error itself (`unsafe`: one sentence
    each), for a run taken over whose store takes none of this engine's alarms."""
    error = InstrumentError(f"{unsafe_sentence(failures)}; and {taken}")
    error.unsafe = list(failures)
    return error


#: tries of each channel's disconnection at the run's end, each re-opening a lost link at
#: once (no back-off: the clock may no longer move, and the safe state is worth a try)
SAFE_TRIES = 3


def disconnect(lab, potentiostat: str, channels: list[int]) -> list[str]:
    """Every channel of this group stopped with its cell off, whatever ended the run (the
    channels normally did it themselves; other groups' channels are not touched), each
    tried SAFE_TRIES times, a lost link re-opened for each try. Returns what failed, one
    sentence per channel."""
    pstat, links = lab.instruments[potentiostat], instrument_links(lab, potentiostat)
    failures = []
    for channel in channels:
        for attempt in range(SAFE_TRIES):
            for link in links:
                link.reopen_now()
            try:
                pstat.stop(channel)
                pstat.cell_off(channel)
                break
            except Exception as exc:  # noqa: BLE001 - every channel is tried
                if attempt + 1 == SAFE_TRIES:
                    failures.append(f"channel {channel}: the cell could not be disconnected "
                                    f"({exc}; tried {SAFE_TRIES} times)")
    return failures


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
