"""How a run's alarms read, the same everywhere: one line per alarm (`lipon-hw alarms`,
the `alarm:` lines a run prints as they happen, the run's log file), their count by
severity, the summary line at a run's end and the `alarms` field of `--json`."""

from __future__ import annotations

import re
from collections.abc import Iterable

from lipon_hw.errors import InputError
from lipon_hw.store_schema import SEVERITIES, Alarm

_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")


def clock(t_s: float) -> str:
    """The run clock as h:mm:ss (hours unbounded: a three-week cell test is 504:00:00)."""
    whole = max(int(t_s), 0)
    h, rem = divmod(whole, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


def parse_clock(text: str, what: str = "--since") -> float:
    """Seconds of run clock from `90`, `90.5`, `1:30` (m:ss) or `1:02:03` (h:mm:ss)."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        m = _CLOCK.match(text)
        if m is None:
            raise InputError(f"{what} {text!r} is not a time of the run clock: write seconds "
                             "(90) or h:mm:ss (0:01:30)") from None
        h, mm, ss = int(m[1] or 0), int(m[2]), float(m[3])
        if mm >= 60 and m[1] is not None or ss >= 60:
            raise InputError(f"{what} {text!r}: minutes and seconds run from 0 to 59") from None
        seconds = h * 3600 + mm * 60 + ss
    if not 0 <= seconds < float("inf"):
        raise InputError(f"{what} {text!r} must be a time from the run's start, 0 or later")
    return seconds


def line(alarm: Alarm) -> str:
    """`0:12:30 hold    interlock: <message> (rule: <rule>; reaction: hold)`."""
    said = [f"rule: {alarm.rule}"] if alarm.rule else []
    said += [f"reaction: {alarm.reaction}"] if alarm.reaction else []
    tail = f" ({'; '.join(said)})" if said else ""
    return f"{clock(alarm.t_s)} {alarm.severity:<7} {alarm.source}: {alarm.message}{tail}"


def counts(alarms: Iterable[Alarm]) -> dict[str, int]:
    """Alarms by severity, least severe first, only those present."""
    found: dict[str, int] = {}
    for alarm in alarms:
        found[alarm.severity] = found.get(alarm.severity, 0) + 1
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def as_json(alarms: list[Alarm]) -> dict:
    """The `alarms` field of a run's `--json`: how many, by severity, and each."""
    return {"count": len(alarms), "by_severity": counts(alarms),
            "list": [a.to_dict() for a in alarms]}


def summary_line(run_id: int, alarms: list[Alarm], data_dir: str | None = None) -> str:
    """`3 alarms (1 warning, 0 errors): lipon-hw alarms 7`; holds count as warnings."""
    text = count_text(alarms)
    if not alarms:
        return text
    data = f" --data {data_dir}" if data_dir else ""
    return f"{text}: lipon-hw alarms {run_id}{data}"


def count_text(alarms: list[Alarm]) -> str:
    """`3 alarms (1 warning, 0 errors)`; holds count as warnings."""
    by = counts(alarms)
    warnings = by.get("warning", 0) + by.get("hold", 0)
    return (f"{_n(len(alarms), 'alarm')} ({_n(warnings, 'warning')}, "
            f"{_n(by.get('error', 0), 'error')})")


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
