"""A safe state that failed, tried again: bounded, in rounds. Every instrument is tried
once, in the order given (power first), each lost link re-opened at once (`Link.reopen_now`:
no back-off); then those that failed are tried again, round after round, the run's clock
moving on between rounds, so one dead instrument never keeps the others waiting. Only an
instrument whose link has answered is tried again — in this lab's life, or in an earlier
process of a resumed run (a port that never answered — a run that could not start — is
reported after its first try). Used for a deposition's instruments at the run's end
(`deposition.safety`) and a prober's (`screening.safety`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import simpy

from lipon_hw.errors import LiponError, NeedsPerson
from lipon_hw.links import Link

#: how long (the run's clock) a safe state keeps trying the instruments that failed it, and
#: the longest wait between its rounds (1, 2, 4 … s)
SAFE_PATIENCE_S = 1800.0
SAFE_RETRY_MAX_S = 30.0


@dataclass
class SafeCall:
    """One instrument's safe state: its name, the call, and the links it goes through."""

    name: str
    call: Callable[[], None]
    links: list[Link]


def retry_safe_state(calls: list[SafeCall], wait: Callable[[float], None],
                     patience_s: float = SAFE_PATIENCE_S,
                     on_retry: Callable[[dict[str, str]], None] | None = None,
                     answered_before: bool = False) -> dict[str, str]:
    """Each call once, in order; then those that failed with the instrument's or its link's
    failure (LiponError, but NeedsPerson: a person's to mend) and whose link has
    answered before, again after `wait(s)` lets the run's clock move on s seconds (1, 2,
    4 … SAFE_RETRY_MAX_S), for up to `patience_s` of waiting (`answered_before`: every
    link answered in an earlier process of the run — a resume — so all are tried again).
    `on_retry(failed)` is told once, before the first wait. Returns the name → failure
    of those that never got through (empty: all made safe). Never raises for an
    instrument: one never spares the others."""
    failed: dict[str, str] = {}
    pending, waited, pause = list(calls), 0.0, 1.0
    while True:
        again = []
        for safe in pending:
            for link in safe.links:  # every try, the first too: no back-off
                link.reopen_now()
            try:
                safe.call()
            except NeedsPerson as exc:  # said at once: no retry can help
                failed[safe.name] = str(exc)
            except LiponError as exc:  # the instrument or its link
                failed[safe.name] = str(exc)
                if answered_before or any(link.answered for link in safe.links):
                    again.append(safe)
            except Exception as exc:  # noqa: BLE001 - a bug: said, not tried again
                failed[safe.name] = str(exc)
            else:
                failed.pop(safe.name, None)
        if not again or waited + pause > patience_s:
            return failed
        if on_retry is not None and waited == 0.0:
            on_retry(dict(failed))
        wait(pause)
        waited += pause
        pause = min(2 * pause, SAFE_RETRY_MAX_S)
        pending = again


def clock_moves_on(env, seconds: float) -> None:
    """The run's clock moves on while a safe state waits to try again, and nothing else
    runs on it (the run has ended): wall time too on a real-time clock."""
    if isinstance(env, simpy.rt.RealtimeEnvironment):
        time.sleep(seconds * env.factor)  # factor: wall seconds per clock second
    env._now = env.now + seconds  # noqa: SLF001 - simpy has no public setter
