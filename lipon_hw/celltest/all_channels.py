"""A cell test's channels on one clock: each its own simpy process (`channels.Channel`),
the potentiostat's rules watched for them all (`pstat_watch`), the operator's wishes
passed on between stretches of the clock, and every cell disconnected, whatever ended
the run early."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import simpy

from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest.channels import Channel, ChannelState, stop_reason
from lipon_hw.celltest.polling import longest_poll_s
from lipon_hw.celltest.pstat_watch import IN_FAULT, PotentiostatWatch
from lipon_hw.engine.lifecycle import OPERATOR_STOP
from lipon_hw.link_health import clock_per_wall_s
from lipon_hw.store import Store


def run_channels(env: simpy.Environment, store: Store, run_id: int, proto: pr.Protocol,
                 pstat, states: dict[int, ChannelState], cell_physics: dict[int, object],
                 realtime: bool, on_cycle=None,
                 operator: Callable[[], str | None] | None = None,
                 links: Sequence = ()) -> list[Channel]:
    """Run every channel to its end; Ctrl-C stops them all, each leaving its cell off.
    operator() gives the operator's standing wish — None, "pause", "continue" or "abort" —
    asked between stretches of the clock (an hour of virtual time, a wall second of real
    time at any speed).
    `links` are the potentiostat's (`link_health.instrument_links`), for its link health."""
    # a real-time clock's waits are wall seconds, whatever its speed
    per_wall_s = clock_per_wall_s(env) or 1.0
    max_poll = proto.poll_every_s or longest_poll_s(realtime, per_wall_s)
    window_poll = proto.poll_every_s or longest_poll_s(realtime, per_wall_s, judged=True)
    watch = PotentiostatWatch(store, run_id, proto.potentiostat, proto.rules, links, pstat)
    channels = [Channel(env, store, run_id, plan, pstat, states[plan.channel], max_poll,
                        cell_physics.get(plan.channel), on_cycle, watch, window_poll)
                for plan in proto.channels]
    watch.channels = channels
    if proto.rules:  # a resumed run: its channels that had ended in fault still count
        watch.earlier_in_fault = sum(row.status in IN_FAULT for row in store.channels(run_id)
                                     if row.channel not in states)
    processes = [env.process(ch.process()) for ch in channels]
    if isinstance(env, simpy.rt.RealtimeEnvironment):
        env.sync()
    stretch = min(per_wall_s, 3600.0) if isinstance(env, simpy.rt.RealtimeEnvironment) \
        else 3600.0
    # one wait for every channel's end, made once: a condition remade of the live
    # channels each time one ends cost O(channels) per end, O(channels²) for a bank (a
    # shard of 10,000 channels stalled minutes at its end). A channel that fails ends it
    # at once with its error, as it did the condition of the live ones. (A process, not
    # the AllOf itself: a condition nested in the AnyOf below would have its callbacks
    # taken off the channels when a stretch's timeout fires first.)
    ended = env.process(_every_end(env, processes))
    try:
        while not ended.processed:
            env.run(until=simpy.AnyOf(env, [ended, env.timeout(stretch)]))
            wish = operator() if operator is not None else None
            for ch in channels:
                if wish == "abort":
                    ch.request_stop()
                elif wish in ("pause", "continue"):
                    ch.request_pause(wish == "pause")
    except BaseException as exc:
        _stop_all(channels, processes, exc)
        raise
    return channels


def _every_end(env: simpy.Environment, processes: list):
    yield simpy.AllOf(env, processes)


def _stop_all(channels: list[Channel], processes: list, cause: BaseException) -> None:
    """Whatever ended the run early: every cell is disconnected first, then every channel's
    end is stored; one that cannot be stored does not keep the others from theirs (the
    cause is raised after)."""
    if isinstance(cause, KeyboardInterrupt):
        status, message = "interrupted", OPERATOR_STOP
    else:
        status, message = "failed", f"stopped with the run ({stop_reason(cause)})"
    for ch, proc in zip(channels, processes, strict=True):
        if proc.is_alive:
            ch.status, ch.message = status, message
        ch.ended_by_run = True
        ch._disconnect()
    for ch in channels:
        try:
            ch._record_end()
        except Exception:  # noqa: BLE001, S112 - the store; the cause is raised after
            continue
