"""A sheet screening's own part of the lifecycle (`engine.lifecycle`): what a new run
claims and adds to the store, where a resumed run takes up, and `execute` — the prober
steps across the sheet, every site of a touchdown measures its cell side by side, each
cell is binned, and the touchdown's results are committed with a checkpoint. On every
way out the probes are lifted and every site's cell disconnected before anything else.

Exactly once: a touchdown's results and its checkpoint are one transaction, keyed by
(run, row, col); a resumed run skips the touchdowns whose cells are all stored and
measures the rest, so every cell of the sheet is stored once, whatever killed the run.
A site that made no contact is touched again (`retouch`: the probes lifted and lowered,
only the sites without contact measured again); still none, the cell is binned as a
tester fault, never as a bad cell. So is a cell whose channel refused its tests (a
command or script answered with an error, a channel fault ending the script): the sheet
goes on. No touchdown puts the needles on cells while a site's channel is not known to be
off: a channel that refused to switch its cell off as the needles went up is tried again
before they come down, on the run clock for up to LINK_GRACE_S, then the sheet fails in
its words.
"""

from __future__ import annotations

import contextlib

from lipon_hw.engine import lifecycle
from lipon_hw.engine.claims import port_identity
from lipon_hw.engine.claims import sample as sample_claim
from lipon_hw.engine.lifecycle import Interrupted, Outcome, Resumption, Running, uninterruptible
from lipon_hw.engine.operator import OperatorWish
from lipon_hw.engine.ownership import Resource
from lipon_hw.errors import InputError, InstrumentError, LinkLost, LiponError, RunTakenOver
from lipon_hw.kinds import RunOptions
from lipon_hw.link_health import LINK_GRACE_S, channel_links, instrument_links
from lipon_hw.ride_out import Patience, ride_out
from lipon_hw.safe_retry import SAFE_PATIENCE_S, clock_moves_on
from lipon_hw.screening.layout import Touchdown, touchdowns
from lipon_hw.screening.measure import SiteResult, measure_site, physical_limit_s
from lipon_hw.screening.recipe import ScreeningPlan
from lipon_hw.screening.safety import make_prober_safe
from lipon_hw.store import Store
from lipon_hw.store_schema import ScreenCell, Sheet

RESUMABLE = ("running", "interrupted", "failed", "aborted")
#: run-clock seconds between two looks at the stage while it moves
STAGE_POLL_S = 0.05


def claims(station, plan: ScreeningPlan) -> list[Resource]:
    """The stage's port, the potentiostat channels the sites use, the sheet (exclusive)."""
    out = {}
    for address in station.instrument(plan.stage).addresses:
        key = f"port {port_identity(address)}"
        out[key] = Resource(key, f"the prober stage {plan.stage} ({address}) is in use by "
                                 "{holder}; one run at a time drives a prober")
    addresses = station.instrument(plan.potentiostat).addresses
    for i in range(plan.card.rows):
        for j in range(plan.card.cols):
            n = plan.card.channel(i, j)
            key = f"port {port_identity(addresses[n - 1])}" if len(addresses) > 1 else \
                f"port {port_identity(addresses[0])} channel {n}"
            out[key] = Resource(key, f"channel {n} of {plan.potentiostat} is in use by "
                                     "{holder}; one run at a time drives a channel")
    return [*sorted(out.values(), key=lambda r: r.key), sample_claim(plan.sheet.id, False)]


def opening(store: Store, station, plan: ScreeningPlan, options: RunOptions
            ) -> lifecycle.Opening:
    if options.sample_id is not None:
        raise InputError(f"a sample to deposit on (--sample) is for recipes; {plan.path} is "
                         "a screening recipe, which names its sheet (sheet: id)")
    known = store.sheet(plan.sheet.id)
    s = plan.sheet
    if known is not None and (known.rows, known.cols) != (s.rows, s.cols):
        raise InputError(f"{plan.path}: sheet {s.id!r} is stored as {known.rows}×{known.cols} "
                         f"cells (run {known.run_id}), not {s.rows}×{s.cols}")

    def prepare(run_id: int) -> None:
        store.add_sheet(Sheet(s.id, s.roll, s.rows, s.cols, s.pitch_x_mm, s.pitch_y_mm,
                              run_id))

    return lifecycle.Opening(claims(station, plan), s.id, [], prepare)


def resumption(store: Store, owned, run, station, plan: ScreeningPlan) -> Resumption:
    """From the last touchdown stored: those whose cells are all stored are not measured
    again (a touchdown's results and its checkpoint were committed together)."""
    owned.take(claims(station, plan))
    point = store.last_checkpoint(run.id)
    done = store.screened_positions(run.id)
    every = touchdowns(plan.sheet, plan.card)
    left = [td.index for td in every if not td.positions() <= done]
    if not left:
        return Resumption(point.t_s if point else 0.0, {}, "", finished=True)
    return Resumption(point.t_s if point else 0.0, {"touchdowns_done": point.step_idx
                                                    if point else 0},
                      f"resumed at touchdown {left[0]} of "
                      f"{len(every)}: {len(done)} cells stored")


def execute(running: Running) -> Outcome:
    plan, store, run_id = running.plan, running.store, running.run_id
    point = running.resumed
    env = running.env(point.t_s if point else 0.0)
    lab = running.lab(env)
    prober = Prober(env, lab, store, run_id, plan, running.watch, resumed=point is not None)
    status, message = "failed", ""
    during: BaseException | None = None  # the error the run stops on, if any
    try:
        with lifecycle.ends_run_on_failure(store, run_id):
            if lab.sheets is not None:  # the simulated lab puts the sheet on its chuck
                lab.sheets.load(store, run_id, plan.sheet, running.seed)
        process = env.process(prober.run(store.screened_positions(run_id)))
        env.run(process)
        status, message = process.value
    except KeyboardInterrupt:
        status, message = "interrupted", lifecycle.OPERATOR_STOP
        during = Interrupted(message)
        raise during from None
    except LiponError as exc:
        message, during = str(exc), exc
        raise
    except Exception as exc:
        message, during = f"{type(exc).__name__}: {exc}", exc
        raise
    finally:
        with uninterruptible():
            failures = prober.make_safe(resumed=point is not None)
            try:
                if failures:
                    status = "failed"
                    unsafe = lifecycle.unsafe_sentence(failures)
                    message = f"{message}; {unsafe}" if message else unsafe
                try:
                    summary = summarize(store, run_id, plan, env.now, prober)
                    store.set_status(run_id, status, message, summary)
                except RunTakenOver as exc:  # the run's end is its new driver's to store;
                    if failures:  # what is not safe is said all the same, here
                        raise InstrumentError(message if str(exc) in message else
                                              f"{message}; and {exc}") from None
                    raise
            finally:
                lab.close()
        if failures:  # whatever stopped the run, its one sentence says what is not safe
            raise lifecycle.not_safe_error(message, during) from during
    return Outcome(status, message, summary, env.now)


class Prober:
    """The stepping of one screening: touchdown after touchdown, sites in parallel."""

    def __init__(self, env, lab, store: Store, run_id: int, plan: ScreeningPlan, watch,
                 resumed: bool = False):
        self.env, self.lab, self.store, self.run_id, self.plan = env, lab, store, run_id, plan
        self.watch = watch
        self.resumed = resumed  # a resumed run: its links answered in an earlier process
        self.stage = lab.instruments[plan.stage]
        self.pstat = lab.instruments[plan.potentiostat]
        self.busy_s: list[float] = []  # each measured cell's time on its site
        self.touchdowns_made = 0
        self._operator = OperatorWish(store, run_id)
        #: channels whose cell-off failed as the needles went up: what they said
        self._not_off: dict[int, LiponError] = {}

    def run(self, done: set[tuple[int, int]]):
        plan = self.plan
        plan_tds = touchdowns(plan.sheet, plan.card)
        for td in plan_tds:
            if td.positions() <= done:
                continue
            wish = self._operator()
            while wish == "pause":
                yield self.env.timeout(1.0)
                wish = self._operator()
            if wish == "abort":
                self.store.requests.take(self.run_id)
                return "aborted", f"stopped by the operator before touchdown {td.index}"
            cells = yield from self._touchdown(td, done)
            self.store.add_screen_cells(cells)
            self.store.checkpoint(self.run_id, self.env.now, td.index, {"touchdown": td.index})
            self.store.flush()
            done |= td.positions()
            if self.watch.progress:
                self.watch.progress(td.index, len(plan_tds), len(done))
        return "completed", f"{len(done)} cells of sheet {plan.sheet.id} screened"

    def _touchdown(self, td: Touchdown, done: set[tuple[int, int]]):
        env, plan = self.env, self.plan
        todo = [t for t in td.touches if (t.row, t.col) not in done]
        yield from self._move(td.x_mm, td.y_mm)
        results: dict[int, SiteResult] = {}
        attempts: dict[int, int] = {}
        for attempt in range(plan.retouch + 1):
            yield from self._switch_off_the_rest()
            yield from self._stage(lambda: self._wait_stage(self.stage.contact(True)))
            self.touchdowns_made += 1
            if plan.settle_s:
                yield env.timeout(plan.settle_s)
            sites = [t for t in todo if t.site not in results or not results[t.site].contact]
            procs = {t.site: env.process(self._site(t.channel)) for t in sites}
            yield env.all_of(list(procs.values()))
            for t in sites:
                results[t.site] = procs[t.site].value
                attempts[t.site] = attempt + 1
            self._disconnect(t.channel for t in sites)
            yield from self._stage(lambda: self._sent(self.stage.contact(False)))
            if all(r.contact for r in results.values()):
                break
        cells = []
        for t in todo:
            r = results[t.site]
            binned = plan.bins.classify(r.metrics, measured=r.contact)
            if r.contact:
                self.busy_s.append(r.busy_s)
            b = binned.bin
            cells.append(ScreenCell(self.run_id, plan.sheet.id, t.row, t.col, t.site, td.index,
                                    env.now, attempts[t.site], "ok" if r.contact else "lost",
                                    r.metrics, b.soft_bin, b.name, b.hard_bin, b.hard_name,
                                    b.passed, binned.rule if r.contact else r.why or binned.rule))
        return cells

    def _site(self, channel: int):
        """`measure_site`, ridden through a lost link of its channel: the site waits for it
        on the run clock (1, 2, 4 … RIDE_OUT_MAX_S between tries, the needles down, the
        other sites measuring), then stops whatever its channel still runs and measures
        its cell again from the start; an outage ridden out is an alarm as it starts
        (`hold`) and as it ends (`resume`). Lost longer than LINK_GRACE_S, or a port that
        has not answered since the run started: the sheet fails, in the outage's words."""
        def stopped() -> None:  # what the channel ran when its link went
            self.pstat.stop(channel)
            self.pstat.cell_off(channel)

        try:
            return (yield from ride_out(
                self.env, lambda: measure_site(self.env, self.pstat, channel, self.plan),
                LINK_GRACE_S, lambda: not self.resumed and any(
                    not link.answered for link in self._links(channel)),
                lambda exc: self._site_alarm(channel, "warning", f"{exc}: the site waits for "
                                             f"the link (up to {LINK_GRACE_S:.0f} s), then "
                                             "measures its cell again", "hold"),
                lambda s: self._site_alarm(channel, "info", f"the link answered again after "
                                           f"{s:.0f} s: the cell was measured again", "resume"),
                again=stopped, links=lambda: self._links(channel)))
        except InstrumentError as exc:  # it refused: its cell is the tester's fault
            self._site_alarm(channel, "warning", f"{exc}: its cell is not measured at this "
                                                 "touch (a tester fault if no touch measures "
                                                 "it)", None)
            return SiteResult(contact=False, why=str(exc))

    def _links(self, channel: int) -> list:
        """The Link a probe channel's exchanges go through (`channel_links`); looked up only
        when a link is lost."""
        return channel_links(instrument_links(self.lab, self.plan.potentiostat), channel)

    def _site_alarm(self, channel: int, severity: str, message: str,
                    reaction: str | None) -> None:
        self.store.add_alarm(self.run_id, self.env.now, severity,
                             f"{self.plan.potentiostat} channel {channel}", message,
                             reaction=reaction)

    def _move(self, x_mm: float, y_mm: float):
        """The stage to (x, y) with the probes up, waited for on the run clock."""
        yield from self._stage(lambda: self._wait_stage(self.stage.move_to_mm(x_mm, y_mm)))

    def _stage(self, act):
        """`act()` (a stage move and its wait, a generator), ridden through a lost link of
        the stage: waited for on the run clock for up to LINK_GRACE_S (alarms `hold` and
        `resume` from the stage), then the stage must be where it was left
        (`still_where_left`: a controller reset meanwhile fails the sheet) and the move is
        sent again (its targets are absolute: sent twice, it ends where sent once)."""
        links = instrument_links(self.lab, self.plan.stage)
        stage = self.plan.stage
        return (yield from ride_out(
            self.env, act, LINK_GRACE_S,
            lambda: not self.resumed and bool(links) and not links[0].answered,
            lambda exc: self.store.add_alarm(
                self.run_id, self.env.now, "warning", stage, f"{exc}: the prober waits for "
                f"the link (up to {LINK_GRACE_S:.0f} s), then goes on from where the stage "
                "was", reaction="hold"),
            lambda s: self.store.add_alarm(
                self.run_id, self.env.now, "info", stage, f"the link answered again after "
                f"{s:.0f} s, the stage where it was left: the prober goes on",
                reaction="resume"),
            again=self.stage.still_where_left, links=lambda: links))

    @staticmethod
    def _sent(expected_s: float):
        """A move not waited for (the needles lifted: the next move queues behind it)."""
        return expected_s
        yield  # a generator, as `_stage` takes

    def _wait_stage(self, expected):
        """The time a stage move takes (it says), then until it rests, on the run clock."""
        yield self.env.timeout(max(0.0, expected or 0.0))
        while self.stage.moving():
            yield self.env.timeout(STAGE_POLL_S)

    def _disconnect(self, channels) -> None:
        """Each site's cell off before the needles go up (which disconnects it too); one
        that refuses, or whose link is lost, is kept to be switched off before the needles
        come down again (`_switch_off_the_rest`)."""
        for channel in channels:
            try:
                self.pstat.cell_off(channel)
            except (InstrumentError, LinkLost) as exc:
                if channel not in self._not_off:
                    self._not_off[channel] = exc
                    self._site_alarm(channel, "warning", f"{exc}: the needles go up; it is "
                                     "switched off before they come down again (tried for "
                                     f"up to {LINK_GRACE_S:.0f} s)", "hold")

    def _switch_off_the_rest(self):
        """The channels `_disconnect` could not switch off, stopped and switched off now,
        tried on the run clock (`Patience`: 1, 2, 4 … 30 s apart, the last try at
        LINK_GRACE_S re-opening a lost port) each; one still refusing fails the sheet, in
        its words, the needles up."""
        for channel, first in list(self._not_off.items()):
            patience = Patience(self.env, LINK_GRACE_S)
            while True:
                try:
                    self.pstat.stop(channel)
                    self.pstat.cell_off(channel)
                    break
                except (InstrumentError, LinkLost) as exc:
                    if patience.spent:
                        raise InstrumentError(
                            f"{first}; {self.plan.potentiostat} channel {channel} still not "
                            f"switched off after {patience.elapsed_s:.0f} s of trying again "
                            f"({exc}), so the needles stay up") from None
                    yield from patience.next_try(self._links(channel))
            del self._not_off[channel]
            self._site_alarm(channel, "info", f"switched off after {patience.elapsed_s:.0f} "
                             "s: the needles come down", "resume")

    def make_safe(self, resumed: bool) -> list[str]:
        """Every site's cell off, the needles up (`safety`), retried as the clock moves on;
        the operator hears at once what is still being tried. Returns what failed."""
        def retrying(failed: dict[str, str]) -> None:
            with contextlib.suppress(LiponError):
                self.store.add_alarm(self.run_id, self.env.now, "error", self.plan.stage,
                                     f"safe state: FAILED so far for {', '.join(failed)}; "
                                     f"trying again for up to {SAFE_PATIENCE_S / 60:.0f} min",
                                     reaction="safe state")

        done, failed = make_prober_safe(self.lab, self.plan,
                                        lambda s: clock_moves_on(self.env, s),
                                        on_retry=retrying, answered_before=resumed)
        with contextlib.suppress(LiponError):
            self.store.add_alarm(self.run_id, self.env.now, "error" if failed else "info",
                                 self.plan.stage, "safe state: " + "; ".join(
                                     [*(f"{d}" for d in done), *(f"FAILED {f}" for f in failed)]),
                                 reaction="safe state")
        return failed


def summarize(store: Store, run_id: int, plan: ScreeningPlan, t_s: float,
              prober: Prober | None = None) -> dict:
    """Cells measured, yield, bins, throughput and the test time per cell against the
    physical limit."""
    cells = store.screen_cells(run_id)
    measured = [c for c in cells if c.contact == "ok"]
    passed = [c for c in cells if c.passed]
    by_hard: dict[str, int] = {}
    for c in cells:
        key = f"{c.hard_bin} {c.hard_bin_name}"
        by_hard[key] = by_hard.get(key, 0) + 1
    limit = physical_limit_s(plan)
    n_touchdowns = len(touchdowns(plan.sheet, plan.card))
    busy = sorted(prober.busy_s) if prober and prober.busy_s else []
    median_busy = busy[len(busy) // 2] if busy else None
    return {"sheet": plan.sheet.id, "cells": plan.sheet.rows * plan.sheet.cols,
            "cells_screened": len(cells), "tester_faults": len(cells) - len(measured),
            "passed": len(passed),
            "yield": len(passed) / len(cells) if cells else None,
            "yield_of_measured": len(passed) / len(measured) if measured else None,
            "hard_bins": by_hard, "sites": plan.card.sites,
            "touchdowns": n_touchdowns,
            # the share of site-touchdowns that landed on a cell (the rest fell off the sheet)
            "site_utilisation": plan.sheet.rows * plan.sheet.cols /
            (n_touchdowns * plan.card.sites),
            "cells_per_hour": len(cells) / t_s * 3600 if t_s > 0 and cells else None,
            "test_time_per_cell_s": median_busy,
            "physical_limit_per_cell_s": limit,
            "test_time_over_limit": median_busy / limit if median_busy and limit else None,
            "virtual_s": t_s}
