"""A prober made safe: every site's cell switched off, then the needles lifted off the
sheet — each tried once, then those that failed again in rounds as the run's clock moves
on (`safe_retry`), so a dead potentiostat link never keeps the needles down. Used at the
end of every screening (`session`) and by the guard when the engine died (`kind`)."""

from __future__ import annotations

from lipon_hw.link_health import instrument_links
from lipon_hw.safe_retry import SAFE_PATIENCE_S, SafeCall, retry_safe_state


def make_prober_safe(lab, plan, wait, patience_s: float = SAFE_PATIENCE_S,
                     on_retry=None, answered_before: bool = False) -> tuple[list[str], list[str]]:
    """(what was made safe, what failed with why), one phrase each; never raises."""
    pstat, stage = lab.instruments[plan.potentiostat], lab.instruments[plan.stage]
    pstat_links, stage_links = instrument_links(lab, plan.potentiostat), \
        instrument_links(lab, plan.stage)
    card = plan.card
    channels = [card.channel(i, j) for i in range(card.rows) for j in range(card.cols)]

    def off(channel: int):
        def call() -> None:
            pstat.stop(channel)
            pstat.cell_off(channel)
        return call

    calls = [SafeCall(f"{plan.potentiostat} channel {n}", off(n), pstat_links)
             for n in channels]
    calls.append(SafeCall(f"{plan.stage} (needles up)", stage.make_safe, stage_links))
    failed = retry_safe_state(calls, wait, patience_s, on_retry, answered_before)
    done = []
    if not any(name.startswith(f"{plan.potentiostat} ") for name in failed):
        done.append(f"{plan.potentiostat} channels {channels[0]}–{channels[-1]} off")
    if f"{plan.stage} (needles up)" not in failed:
        done.append(f"{plan.stage} needles up")
    return done, [f"{name}: {why}" for name, why in failed.items()]
