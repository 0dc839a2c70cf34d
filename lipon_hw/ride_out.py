"""A lost link waited for on the run clock: one loop for a deposition's steps
(`deposition.link_watch`) and a sheet screening's probe sites (`screening.session`).

`attempt()` (a generator) is run; a LinkLost it raises is waited out (1, 2, 4 …
RIDE_OUT_MAX_S between tries) for up to `grace_s` of the run clock, then `again()` (what
a retry needs first: the process restored, the channel stopped; it may return a
generator, which is run) and `attempt()` anew. The outage is told as it starts
(`on_hold(error)`) and as it ends (`on_back(seconds)`); one that lasts raises LinkLost in
the words of its first failure and its last. A port that has never answered
(`never_answered()`, asked when the outage starts) is not waited for: a wrong address or
an instrument switched off fails the run at once, as a safe state reports such a port
after its first try (`safe_retry`).
"""

from __future__ import annotations

from collections.abc import Callable

from lipon_hw.errors import LinkLost
from lipon_hw.link_health import RIDE_OUT_MAX_S

#: what a run that does not wait for a port says after the port's own failure
NOT_WAITED = "it has not answered since the run started, so the run does not wait for it"


def ride_out(env, attempt: Callable, grace_s: float, never_answered: Callable[[], bool],
             on_hold: Callable[[LinkLost], None], on_back: Callable[[float], None],
             again: Callable | None = None):
    """`attempt()`'s result, ridden through lost links (see the module docstring). A
    generator: `yield from` it."""
    first, since, wait = None, 0.0, 1.0
    while True:
        try:
            if first is not None and again is not None:
                more = again()
                if more is not None:
                    yield from more
            result = yield from attempt()
        except LinkLost as exc:
            if first is None and never_answered():
                raise LinkLost(f"{exc}; {NOT_WAITED}") from None
            if first is None:
                first, since = exc, env.now
                on_hold(exc)
            elif env.now >= since + grace_s:  # a deadline, not a difference: a wait of
                # grace_s - (now - since) can round to nothing and stall the clock
                raise LinkLost(f"{first}; still lost after {env.now - since:.0f} s of "
                               f"trying again ({exc})") from None
            yield env.timeout(min(wait, since + grace_s - env.now))  # the last try at grace_s
            wait = min(2 * wait, RIDE_OUT_MAX_S)
            continue
        if first is not None:
            on_back(env.now - since)
        return result
