"""A safe state that failed, tried again: bounded, each try re-opening the instrument's lost
links at once (`Link.reopen_now`: no back-off), the run's clock moving on between tries.
Used for a deposition's instruments at the run's end (`deposition.runner.Engine.make_safe`)
and a cell test's potentiostat channels (`celltest.groups.disconnect`)."""

from __future__ import annotations

from collections.abc import Callable

from lipon_hw.errors import LiponError
from lipon_hw.links import Link

#: how long (the run's clock) a safe state keeps trying an instrument that failed it, and
#: the longest wait between its tries (1, 2, 4 … s)
SAFE_PATIENCE_S = 1800.0
SAFE_RETRY_MAX_S = 30.0



def retry_safe_state(call: Callable[[], None], links: list[Link],
                     wait: Callable[[float], None],
                     patience_s: float = SAFE_PATIENCE_S) -> None:
    """`call()` (an instrument's safe state) until it succeeds, bounded: after a failure
    `wait(s)` lets the run's clock move on s seconds (1, 2, 4 … SAFE_RETRY_MAX_S), every
    link in `links` is let re-open at once (`reopen_now`), and the call is tried again, for
    up to `patience_s` of waiting; then the last failure is raised. Only the instrument's
    and its link's failures (LiponError) are tried again."""
    waited, pause = 0.0, 1.0
    for link in links:  # the first try too: a link lost moments ago is tried at once
        link.reopen_now()
    while True:
        try:
            call()
            return
        except LiponError:  # the instrument or its link; a bug is raised at once
            if waited + pause > patience_s:
                raise
        wait(pause)
        waited += pause
        pause = min(2 * pause, SAFE_RETRY_MAX_S)
        for link in links:
            link.reopen_now()
