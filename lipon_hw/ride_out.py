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

from collections.abc import Callable, Iterable

from lipon_hw.errors import LinkLost
from lipon_hw.link_health import RIDE_OUT_MAX_S

#: what a run that does not wait for a port says after the port's own failure
NOT_WAITED = "it has not answered since the run started, so the run does not wait for it"


class Patience:
    """Tries again on the run clock from now: after `first_s`, then twice as long each time
    up to `max_s`, the last try at the deadline now + `grace_s` itself. The deadline is
    kept, not the time left: a wait of grace − (now − since) can round to nothing and
    stall a simpy clock, while deadline − now lands on the deadline exactly."""

    def __init__(self, env, grace_s: float, first_s: float = 1.0,
                 max_s: float = RIDE_OUT_MAX_S):
        self.env, self.since, self.deadline = env, env.now, env.now + grace_s
        self._wait, self._max_s = first_s, max_s

    @property
    def spent(self) -> bool:
        """The deadline has come: no more tries."""
        return self.env.now >= self.deadline

    @property
    def elapsed_s(self) -> float:
        return self.env.now - self.since

    def next_try(self, links: Iterable = ()):
        """Wait for the next try (a generator: `yield from` it). The last, at the deadline,
        first re-opens `links`, the Links the try goes through, whatever their own back-off:
        30 s apart by then, a Link would refuse a try that comes before its next re-open."""
        last = self.env.now + self._wait >= self.deadline
        yield self.env.timeout(min(self._wait, self.deadline - self.env.now))
        self._wait = min(2 * self._wait, self._max_s)
        if last:
            for link in links:
                link.reopen_now()


def ride_out(env, attempt: Callable, grace_s: float, never_answered: Callable[[], bool],
             on_hold: Callable[[LinkLost], None], on_back: Callable[[float], None],
             again: Callable | None = None, links: Callable[[], Iterable] = tuple):
    """`attempt()`'s result, ridden through lost links (see the module docstring). The
    last try, at the grace, first re-opens the `links()` the attempt goes through
    (`Patience.next_try`: a grace longer than LINK_GRACE_S could otherwise end on the Link's
    refusal, the instrument back meanwhile). A generator: `yield from` it."""
    first, patience = None, None
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
                first, patience = exc, Patience(env, grace_s)
                on_hold(exc)
            elif patience.spent:
                raise LinkLost(f"{first}; still lost after {patience.elapsed_s:.0f} s of "
                               f"trying again ({exc})") from None
            yield from patience.next_try(links())
            continue
        if first is not None:
            on_back(patience.elapsed_s)
        return result
