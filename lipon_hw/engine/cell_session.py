"""Starting and resuming cell tests: protocol + station + store + clock → channels.

On a simulated station the engine first puts the protocol's cells on their channels,
as an operator loads cells into the holders: built from the sample's film stack when
the channel names a sample (the fab and the test bench are one world), else from the
protocol's cell kind (the seeds' stack), else the station's own cells are used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lipon_hw.engine import protocol as pr
from lipon_hw.engine.cycling import ChannelState, CyclingResult, run_channels
from lipon_hw.engine.runner import Interrupted, _uninterruptible
from lipon_hw.engine.session import make_env
from lipon_hw.errors import InputError, LiponError
from lipon_hw.station import Station, load_station
from lipon_hw.store import Store

RESUMABLE = ("running", "interrupted", "failed")
CHANNEL_RESUMABLE = ("pending", "running", "interrupted")


def sample_capacity_Ah(store: Store, sample_id: str, area_cm2: float) -> float | None:
    """A sample's capacity from the cathode layers of its film stack, if it has any."""
    try:
        layers = store.film_stack(sample_id)
    except LiponError:
        return None
    uah_cm2 = sum(layer["thickness_nm"] * 1e-3 * pr.CATHODE_UAH_CM2_PER_UM[layer["material"]]
                  for layer in layers if layer["material"] in pr.CATHODE_UAH_CM2_PER_UM)
    return uah_cm2 * area_cm2 * 1e-6 if uah_cm2 > 0 else None


def load(sequence: str, station: Station, store: Store | None, text: str | None = None
         ) -> pr.Protocol:
    capacity = (lambda s, a: sample_capacity_Ah(store, s, a)) if store is not None else None
    return pr.load_protocol(sequence, station, text=text, sample_capacity=capacity)


def start_cycling(sequence: str, data_dir: str | Path, station_path: str | None = None,
                  seed: int | None = None, speed: float | None = None,
                  notify: Callable[[str], None] | None = None,
                  on_start: Callable[[int, pr.Protocol], None] | None = None,
                  on_cycle=None) -> CyclingResult:
    station = load_station(station_path)
    store = Store(data_dir)
    try:
        proto = load(sequence, station, store)
        if speed is not None and speed <= 0:
            raise InputError(f"--speed must be above 0, not {speed:g}")
        seed = seed if seed is not None else (station.spec.sim.seed if station.simulated
                                              else None)
        run_id = store.create_run(proto.name, "cycling", str(sequence), proto.text,
                                  station.text, seed, None)
        for plan in proto.channels:
            store.add_channel(run_id, plan.channel, proto.potentiostat, plan.sample,
                              plan.program.name)
        if on_start:
            on_start(run_id, proto)
        states = {plan.channel: ChannelState() for plan in proto.channels}
        return _drive(store, run_id, proto, station, states, seed, speed, 0.0, {}, on_cycle)
    finally:
        store.close()


def resume_cycling(run_id: int, data_dir: str | Path, speed: float | None = None,
                   notify: Callable[[str], None] | None = None,
                   on_start: Callable[[int, pr.Protocol], None] | None = None,
                   on_cycle=None) -> CyclingResult:
    """Every channel that had not ended continues from its last step boundary."""
    store = Store(data_dir)
    try:
        run = store.run(run_id)
        if run.status not in RESUMABLE:
            raise InputError(f"run {run_id} is {run.status}; only an unfinished run can resume")
        station = load_station(text=run.station_text)
        proto = load(run.sequence_path, station, store, text=run.sequence_text)
        stored = {c["channel"]: c for c in store.channels(run_id)}
        states, snapshots = {}, {}
        for plan in proto.channels:
            row = stored.get(plan.channel)
            if row is None or row["status"] not in CHANNEL_RESUMABLE:
                continue
            state = ChannelState.from_dict(row["state"])
            if station.simulated:
                store.rewind_channel(run_id, plan.channel, state.t_s)
            state.step_count = max(state.step_count,
                                   store.max_step_count(run_id, plan.channel))
            states[plan.channel] = state
            snapshots[plan.channel] = state.cell
        proto.channels = [p for p in proto.channels if p.channel in states]
        if not proto.channels:
            raise InputError(f"run {run_id} has no channel left to resume")
        t0 = min(s.t_s for s in states.values())
        store.set_status(run_id, "running", f"resumed from t = {t0:.0f} s")
        store.add_alarm(run_id, t0, "info", "engine",
                        f"resumed channels {', '.join(map(str, states))} from their last step")
        if on_start:
            on_start(run_id, proto)
        return _drive(store, run_id, proto, station, states, run.seed, speed, t0, snapshots,
                      on_cycle)
    finally:
        store.close()


def _drive(store: Store, run_id: int, proto: pr.Protocol, station: Station,
           states: dict[int, ChannelState], seed: int | None, speed: float | None, t0: float,
           snapshots: dict, on_cycle) -> CyclingResult:
    env = make_env(station, speed, t0)
    wall0 = time.monotonic()
    lab = station.connect(lambda: env.now, seed=seed)
    status, message, channels = "failed", "", []
    try:
        pstat = lab.instruments[proto.potentiostat]
        sim_cells = mount_cells(lab, proto, store, seed, snapshots) if lab.sim else {}
        channels = run_channels(env, store, run_id, proto, pstat, states, sim_cells,
                                realtime=not lab.sim or speed is not None, on_cycle=on_cycle,
                                should_stop=lambda: "abort" in store.take_requests(run_id))
        status, message = "completed", _outcome(channels)
    except KeyboardInterrupt:
        status, message = "interrupted", "stopped by the operator (Ctrl-C / SIGTERM)"
        raise Interrupted(message) from None
    except LiponError as exc:
        message = str(exc)
        raise
    except Exception as exc:
        message = f"internal error: {exc!r}"
        raise
    finally:
        with _uninterruptible():
            try:
                lab.instruments[proto.potentiostat].make_safe()
            except (LiponError, OSError, KeyError) as exc:
                message += f"; making {proto.potentiostat} safe failed ({exc})"
            summary = {"channels": [ch.summary() for ch in channels], "virtual_s": env.now}
            store.set_status(run_id, status, message, summary)
            lab.close()
    return CyclingResult(run_id, status, message, env.now, time.monotonic() - wall0, summary)


def _outcome(channels) -> str:
    ended = {}
    for ch in channels:
        ended.setdefault(ch.status, []).append(ch.number)
    return "; ".join(f"{status}: channel{'s' * (len(nums) > 1)} "
                     f"{', '.join(map(str, nums))}" for status, nums in sorted(ended.items()))


def mount_cells(lab, proto: pr.Protocol, store: Store, seed: int | None,
                snapshots: dict) -> dict[int, object]:
    """The simulated cells of the protocol's channels (restored to their snapshots)."""
    from lipon_hw.sim.cells import DEFAULT_AREA_CM2, cell_from_films, default_layers

    cells = {}
    for plan in proto.channels:
        spec = plan.cell
        if spec.kind is not None or plan.sample is not None:
            kind = spec.kind or "full"
            layers = _sample_layers(store, plan.sample) if plan.sample else \
                _with_thickness(default_layers(kind), spec.lipon_thickness_nm)
            rng = np.random.default_rng([seed or 0, plan.channel])
            area = spec.area_cm2 or DEFAULT_AREA_CM2.get(kind, 0.049)
            try:
                cell = cell_from_films(kind, layers, area, spec.temperature_C or 25.0,
                                       spec.faults, rng, name=f"channel {plan.channel}",
                                       params=spec.params or None)
            except ValueError as exc:
                raise InputError(f"channel {plan.channel}: cannot build a simulated {kind} "
                                 f"cell ({exc})") from None
            lab.sim.mount_cell(proto.potentiostat, plan.channel, cell)
        cells[plan.channel] = lab.sim.cell(proto.potentiostat, plan.channel)
        if snapshots.get(plan.channel):
            cells[plan.channel].restore(snapshots[plan.channel])
    return cells


def _sample_layers(store: Store, sample_id: str) -> list[dict]:
    layers = store.film_stack(sample_id)
    if not layers:
        raise InputError(f"sample {sample_id!r} has no layers in {store.path}")
    return [layer["properties"].get("sim_truth") or
            {"material": layer["material"], "thickness_nm": layer["thickness_nm"]}
            for layer in layers]


def _with_thickness(layers: list[dict], lipon_nm: float | None) -> list[dict]:
    if lipon_nm is None:
        return layers
    return [{**x, "thickness_nm": lipon_nm} if x["material"] in ("LiPON", "Li3PO4") else x
            for x in layers]
