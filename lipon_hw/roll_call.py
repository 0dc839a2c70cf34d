"""`lipon-hw station --check`: before a run, ask every instrument of a station who it is.

Each instrument is opened on its address and asked its identity (`identify()`: model,
serial number and firmware, as its protocol reports them), one after the other — the
instruments of one bus share its link, as in a run. The answer says, per instrument, what
it answered or why it did not (the link's own sentence: refused, timed out, garbled), how
long the question took, and the health its link was left in. Nothing is switched or set:
identity queries only. A simulated station is asked through the same drivers and links as
a run's, its lab held at time zero.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from lipon_hw.errors import LiponError
from lipon_hw.station import Station

#: link health from best to worst: an instrument on several links shows its worst
_HEALTH_ORDER = ("ok", "retrying", "lost")


@dataclass(frozen=True)
class Answer:
    instrument: str
    driver: str
    address: str
    identity: str | None  # None: it did not answer
    problem: str | None  # why it did not, in one sentence
    link_health: str  # ok, retrying, lost
    wall_ms: float

    @property
    def answered(self) -> bool:
        return self.identity is not None

    def to_dict(self) -> dict:
        return {**asdict(self), "wall_ms": round(self.wall_ms, 1)}


def roll_call(station: Station) -> list[Answer]:
    """Every instrument of `station`, asked its identity."""
    lab = station.connect(lambda: 0.0)
    answers = []
    try:
        for name, spec in station.spec.instruments.items():
            t0 = time.perf_counter()
            identity, problem = None, None
            try:
                identity = str(lab.instruments[name].identify())
            except LiponError as exc:
                problem = str(exc)
            except Exception as exc:  # noqa: BLE001 - a driver's bug is one instrument's answer
                problem = f"its driver failed ({type(exc).__name__}: {exc})"
            health = max((lab.pool.link(address).health.value for address in spec.addresses),
                         key=_HEALTH_ORDER.index)
            answers.append(Answer(name, spec.driver, spec.address, identity, problem, health,
                                  (time.perf_counter() - t0) * 1e3))
    finally:
        lab.close()
    return answers


def table(answers: list[Answer]) -> list[str]:
    """One line per instrument, for a terminal."""
    width = max((len(a.instrument) for a in answers), default=0)
    return [f"{a.instrument:<{width}}  {'ok ' if a.answered else 'NO '} "
            f"{a.identity if a.answered else a.problem}  [{a.address}, link {a.link_health}, "
            f"{a.wall_ms:.0f} ms]" for a in answers]


def verdict(station: Station, answers: list[Answer]) -> str | None:
    """None when every instrument answered; else one sentence naming those that did not."""
    silent = [a for a in answers if not a.answered]
    if not silent:
        return None
    return (f"{len(silent)} of {len(answers)} instruments of {station.spec.name} did not "
            f"answer: " + "; ".join(f"{a.instrument} at {a.address} ({a.problem})"
                                     for a in silent))
