"""Link health as a recorded quantity, for every kind of run: `<instrument>.link_health`
is 0 ok, 1 retrying, 2 lost — the worst of the instrument's links, as each `Link` keeps it
(`lipon_hw.links`). Interlock rules read it like any other quantity; a run stores it when
it changes and alarms each change in these words (`link to ADDRESS lost: …`)."""

from __future__ import annotations

from collections.abc import Iterable

from lipon_hw.links import Health, Link

QUANTITY = "link_health"
#: how long (run clock) a run rides out a lost link by default (a USB adapter
#: re-enumerating, a garbled burst, an instrument busy for a moment)
LINK_GRACE_S = 60.0
#: the longest wait between two tries of a lost link while it is ridden out
RIDE_OUT_MAX_S = 30.0
#: on a real-time clock, the least wall time an instrument's end may go unseen before it
#: counts as lost (`wire_slack_s`)
WIRE_SLACK_WALL_S = 2.0
CODES = {Health.OK: 0, Health.RETRYING: 1, Health.LOST: 2}
WORDS = {0: "restored", 1: "retrying", 2: "lost"}


def clock_per_wall_s(env) -> float | None:
    """Seconds of a real-time run clock a wall second (its `--speed`; simpy's `factor` is
    the wall seconds per second of it); None for a virtual clock."""
    factor = getattr(env, "factor", None)
    return None if factor is None else 1.0 / factor


def wire_slack_s(env, run_clock_s: float) -> float:
    """How long (run clock) something an instrument sends may go unseen past when it was
    due: `run_clock_s`, or WIRE_SLACK_WALL_S of wall time where that is longer on a
    real-time clock. A simulated lab run fast answers through sockets and threads whose
    delays are the wall's (at --speed 1000 a minute of its clock passes in 60 ms, less
    than a loaded host may take to hear from it); on hardware (speed 1) `run_clock_s` is
    what counts."""
    speed = clock_per_wall_s(env)
    return run_clock_s if speed is None else max(run_clock_s, WIRE_SLACK_WALL_S * speed)


def channel_links(links: list[Link], channel: int) -> list[Link]:
    """The Link a potentiostat channel's exchanges go through, as a list: the one port all
    channels share, or the channel's own (one port a channel); empty if not known."""
    if len(links) == 1:
        return links[:1]
    return links[channel - 1:channel] if 0 < channel <= len(links) else []


def instrument_links(lab, instrument: str) -> list[Link]:
    """The links of a connected lab's instrument, in the order of its addresses (a
    potentiostat with one port per channel: channel n is the n-th)."""
    return [lab.pool.link(address) for address in lab.station.instrument(instrument).addresses]


def worst(links: Iterable[Link]) -> int:
    """The worst health code of `links` (0 for none)."""
    return max((CODES[link.health] for link in links), default=0)


def errors(links: Iterable[Link]) -> str:
    """The last errors of `links`, joined."""
    return "; ".join(e for e in (link.last_error for link in links) if e)


def change_alarm(code: int, address: str, error: str) -> tuple[str, str]:
    """(severity, message) of the alarm for a link's health becoming `code`."""
    detail = f": {error}" if code and error else ""
    return ("error" if code == 2 else "warning" if code else "info",
            f"link to {address} {WORDS[code]}{detail}")
