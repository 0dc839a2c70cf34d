"""A cell test's channels spread over worker processes, one group each (each its own
clock, lab and database connection), watched from the run's own process, which reads
their progress back from the store, and their samples for the live view through a queue
(`relay`). A worker whose channels ran works out their film figures (the impedance fits of
the run's summary) and sends them back, so that the fits are made in parallel, not one
after the other by the run's process. A worker dies with its parent: if the engine is
killed, even with SIGKILL, each worker disconnects its cells and stops."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict

from lipon_hw import interrupts
from lipon_hw.celltest import relay
from lipon_hw.celltest.channels import ChannelState
from lipon_hw.celltest.groups import not_safe, not_safe_after, run_group
from lipon_hw.celltest.plan import load
from lipon_hw.engine import claims
from lipon_hw.errors import InstrumentError, LiponError, RunTakenOver
from lipon_hw.station import load_station
from lipon_hw.store import Store


def run_workers(store: Store, run_id: int, groups: list[list[int]],
                 states: dict[int, ChannelState], seed: int | None, speed: float | None,
                 on_cycle, poll: Callable[[], None] | None = None) -> dict[int, dict]:
    """One process per group of channels (each its own clock, lab and database
    connection); progress (`on_cycle`, if given) is read back from the store, and `poll`
    (the alarm relay) is called, each time the loop that watches the workers goes round.
    Returns the film figures of the channels whose workers ran them to their end."""
    ctx = multiprocessing.get_context("spawn")
    before = set(store.alarms(run_id))
    inbox = ctx.Queue(relay.MAX_BATCHES)
    figures_box = ctx.SimpleQueue()  # read as the workers go: a big batch waits for no one
    unsafe_box = ctx.SimpleQueue()  # the cells a worker taken over could not store as unsafe
    figures: dict[int, dict] = {}
    publishing = ctx.RawValue("b", 1 if store.taps else 0)
    procs = []
    for group in groups:
        args = (str(store.data_dir), run_id, {n: asdict(states[n]) for n in group}, seed, speed,
                os.getpid(), inbox, publishing, figures_box, store.epoch(run_id), unsafe_box)
        procs.append(ctx.Process(target=_worker, args=args, name=f"channels {group}"))
    try:
        for proc in procs:
            proc.start()
        while any(p.is_alive() for p in procs):
            for proc in procs:
                proc.join(timeout=0.5 / len(procs))
            relay.pass_on(store, inbox, publishing)
            _take_figures(figures_box, figures)
            store.keep_claims()  # this process only watches: its claims kept all the same
            if poll is not None:
                poll()
            if on_cycle:
                for channel, cycle in store.channel_cycles(run_id):
                    on_cycle(channel, max(cycle - 1, 0))
        relay.pass_on(store, inbox, publishing)
    except BaseException as exc:  # a Ctrl-C or SIGTERM, or this process failing: no
        for proc in procs:  # worker runs on unwatched; each disconnects its cells and says so
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            while proc.pid is not None and proc.is_alive():
                proc.join(0.1)
                relay.drain(inbox)  # a worker exits once its queued samples are taken
        taken = isinstance(exc, RunTakenOver)
        unsafe = _unsafe(store, run_id, before, unsafe_box, taken)
        if unsafe:  # whatever stopped the run, its one sentence says what is not safe
            raise (not_safe(unsafe, exc) if taken else not_safe_after(unsafe, exc)) from exc
        raise
    failed = [p for p in procs if p.exitcode not in (0, None)]
    try:
        for proc in failed:
            store.add_alarm(run_id, 0.0, "error", "engine",
                            f"the process of {proc.name} ended with exit code {proc.exitcode}")
    except RunTakenOver as exc:  # the workers' alarms were refused too: said here
        unsafe = _unsafe(store, run_id, before, unsafe_box, taken=True)
        if unsafe:
            raise not_safe(unsafe, exc) from None
        raise
    if failed:  # what a worker could not make safe is the run's end, in its own words
        unsafe = _unsafe(store, run_id, before, unsafe_box, taken=False)
        ended = ", ".join(p.name for p in failed)
        raise not_safe_after(unsafe, None) if unsafe else \
            InstrumentError(f"the process of {ended} ended abnormally")
    _take_figures(figures_box, figures)
    return figures


def _unsafe(store: Store, run_id: int, before: set, unsafe_box, taken: bool) -> list[str]:
    """What the workers, all ended, could not make safe: the sentences they sent instead
    of the alarms a take-over refused (`unsafe_box`), and unless the run was `taken` over
    (its alarms since are its new driver's), their safe state's error alarms (`before`:
    the run's alarms as they started)."""
    unsafe: list[str] = []
    with contextlib.suppress(LiponError):  # a store that fails has the run's error said
        if not taken:
            unsafe = [a.message for a in store.alarms(run_id) if a not in before and
                      a.reaction == "safe state" and a.severity == "error"]
    with contextlib.suppress(EOFError, OSError):
        while not unsafe_box.empty():
            unsafe += [u for u in unsafe_box.get() if u not in unsafe]
    return unsafe


def _take_figures(box, figures: dict[int, dict]) -> None:
    """The film figures the workers have sent so far, into `figures`; their fits kept here
    too, for the run's plots."""
    with contextlib.suppress(EOFError, OSError):
        if box.empty():
            return
        from lipon_hw.celltest.results import keep_fits  # the analysis: once a worker has sent

        while not box.empty():
            sent, fits = box.get()
            figures.update(sent)
            keep_fits(fits)


def _worker(data_dir: str, run_id: int, states: dict, seed: int | None,
            speed: float | None, parent_pid: int, outbox=None, publishing=None,
            figures_box=None, epoch: int | None = None, unsafe_box=None) -> None:
    """A worker process: its channels of the run, to their end; then, unless stopped,
    their film figures into `figures_box` (and, stopped by a take-over of the run with a
    cell it could not disconnect, those cells' sentences into `unsafe_box`: its alarms
    saying so were refused). Its writes are its engine's: under that engine's
    driver `epoch` (`Store.follow`)."""
    held = claims.join_workers(data_dir, run_id)  # first: a resume waits for it until we end
    if not _die_with_parent(parent_pid):
        return  # the parent died while this worker was starting: touch nothing

    def interrupt(_signum, _frame):
        # one stop is enough: a second signal (Ctrl-C reaches the whole process group, then
        # the parent passes SIGTERM on) must not cut the cells' disconnection short
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):  # never inside a simulated instrument
        signal.signal(sig, interrupts.deferring(interrupt))
    store = Store(data_dir)
    store.after_write.append(held.keep)  # its claim on the run: still held
    if epoch is not None:
        store.follow(run_id, epoch)
    samples = None if outbox is None else relay.SampleRelay(outbox, publishing)
    if samples is not None:
        store.taps.append(samples)
    try:
        run = store.run(run_id)
        station = load_station(text=run.station_text)
        proto = load(run.sequence_path, station, store, text=run.sequence_text,
                     resuming=run_id)  # the run's own picks
        mine = {int(n): ChannelState.from_dict(s) for n, s in states.items()}
        run_group(store, run_id, proto, station, mine, seed, speed, None)
        if figures_box is not None:
            if samples is not None:
                samples.send(run_id)  # the live view's last samples before the fits
            from lipon_hw.celltest.results import film_figures, kept_fits  # the analysis: here only

            plans = {p.channel: p for p in proto.channels}
            figures = {n: film_figures(store, run_id, plans[n]) for n in sorted(mine)}
            figures_box.put((figures, kept_fits()))
    except KeyboardInterrupt:
        pass  # every channel has recorded itself as interrupted
    except LiponError as exc:  # stored as its alarms already: the parent reads them back
        if getattr(exc, "unsafe", None) and unsafe_box is not None:  # (unless refused)
            unsafe_box.put(exc.unsafe)
        sys.exit(1)
    finally:
        if samples is not None:
            samples.close(run_id)
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
