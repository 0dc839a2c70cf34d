"""The time a deposition's host was away, and what its hardware did meanwhile.

A host that dies (kill -9, a power cut of the computer) stops the engine, not the tool:
the RF supply keeps its output on (none of the station's supplies has a host watchdog,
see `engine.guard`; the guard process, or a watchdog where a supply has one, switches
it off), the shutter stays where it was, and the thickness monitor keeps integrating
the film that lands on its crystal. So when a run on instruments outside this process
is resumed:

- the run clock goes on by the wall time the host was away (`time_away`, from the wall
  clock each checkpoint stores, `wall_mark`), so the readings show the gap as it was and
  a layer's mean rate counts the time it grew in;
- a deposit whose layer was open reads the monitor before anything is switched back on
  (`account_deposit`): what the monitor counted since the last reading stored is what
  was deposited while away. That goes into the store (an alarm saying how much and over
  which interval, the monitor's reading at the instant of the resume, and the layer's
  `while_away` property), and the deposit goes on to the recipe's target from there,
  never re-depositing the remainder as if nothing had happened. A layer that reached its
  target while away is ended at once, shutter closed, over target by what it says.

Only what the monitor's driver reports is used: the same code runs on a served simulated
lab and on a real tool. A world that lives in the engine's own process rolls back to the
checkpoint instead (`session.resumption`): nothing happened there while away.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

#: a monitor reading this far below the last stored one was reset (its count restarted)
RESET_TOLERANCE_NM = 0.5
#: film counted while away below this is called none (a monitor's reading noise)
NOTHING_NM = 0.05


def wall_mark(env) -> dict:
    """Stored with each checkpoint: the wall clock now (epoch seconds: a power cut does not
    keep a monotonic clock) and the wall seconds per run second, None on a virtual clock
    (a world in this process, which has no wall time to keep)."""
    return {"t_s": time.time(), "per_run_s": getattr(env, "factor", None)}


@dataclass
class Away:
    """The host's absence on the run clock: from the last reading stored to the resume."""

    from_t_s: float
    to_t_s: float
    wall_s: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Away | None:
        return None if not data else cls(data["from_t_s"], data["to_t_s"], data["wall_s"])

    def sentence(self) -> str:
        return (f"the host was away about {self.wall_s:.0f} s of wall time (t = "
                f"{self.from_t_s:.0f} to {self.to_t_s:.0f} s)")


def time_away(cp_t_s: float, cp_state: dict, last_t_s: float) -> Away | None:
    """From the checkpoint's wall mark: the wall time since the last reading stored (at
    `last_t_s` on the run clock, at or after the checkpoint), as run seconds at the pace
    the run kept. None when the checkpoint holds no wall mark (a run in virtual time, or
    one written by an older lipon-hw)."""
    mark = cp_state.get("wall") or {}
    per_run_s = mark.get("per_run_s")
    if not per_run_s or per_run_s <= 0 or "t_s" not in mark:
        return None
    last_wall = mark["t_s"] + (last_t_s - cp_t_s) * per_run_s
    wall_s = max(0.0, time.time() - last_wall)
    return Away(last_t_s, last_t_s + wall_s / per_run_s, wall_s)


def account_deposit(ctx, p, state: dict, away: Away) -> None:
    """A deposit resumed with its layer open, before its process is restored: what the
    monitor counted while the host was away, stored; the layer ended here when that
    reached the target (see the module docstring)."""
    layer = state.get("layer")
    if not state.get("opened") or layer is None:
        return
    name = ctx.roles["thickness_monitor"]
    reads_nm = ctx.role("thickness_monitor").thickness_nm()
    before = last_value(ctx.store, ctx.run_id, layer["reading"], away.from_t_s)
    if ctx.now > away.from_t_s:  # the monitor as the resume found it, in the record
        ctx.record({layer["reading"]: reads_nm})
    offset = state.get("offset_nm", 0.0)
    if before is not None and reads_nm < before - RESET_TOLERANCE_NM:
        state["offset_nm"] = offset = offset + before - reads_nm
        ctx.alarm("warning", name, f"{away.sentence()}; {name} reads {reads_nm:.1f} nm, below "
                  f"the {before:.1f} nm it read before: its count was reset (did it lose "
                  f"power?), so what was deposited meanwhile is unknown; the layer counts on "
                  f"from {before:.1f} nm", reaction="resume")
        grown = None
    else:
        grown = None if before is None else reads_nm - before
    total = reads_nm + offset
    target = p.until_thickness_nm
    state.setdefault("away", []).append({**away.to_dict(), "grown_nm": grown})
    if grown is not None:
        of = f" of the {target:g} nm asked" if target is not None else ""
        what = (f"{name} counted {grown:.2f} nm of {layer['film']} meanwhile "
                f"({before:.2f} to {reads_nm:.2f} nm{of})" if grown >= NOTHING_NM
                else f"{name} counted no {layer['film']} meanwhile ({reads_nm:.2f} nm{of})")
        ctx.alarm("warning" if grown >= NOTHING_NM else "info", name,
                  f"{away.sentence()}; {what}", reaction="resume")
    if target is not None and total >= target:
        ctx.role("shutter").close()
        ctx.setpoints["shutter_open"] = False  # the process restored leaves it closed
        state.update(over_target_nm=total - target, ended_nm=total)
        ctx.alarm("warning", name, f"the {layer['film']} layer reached {total:.2f} nm while "
                  f"the host was away, {total - target:.2f} nm over the {target:g} nm asked: "
                  "it is ended as it stands (shutter closed)", reaction="resume")


def last_value(store, run_id: int, quantity: str, until_t_s: float) -> float | None:
    """The last value of `quantity` stored at or before `until_t_s`, if any."""
    value = None
    for t, _, v in store.readings(run_id, [quantity]):
        if t > until_t_s:
            break
        value = v
    return value
